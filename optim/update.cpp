// Contract checks, the per-step constants, and backend dispatch of the fused updates
// (see update.h).
#include "optim/update.h"

#include <algorithm>
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
  for (const Arg& a : same)
    op_check(a.t.contiguous() && t.contiguous(), op, "flat buffers cannot be channel views", {main, a});
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
  const int64_t bad = std::find_if(g, g + groups.numel(), [](uint8_t j) { return j > 2; }) - g;
  if (bad < groups.numel())  // the message is built only then (per element it cost 0.4 us)
    op_check(false, op, cat("groups[", bad, "] = ", int(g[bad]), " is not a parameter group (0, 1 or 2)"),
             {{"groups", groups}});
}

void check_hyper(const char* op, const StepHyper& h, const GradClip& clip, Device dev, DType dt) {
  VT_CHECK(h.step >= 1, op, ": step is ", h.step, "; it counts optimizer steps from 1");
  for (int j = 0; j < 3; ++j) VT_CHECK(finite_nonneg(h.lr[j]), op, ": lr[", j, "] = ", h.lr[j]);
  VT_CHECK(finite_nonneg(h.momentum) && h.momentum < 1, op, ": momentum ", h.momentum, " is not in [0, 1)");
  VT_CHECK(finite_nonneg(h.weight_decay), op, ": weight_decay = ", h.weight_decay);
  VT_CHECK(finite_nonneg(h.beta2) && h.beta2 < 1, op, ": beta2 ", h.beta2, " is not in [0, 1)");
  VT_CHECK(std::isfinite(h.eps) && h.eps > 0, op, ": eps ", h.eps, " must be > 0");
  VT_CHECK(std::isfinite(clip.grad_scale) && clip.grad_scale > 0, op, ": grad_scale ", clip.grad_scale,
           " must be finite and > 0");
  if (!clip.grad_sumsq) return;
  VT_CHECK(std::isfinite(clip.max_norm) && clip.max_norm > 0, op, ": max_norm ", clip.max_norm, " must be > 0");
  const Tensor& ss = *clip.grad_sumsq;
  op_check(ss.device() == dev && ss.dtype() == dt && ss.shape() == Shape{1}, op,
           cat("grad_sumsq must be (1) ", dtype_name(dt), " on ", device_name(dev), ", the params' type and device"),
           {{"grad_sumsq", ss}});
  op_check(ss.raw() != nullptr, op, "grad_sumsq has no storage", {{"grad_sumsq", ss}});
}

// The values' buffer must be of the main buffer's type and device.
void check_values(const char* op, const StepValues& k, const Arg& main) {
  const Tensor& b = k.buffer();
  op_check(b.device() == main.t.device() && b.dtype() == main.t.dtype(), op,
           cat("the step values are ", dtype_name(b.dtype()), " on ", device_name(b.device()), ", not ",
               main.name, "'s type and device"),
           {main});
}

template <class T>
StepValuesOf<T> values_of(const StepHyper& h, const GradClip& clip, double ema_decay) {
  StepValuesOf<T> v{};
  const double b1 = h.momentum, b2 = h.beta2, t = static_cast<double>(h.step);
  const double bc1 = 1 - std::pow(b1, t);
  for (int j = 0; j < 3; ++j) {
    v.lr[j] = static_cast<T>(h.lr[j]);
    v.step_size[j] = static_cast<T>(h.lr[j] / bc1);
  }
  v.decay_mult0 = static_cast<T>(1 - h.lr[0] * h.weight_decay);
  v.bc2_sqrt = static_cast<T>(std::sqrt(1 - std::pow(b2, t)));
  v.momentum = static_cast<T>(b1);
  v.one_minus_b1 = static_cast<T>(1 - b1);
  v.beta2 = static_cast<T>(b2);
  v.one_minus_b2 = static_cast<T>(1 - b2);
  v.eps = static_cast<T>(h.eps);
  v.weight_decay = static_cast<T>(h.weight_decay);
  v.grad_scale = static_cast<T>(clip.grad_scale);
  v.max_norm = static_cast<T>(clip.max_norm);
  v.ema_decay = static_cast<T>(ema_decay);
  v.one_minus_ema_decay = static_cast<T>(1 - ema_decay);
  v.first = h.step == 1 ? T(1) : T(0);
  v.nesterov = h.nesterov ? T(1) : T(0);
  return v;
}

}  // namespace

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSGD: return "SGD";
    case OptimizerKind::kAdamW: return "AdamW";
  }
  return "?";
}

StepValues::StepValues(Device dev, DType dt) {
  VT_CHECK(dt == DType::kF32 || (dev == Device::kCPU && dt == DType::kF64), "StepValues: the updates are f32",
           dev == Device::kCPU ? " or f64" : "", " on ", device_name(dev), ", not ", dtype_name(dt));
  buf_ = Tensor::empty({kCount}, dt, dev);
  host_ = Tensor::empty({kCount}, dt, Device::kCPU);
}

void StepValues::set(const StepHyper& h, const GradClip& clip, double ema_decay, const char* op) {
  check_hyper(op, h, clip, buf_.device(), buf_.dtype());
  VT_CHECK(ema_decay >= 0 && ema_decay <= 1, op, ": decay ", ema_decay, " is not in [0, 1]");
  if (buf_.dtype() == DType::kF32) *host_.data<StepValuesOf<float>>() = values_of<float>(h, clip, ema_decay);
  else *host_.data<StepValuesOf<double>>() = values_of<double>(h, clip, ema_decay);
  copy(host_, buf_);
  sumsq_ = clip.grad_sumsq;
}

void sgd_step(const StepValues& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf, Stream s) {
  const char* op = "sgd_step";
  check_buffers(op, {"params", params}, {{"grads", grads}, {"momentum_buf", momentum_buf}});
  check_values(op, k, {"params", params});
  check_groups(op, params, groups);
  if (params.numel() == 0) return;
  if (params.is_cuda())
    VT_CUDA_CALL(op, cuda::sgd_step(k.buffer(), k.grad_sumsq(), params, grads, groups, momentum_buf, s));
  else cpu::sgd_step(k.buffer(), k.grad_sumsq(), params, grads, groups, momentum_buf);
}

void adamw_step(const StepValues& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s) {
  const char* op = "adamw_step";
  check_buffers(op, {"params", params}, {{"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  check_values(op, k, {"params", params});
  check_groups(op, params, groups);
  if (params.numel() == 0) return;
  if (params.is_cuda())
    VT_CUDA_CALL(op, cuda::adamw_step(k.buffer(), k.grad_sumsq(), params, grads, groups, exp_avg, exp_avg_sq, s));
  else cpu::adamw_step(k.buffer(), k.grad_sumsq(), params, grads, groups, exp_avg, exp_avg_sq);
}

void ema_update(const StepValues& k, const Tensor& ema, const Tensor& model, Stream s) {
  const char* op = "ema_update";
  check_buffers(op, {"ema", ema}, {{"model", model}});
  check_values(op, k, {"ema", ema});
  if (ema.numel() == 0) return;
  if (ema.is_cuda()) VT_CUDA_CALL(op, cuda::ema_update(k.buffer(), k.grad_sumsq(), ema, model, s));
  else cpu::ema_update(k.buffer(), k.grad_sumsq(), ema, model);
}

// The one-off forms check the buffers first, so that a bad params type is reported as such
// rather than as a step values type; on CUDA they wait for the update before their values'
// buffer is freed.
void sgd_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s) {
  check_buffers("sgd_step", {"params", params}, {{"grads", grads}, {"momentum_buf", momentum_buf}});
  StepValues k(params.device(), params.dtype());
  k.set(h, clip, 1, "sgd_step");
  sgd_step(k, params, grads, groups, momentum_buf, s);
  if (params.is_cuda()) synchronize(s);
}

void adamw_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s) {
  check_buffers("adamw_step", {"params", params}, {{"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  StepValues k(params.device(), params.dtype());
  k.set(h, clip, 1, "adamw_step");
  adamw_step(k, params, grads, groups, exp_avg, exp_avg_sq, s);
  if (params.is_cuda()) synchronize(s);
}

void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s) {
  check_buffers("ema_update", {"ema", ema}, {{"model", model}});
  StepValues k(ema.device(), ema.dtype());
  StepHyper h;
  h.step = 1;
  k.set(h, {}, decay, "ema_update");
  ema_update(k, ema, model, s);
  if (ema.is_cuda()) synchronize(s);
}

}  // namespace vt
