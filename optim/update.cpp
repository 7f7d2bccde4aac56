// Contract checks, the per-step constants, and backend dispatch of the fused updates
// (see update.h).
#include "optim/update.h"

#include <cmath>

#include "layers/op.h"

namespace vt {

namespace {

bool finite_nonneg(double x) { return std::isfinite(x) && x >= 0; }

// main (params, or the EMA buffer): f32 (or f64 on the CPU) with storage; every tensor of
// `same`: main's device, storage type and shape.
void check_buffers(const char* op, const Arg& main, std::initializer_list<Arg> same) {
  const Tensor& t = main.t;
  const Device dev = t.device();
  const DType dt = t.dtype();
  const bool type_ok = dt == DType::kF32 || (dev == Device::kCPU && dt == DType::kF64);
  op_check(type_ok, op, cat(main.name, " must be f32", dev == Device::kCPU ? " or f64" : "", " on ", device_name(dev)),
           {main});
  op_check(t.raw() != nullptr || t.numel() == 0, op, cat(main.name, " has no storage"), {main});
  for (const Arg& a : same) {
    op_check(a.t.device() == dev, op, cat(a.name, " is on another device than ", main.name), {main, a});
    op_check(a.t.dtype() == dt, op, cat(a.name, " must have the storage type of ", main.name, ", ", dtype_name(dt)),
             {main, a});
    op_check(a.t.shape() == t.shape(), op, cat(a.name, " must have the shape of ", main.name, ", ", t.shape().str()),
             {main, a});
    op_check(a.t.raw() != nullptr || a.t.numel() == 0, op, cat(a.name, " has no storage"), {a});
  }
}

void check_groups(const char* op, const Tensor& params, const Tensor& groups) {
  op_check(groups.dtype() == DType::kU8, op, "groups must be u8", {{"params", params}, {"groups", groups}});
  op_check(groups.device() == params.device(), op, "groups is on another device than params",
           {{"params", params}, {"groups", groups}});
  op_check(groups.shape() == params.shape(), op, cat("groups must have the shape of params, ", params.shape().str()),
           {{"params", params}, {"groups", groups}});
  op_check(groups.raw() != nullptr || groups.numel() == 0, op, "groups has no storage", {{"groups", groups}});
  // Only the CPU can look at the values without a host sync; a pass over n bytes is cheap
  // next to the update, and it runs before anything is written.
  if (groups.device() != Device::kCPU) return;
  const uint8_t* g = groups.data<uint8_t>();
  for (int64_t i = 0; i < groups.numel(); ++i)
    op_check(g[i] <= 2, op, cat("groups[", i, "] = ", int(g[i]), " is not a parameter group (0, 1 or 2)"),
             {{"groups", groups}});
}

void check_hyper(const char* op, const StepHyper& h, const GradClip& clip, const Tensor& params) {
  VT_CHECK(h.step >= 1, op, ": step is ", h.step, "; it counts optimizer steps from 1");
  for (int j = 0; j < 3; ++j) VT_CHECK(finite_nonneg(h.lr[j]), op, ": lr[", j, "] = ", h.lr[j]);
  VT_CHECK(finite_nonneg(h.momentum) && h.momentum < 1, op, ": momentum ", h.momentum, " is not in [0, 1)");
  VT_CHECK(finite_nonneg(h.weight_decay), op, ": weight_decay = ", h.weight_decay);
  VT_CHECK(std::isfinite(clip.grad_scale) && clip.grad_scale > 0, op, ": grad_scale ", clip.grad_scale,
           " must be finite and > 0");
  if (!clip.grad_sumsq) return;
  VT_CHECK(std::isfinite(clip.max_norm) && clip.max_norm > 0, op, ": max_norm ", clip.max_norm, " must be > 0");
  const Tensor& ss = *clip.grad_sumsq;
  op_check(ss.device() == params.device() && ss.dtype() == params.dtype() && ss.shape() == Shape{1}, op,
           "grad_sumsq must be (1) with params' device and storage type", {{"params", params}, {"grad_sumsq", ss}});
  op_check(ss.raw() != nullptr, op, "grad_sumsq has no storage", {{"grad_sumsq", ss}});
}

}  // namespace

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSGD: return "SGD";
    case OptimizerKind::kAdamW: return "AdamW";
  }
  return "?";
}

UpdateConstants update_constants(const StepHyper& h, const GradClip& clip) {
  UpdateConstants k{};
  const double b1 = h.momentum, b2 = h.beta2, t = static_cast<double>(h.step);
  const double bc1 = 1 - std::pow(b1, t);
  for (int j = 0; j < 3; ++j) {
    k.lr[j] = h.lr[j];
    k.decay_mult[j] = j == 0 ? 1 - k.lr[j] * h.weight_decay : 1.0;
    k.step_size[j] = k.lr[j] / bc1;
  }
  k.bc2_sqrt = std::sqrt(1 - std::pow(b2, t));
  k.momentum = b1;
  k.one_minus_b1 = 1 - b1;
  k.beta2 = b2;
  k.one_minus_b2 = 1 - b2;
  k.eps = h.eps;
  k.weight_decay = h.weight_decay;
  k.first = h.step == 1;
  k.nesterov = h.nesterov;
  k.grad_scale = clip.grad_scale;
  k.max_norm = clip.max_norm;
  k.sumsq = clip.grad_sumsq ? clip.grad_sumsq->raw() : nullptr;
  return k;
}

void sgd_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s) {
  const char* op = "sgd_step";
  check_buffers(op, {"params", params}, {{"grads", grads}, {"momentum_buf", momentum_buf}});
  check_hyper(op, h, clip, params);
  check_groups(op, params, groups);
  if (params.numel() == 0) return;
  const UpdateConstants k = update_constants(h, clip);
  if (params.is_cuda()) VT_CUDA_CALL(op, cuda::sgd_step(k, params, grads, groups, momentum_buf, s));
  else cpu::sgd_step(k, params, grads, groups, momentum_buf);
}

void adamw_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s) {
  const char* op = "adamw_step";
  check_buffers(op, {"params", params}, {{"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  check_hyper(op, h, clip, params);
  VT_CHECK(finite_nonneg(h.beta2) && h.beta2 < 1, op, ": beta2 ", h.beta2, " is not in [0, 1)");
  VT_CHECK(std::isfinite(h.eps) && h.eps > 0, op, ": eps ", h.eps, " must be > 0");
  check_groups(op, params, groups);
  if (params.numel() == 0) return;
  const UpdateConstants k = update_constants(h, clip);
  if (params.is_cuda()) VT_CUDA_CALL(op, cuda::adamw_step(k, params, grads, groups, exp_avg, exp_avg_sq, s));
  else cpu::adamw_step(k, params, grads, groups, exp_avg, exp_avg_sq);
}

void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s) {
  const char* op = "ema_update";
  check_buffers(op, {"ema", ema}, {{"model", model}});
  VT_CHECK(decay >= 0 && decay <= 1, op, ": decay ", decay, " is not in [0, 1]");
  if (ema.numel() == 0) return;
  if (ema.is_cuda()) VT_CUDA_CALL(op, cuda::ema_update(ema, model, decay, s));
  else cpu::ema_update(ema, model, decay);
}

}  // namespace vt
