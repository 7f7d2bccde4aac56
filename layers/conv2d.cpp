// Conv2d contract checks, output geometry, workspace sizing and backend dispatch (see conv2d.h).
#include "layers/conv2d.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "layers/conv2d_igemm.h"
#include "layers/op.h"
#include "layers/reduce.h"

namespace vt {
namespace {

// Why x and w (with p) do not make a convolution, or "" when they do.
std::string geometry_error(const Shape& x, const Shape& w, const Conv2dParams& p) {
  if (x.rank() != 4) return "x must be NHWC (rank 4)";
  if (w.rank() != 4) return "w must be (Cout, KH, KW, Cin / groups) (rank 4)";
  if (p.stride_h < 1 || p.stride_w < 1) return cat("stride ", p.stride_h, "x", p.stride_w, " must be >= 1");
  if (p.pad_h < 0 || p.pad_w < 0) return cat("padding ", p.pad_h, "x", p.pad_w, " must be >= 0");
  if (p.groups < 1) return cat("groups ", p.groups, " must be >= 1");
  if (x[3] < 1 || w[0] < 1 || w[1] < 1 || w[2] < 1) return "channel counts and kernel size must be >= 1";
  if (x[3] % p.groups != 0) return cat("Cin ", x[3], " is not divisible by groups ", p.groups);
  if (w[0] % p.groups != 0) return cat("Cout ", w[0], " is not divisible by groups ", p.groups);
  if (w[3] != x[3] / p.groups)
    return cat("w's last dim must be Cin / groups = ", x[3], " / ", p.groups, " = ", x[3] / p.groups);
  const int64_t hp = x[1] + 2 * int64_t{p.pad_h}, wp = x[2] + 2 * int64_t{p.pad_w};
  if (hp < w[1] || wp < w[2])
    return cat("kernel ", w[1], "x", w[2], " does not fit the padded input ", hp, "x", wp,
               " (output would be empty)");
  return "";
}

Shape output_shape_unchecked(const Shape& x, const Shape& w, const Conv2dParams& p) {
  return {x[0], (x[1] + 2 * int64_t{p.pad_h} - w[1]) / p.stride_h + 1,
          (x[2] + 2 * int64_t{p.pad_w} - w[2]) / p.stride_w + 1, w[0]};
}

// The checks forward and backward share: geometry, bias/db shape, workspace size (where the
// pass uses it: not the CUDA forward). Returns the expected y (and dy) shape.
Shape check_common(const char* op, const Tensor& x, const Tensor& w, const Conv2dParams& p,
                   const Tensor& workspace, bool uses_workspace) {
  const std::string why = geometry_error(x.shape(), w.shape(), p);
  op_check(why.empty(), op,
           cat(why, " (stride ", p.stride_h, "x", p.stride_w, ", pad ", p.pad_h, "x", p.pad_w, ", groups ",
               p.groups, ")"),
           {{"x", x}, {"w", w}});
  const size_t need =
      uses_workspace ? conv2d_workspace_bytes(x.shape(), w.shape(), p, x.dtype(), x.device()) : 0;
  if (need > 0) {
    op_check(workspace.raw() != nullptr && workspace.device() == x.device() && workspace.nbytes() >= need, op,
             cat("workspace must be at least ", need, " bytes on ", device_name(x.device()), ", got ",
                 workspace.nbytes()),
             {{"x", x}, {"w", w}, {"workspace", workspace}});
    op_check(reinterpret_cast<uintptr_t>(workspace.raw()) % dtype_size(x.dtype()) == 0, op,
             cat("workspace must be aligned to ", dtype_size(x.dtype()), " bytes"),
             {{"workspace", workspace}});
  }
  return output_shape_unchecked(x.shape(), w.shape(), p);
}

bool is_pointwise(const Shape& w, const Conv2dParams& p) {
  return w[1] == 1 && w[2] == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

}  // namespace

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  const std::string why = geometry_error(x, w, p);
  VT_CHECK(why.empty(), "conv2d_output_shape: ", why, "; x: ", x.str(), ", w: ", w.str());
  return output_shape_unchecked(x, w, p);
}

Conv2dDims conv2d_dims(const Shape& x, const Shape& w, const Conv2dParams& p, int64_t x_pitch,
                       int64_t y_pitch) {
  const Shape y = output_shape_unchecked(x, w, p);
  Conv2dDims d;
  d.n = x[0], d.h = x[1], d.w = x[2], d.cin = x[3];
  d.ho = y[1], d.wo = y[2], d.cout = w[0];
  d.kh = w[1], d.kw = w[2];
  d.groups = p.groups, d.cin_g = x[3] / p.groups, d.cout_g = w[0] / p.groups;
  d.stride_h = p.stride_h, d.stride_w = p.stride_w, d.pad_h = p.pad_h, d.pad_w = p.pad_w;
  d.xq = x_pitch > 0 ? x_pitch : d.cin;
  d.yq = y_pitch > 0 ? y_pitch : d.cout;
  return d;
}

size_t conv2d_workspace_bytes(const Shape& x, const Shape& w, const Conv2dParams& p, DType dt, Device dev) {
  // The CPU GEMM path needs one image's im2col matrix (Ho Wo, KH KW Cin); grouped convs run
  // as direct loops and 1x1 / stride 1 / pad 0 convs use x itself. On CUDA, the bf16
  // implicit GEMM's weight-gradient slices need their partial sums, and so does the sliced
  // bias gradient.
  const Shape y = conv2d_output_shape(x, w, p);  // checks the geometry
  if (dev == Device::kCUDA) {
    const int64_t slices = channel_sum_slices(y[0] * y[1] * y[2], y[3]);
    const size_t bias = slices > 1 ? static_cast<size_t>(slices * y[3]) * sizeof(float) : 0;
    const size_t wgrad =
        dt == DType::kBF16 && p.groups == 1 ? igemm::wgrad_workspace_bytes(conv2d_dims(x, w, p)) : 0;
    return std::max(bias, wgrad);
  }
  if (p.groups != 1 || is_pointwise(w, p)) return 0;
  return static_cast<size_t>(y[1] * y[2] * w[1] * w[2] * x[3]) * dtype_size(dt);
}

int64_t conv2d_tile_stats_tiles(const Shape& x, const Shape& w, const Conv2dParams& p, DType dt, Device dev) {
  if (dev != Device::kCUDA || !geometry_error(x, w, p).empty()) return 0;
  const Conv2dDims d = conv2d_dims(x, w, p);
#ifdef VT_WITH_CUDA
  if (!cuda::tile_stats_available(d, dt)) return 0;
  return (d.n * d.ho * d.wo + igemm::kBM - 1) / igemm::kBM;
#else
  (void)d, (void)dt;
  return 0;
#endif
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    const Tensor& workspace, Stream s, const Tensor* tile_stats) {
  const char* op = "conv2d_forward";
  if (b)
    check_types(op, {{"x", x, kChannelView}, {"w", w}, {"y", y, kChannelView}}, {{"b", *b}});
  else
    check_types(op, {{"x", x, kChannelView}, {"w", w}, {"y", y, kChannelView}}, {});
  const Shape ys = check_common(op, x, w, p, workspace, !x.is_cuda());
  op_check(y.shape() == ys, op, cat("y must have shape ", ys.str()), {{"x", x}, {"w", w}, {"y", y}});
  if (b) check_shape(op, {"b", *b}, {w.dim(0)});
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x", {{"x", x}, {"y", y}});
  if (tile_stats) {
    const int64_t tiles = conv2d_tile_stats_tiles(x.shape(), w.shape(), p, x.dtype(), x.device());
    op_check(tiles > 0, op, "tile_stats needs the CUDA tensor-core path (bf16, groups 1, sm_80+)",
             {{"x", x}, {"w", w}});
    op_check(tile_stats->device() == x.device() && tile_stats->dtype() == DType::kF32 &&
                 tile_stats->shape() == Shape{tiles, w.dim(0), 3} && tile_stats->raw() != nullptr,
             op, cat("tile_stats must be (", tiles, ", ", w.dim(0), ", 3) f32 on ", device_name(x.device())),
             {{"tile_stats", *tile_stats}});
  }
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::conv2d_forward(x, w, b, y, p, s, tile_stats));
  else
    cpu::conv2d_forward(x, w, b, y, p, workspace);
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace, Stream s) {
  const char* op = "conv2d_backward";
  check_types(op, {{"x", x, kChannelView}, {"w", w}, {"dy", dy, kChannelView}}, {});
  if (dx) {
    check_types(op, {{"x", x, kChannelView}, {"dx", *dx, kChannelView}}, {});
    op_check(dx->pitch() == x.pitch(), op, "dx must have x's pitch", {{"x", x}, {"dx", *dx}});
  }
  if (dw) check_types(op, {{"x", x, kChannelView}}, {{"dw", *dw}});
  if (db) check_types(op, {{"x", x, kChannelView}}, {{"db", *db}});
  const Shape ys = check_common(op, x, w, p, workspace, true);
  op_check(dy.shape() == ys, op, cat("dy must have shape ", ys.str()), {{"x", x}, {"w", w}, {"dy", dy}});
  if (dx) check_shape(op, {"dx", *dx}, x.shape());
  if (dw) check_shape(op, {"dw", *dw}, w.shape());
  if (db) check_shape(op, {"db", *db}, {w.dim(0)});
  if (x.is_cuda()) {
    VT_CUDA_CALL(op, cuda::conv2d_backward(x, w, dy, dx, dw, db, p, workspace, s));
  } else {
    if (dx && p.overwrite_dx) zero(*dx);  // the CPU loops accumulate
    cpu::conv2d_backward(x, w, dy, dx, dw, db, p, workspace);
  }
}

}  // namespace vt
