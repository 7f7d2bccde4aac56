// The fused updates on the CPU: plain loops in the storage type, the reference for the CUDA
// kernels (same formulas, same order of operations; see update.h).
#include <cmath>

#include "layers/op.h"
#include "optim/update.h"

namespace vt::cpu {
namespace {

// grad_scale * min(1, max_norm / (grad_scale * sqrt(sumsq) + 1e-6)); without a sumsq, grad_scale.
template <class T>
T grad_multiplier(const StepValuesOf<T>& k, const T* sumsq) {
  if (sumsq == nullptr) return k.grad_scale;
  const T norm = k.grad_scale * std::sqrt(*sumsq);
  const T c = k.max_norm / (norm + static_cast<T>(1e-6));
  return c >= T(1) ? k.grad_scale : k.grad_scale * c;
}

// A non-finite clipping norm skips the update (update.h).
template <class T>
bool skipped(const T* sumsq) {
  return sumsq != nullptr && !std::isfinite(*sumsq);
}

template <class T>
const T* sumsq_data(const Tensor* sumsq) {
  return sumsq ? sumsq->data<T>() : nullptr;
}

template <class T>
void sgd_loop(const StepValuesOf<T>& k, const T* sumsq, T* p, const T* grad, const uint8_t* group, T* buf,
              int64_t n) {
  if (skipped(sumsq)) return;
  const T mult = grad_multiplier(k, sumsq);
  const bool first = k.first != T(0), nesterov = k.nesterov != T(0);
  for (int64_t i = 0; i < n; ++i) {
    const int j = group[i];
    T d = grad[i] * mult;
    if (j == 0) d = d + k.weight_decay * p[i];
    const T b = first ? d : k.momentum * buf[i] + d;
    buf[i] = b;
    d = nesterov ? d + k.momentum * b : b;
    p[i] = p[i] - k.lr[j] * d;
  }
}

template <class T>
void adamw_loop(const StepValuesOf<T>& k, const T* sumsq, T* p, const T* grad, const uint8_t* group, T* m, T* v,
                int64_t n) {
  if (skipped(sumsq)) return;
  const T mult = grad_multiplier(k, sumsq);
  for (int64_t i = 0; i < n; ++i) {
    const int j = group[i];
    const T g = grad[i] * mult;
    const T mi = k.momentum * m[i] + k.one_minus_b1 * g;
    const T vi = k.beta2 * v[i] + k.one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const T denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
    const T decay_mult = j == 0 ? k.decay_mult0 : T(1);
    p[i] = p[i] * decay_mult - k.step_size[j] * (mi / denom);
  }
}

}  // namespace

void sgd_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf) {
  dispatch_cpu("sgd_step", params.dtype(), [&](auto tag) {
    using T = decltype(tag);
    sgd_loop<T>(*values.data<StepValuesOf<T>>(), sumsq_data<T>(sumsq), params.data<T>(), grads.data<T>(),
                groups.data<uint8_t>(), momentum_buf.data<T>(), params.numel());
  });
}

void adamw_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  dispatch_cpu("adamw_step", params.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adamw_loop<T>(*values.data<StepValuesOf<T>>(), sumsq_data<T>(sumsq), params.data<T>(), grads.data<T>(),
                  groups.data<uint8_t>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), params.numel());
  });
}

void ema_update(const Tensor& values, const Tensor* sumsq, const Tensor& ema, const Tensor& model) {
  dispatch_cpu("ema_update", ema.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (skipped(sumsq_data<T>(sumsq))) return;
    const StepValuesOf<T>& k = *values.data<StepValuesOf<T>>();
    T* e = ema.data<T>();
    const T* x = model.data<T>();
    for (int64_t i = 0; i < ema.numel(); ++i) e[i] = k.ema_decay * e[i] + k.one_minus_ema_decay * x[i];
  });
}

}  // namespace vt::cpu
