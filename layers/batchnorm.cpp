// Batch norm contract checks and backend dispatch (see batchnorm.h).
#include "layers/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "layers/op.h"
#include "layers/reduce.h"

namespace vt {
namespace {

// Every per-channel tensor is (C), C taken from the NHWC activation x.
void check_channels(const char* op, const Tensor& x, std::initializer_list<Arg> vecs) {
  const Shape c_shape{x.dim(3)};
  for (const Arg& v : vecs)
    op_check(v.t.shape() == c_shape, op, cat(v.name, " must have shape ", c_shape.str(), " (C of x)"),
             {{"x", x}, v});
}

void check_eps(const char* op, const Tensor& x, const BatchNormParams& p) {
  op_check(p.eps > 0 && std::isfinite(p.eps), op, cat("eps ", p.eps, " must be positive and finite"),
           {{"x", x}});
}

// The optional gradients of the backward passes: dx like x, dgamma and dbeta (C).
void check_grads(const char* op, const Tensor& x, const Tensor& dy, const Tensor* dx, const Tensor* dgamma,
                 const Tensor* dbeta) {
  if (dx) {
    check_types(op, {{"x", x}, {"dx", *dx}}, {});
    check_shape(op, {"dx", *dx}, x.shape());
    op_check(dx->numel() == 0 || (dx->raw() != x.raw() && dx->raw() != dy.raw()), op,
             "dx must not alias x or dy", {{"x", x}, {"dy", dy}, {"dx", *dx}});
  }
  if (dgamma) {
    check_types(op, {{"x", x}}, {{"dgamma", *dgamma}});
    check_channels(op, x, {{"dgamma", *dgamma}});
  }
  if (dbeta) {
    check_types(op, {{"x", x}}, {{"dbeta", *dbeta}});
    check_channels(op, x, {{"dbeta", *dbeta}});
  }
}

// The fused residual (BatchNormParams::residual / dresidual): y's shape, type and device,
// aliasing nothing the op reads. forward: whether the forward's r or the backward's dr.
void check_residual(const char* op, const Tensor& x, const Tensor& y, const BatchNormParams& p, bool forward,
                    const Tensor* dx) {
  const Tensor* r = forward ? p.residual : p.dresidual;
  if (!r) return;
  const char* name = forward ? "residual" : "dresidual";
  check_types(op, {{"x", x}, {name, *r, kChannelView}}, {});
  check_shape(op, {name, *r}, x.shape());
  op_check(r->numel() == 0 || (r->raw() != x.raw() && r->raw() != y.raw()), op,
           cat(name, " must not alias x or ", forward ? "y" : "dy"), {{"x", x}, {name, *r}});
  op_check(forward || dx != nullptr, op, "dresidual needs dx (its pass writes dresidual)", {{"x", x}});
}

// The workspace as the CUDA passes take it: null when absent (the single-block path);
// a given one must be large enough.
float* cuda_workspace(const char* op, const Tensor& x, const Tensor& workspace) {
  if (!x.is_cuda() || !workspace.defined() || workspace.raw() == nullptr) return nullptr;
  const size_t need = batchnorm_workspace_bytes(x.shape(), x.device());
  op_check(workspace.is_cuda() && workspace.nbytes() >= need, op,
           cat("workspace must be at least ", need, " bytes on cuda, got ", workspace.nbytes()),
           {{"x", x}, {"workspace", workspace}});
  return static_cast<float*>(workspace.raw());
}

}  // namespace

int64_t batchnorm_slices(const Shape& x) {
  return channel_sum_slices(x[0] * x[1] * x[2], x[3]);
}

size_t batchnorm_workspace_bytes(const Shape& x, Device dev) {
  if (dev != Device::kCUDA || x.rank() != 4) return 0;
  // (slices, C) partials of up to three floats (the forward's count, mean and M2; the
  // backward's two sums), then the elementwise passes' per-channel coefficients: up to five
  // (C) arrays (batchnorm.cu: Coefficients).
  return static_cast<size_t>((3 * batchnorm_slices(x) + kBatchNormCoefficients) * x[3]) * sizeof(float);
}

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p, Stream s,
                             const Tensor& workspace, const Tensor* tile_stats) {
  const char* op = "batchnorm_forward_train";
  check_types(op, {{"x", x}, {"y", y, kChannelView}},
              {{"gamma", gamma},
               {"beta", beta},
               {"running_mean", running_mean},
               {"running_var", running_var},
               {"save_mean", save_mean},
               {"save_invstd", save_invstd}});
  check_nhwc(op, {"x", x});
  check_shape(op, {"y", y}, x.shape());
  check_channels(op, x,
                 {{"gamma", gamma},
                  {"beta", beta},
                  {"running_mean", running_mean},
                  {"running_var", running_var},
                  {"save_mean", save_mean},
                  {"save_invstd", save_invstd}});
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x (backward reads x)", {{"x", x}});
  check_eps(op, x, p);
  op_check(p.momentum >= 0 && p.momentum <= 1, op, cat("momentum ", p.momentum, " must be in [0, 1]"),
           {{"x", x}});
  check_residual(op, x, y, p, true, nullptr);
  if (tile_stats) {
    op_check(x.is_cuda() && cuda_workspace(op, x, workspace) != nullptr, op,
             "tile_stats needs CUDA tensors and the workspace", {{"x", x}});
    op_check(tile_stats->device() == x.device() && tile_stats->dtype() == DType::kF32 &&
                 tile_stats->rank() == 3 && tile_stats->dim(1) == x.dim(3) && tile_stats->dim(2) == 3,
             op, cat("tile_stats must be (T, ", x.dim(3), ", 3) f32 on ", device_name(x.device())),
             {{"x", x}, {"tile_stats", *tile_stats}});
  }
  if (x.is_cuda())
    VT_CUDA_CALL(
        op, cuda::batchnorm_forward_train(x, gamma, beta, y, running_mean, running_var, save_mean,
                                          save_invstd, p, cuda_workspace(op, x, workspace), s, tile_stats));
  else
    cpu::batchnorm_forward_train(x, gamma, beta, y, running_mean, running_var, save_mean, save_invstd, p);
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p, Stream s) {
  const char* op = "batchnorm_forward_eval";
  check_types(
      op, {{"x", x}, {"y", y, kChannelView}},
      {{"gamma", gamma}, {"beta", beta}, {"running_mean", running_mean}, {"running_var", running_var}});
  check_nhwc(op, {"x", x});
  check_shape(op, {"y", y}, x.shape());
  check_channels(
      op, x,
      {{"gamma", gamma}, {"beta", beta}, {"running_mean", running_mean}, {"running_var", running_var}});
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x (backward reads x)", {{"x", x}});
  check_eps(op, x, p);
  check_residual(op, x, y, p, true, nullptr);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, y, p, s));
  else
    cpu::batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, y, p);
}

// The CPU loops accumulate: an overwritten dx or dr is zeroed first.
const Tensor* overwritten(const Tensor* dx, const BatchNormParams& p) {
  if (dx && p.overwrite_dx) zero(*dx);
  if (p.dresidual && p.overwrite_dresidual) zero(*p.dresidual);
  return dx;
}

void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, Stream s,
                        const Tensor& workspace) {
  const char* op = "batchnorm_backward";
  check_types(op, {{"x", x}, {"dy", dy, kChannelView}},
              {{"gamma", gamma}, {"beta", beta}, {"save_mean", save_mean}, {"save_invstd", save_invstd}});
  check_nhwc(op, {"x", x});
  check_shape(op, {"dy", dy}, x.shape());
  check_channels(op, x,
                 {{"gamma", gamma}, {"beta", beta}, {"save_mean", save_mean}, {"save_invstd", save_invstd}});
  check_grads(op, x, dy, dx, dgamma, dbeta);
  check_residual(op, x, dy, p, false, dx);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::batchnorm_backward(x, dy, gamma, beta, save_mean, save_invstd, dx, dgamma, dbeta,
                                              p, cuda_workspace(op, x, workspace), s));
  else
    cpu::batchnorm_backward(x, dy, gamma, beta, save_mean, save_invstd, overwritten(dx, p), dgamma, dbeta, p);
}

void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, Stream s) {
  const char* op = "batchnorm_backward_eval";
  check_types(
      op, {{"x", x}, {"dy", dy, kChannelView}},
      {{"gamma", gamma}, {"beta", beta}, {"running_mean", running_mean}, {"running_var", running_var}});
  check_nhwc(op, {"x", x});
  check_shape(op, {"dy", dy}, x.shape());
  check_channels(
      op, x,
      {{"gamma", gamma}, {"beta", beta}, {"running_mean", running_mean}, {"running_var", running_var}});
  check_grads(op, x, dy, dx, dgamma, dbeta);
  check_eps(op, x, p);
  check_residual(op, x, dy, p, false, dx);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::batchnorm_backward_eval(x, dy, gamma, beta, running_mean, running_var, dx, dgamma,
                                                   dbeta, p, s));
  else
    cpu::batchnorm_backward_eval(x, dy, gamma, beta, running_mean, running_var, overwritten(dx, p), dgamma,
                                 dbeta, p);
}

}  // namespace vt
