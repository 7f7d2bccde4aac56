// The fused updates on the CPU: plain loops in the storage type, the reference for the CUDA
// kernels (same formulas, same order of operations; see update.h).
#include <cmath>

#include "layers/op.h"
#include "optim/update.h"

namespace vt::cpu {
namespace {

// grad_scale * min(1, max_norm / (grad_scale * sqrt(sumsq) + 1e-6)); without a sumsq, grad_scale.
// Written so that a NaN sumsq gives a NaN multiplier, as torch's clamp does.
template <class T>
T grad_multiplier(const UpdateConstants& k) {
  const T scale = static_cast<T>(k.grad_scale);
  if (k.sumsq == nullptr) return scale;
  const T norm = scale * std::sqrt(*static_cast<const T*>(k.sumsq));
  const T c = static_cast<T>(k.max_norm) / (norm + static_cast<T>(1e-6));
  return c >= T(1) ? scale : scale * c;
}

template <class T>
void sgd_loop(const UpdateConstants& k, T* p, const T* grad, const uint8_t* group, T* buf, int64_t n) {
  const T mult = grad_multiplier<T>(k);
  const T lr[3] = {static_cast<T>(k.lr[0]), static_cast<T>(k.lr[1]), static_cast<T>(k.lr[2])};
  const T wd = static_cast<T>(k.weight_decay), mom = static_cast<T>(k.momentum);
  for (int64_t i = 0; i < n; ++i) {
    const int j = group[i];
    T d = grad[i] * mult;
    if (j == 0) d = d + wd * p[i];
    const T b = k.first ? d : mom * buf[i] + d;
    buf[i] = b;
    d = k.nesterov ? d + mom * b : b;
    p[i] = p[i] - lr[j] * d;
  }
}

template <class T>
void adamw_loop(const UpdateConstants& k, T* p, const T* grad, const uint8_t* group, T* m, T* v, int64_t n) {
  const T mult = grad_multiplier<T>(k);
  T decay_mult[3], step_size[3];
  for (int j = 0; j < 3; ++j) {
    decay_mult[j] = static_cast<T>(k.decay_mult[j]);
    step_size[j] = static_cast<T>(k.step_size[j]);
  }
  const T b1 = static_cast<T>(k.momentum), omb1 = static_cast<T>(k.one_minus_b1);
  const T b2 = static_cast<T>(k.beta2), omb2 = static_cast<T>(k.one_minus_b2);
  const T bc2_sqrt = static_cast<T>(k.bc2_sqrt), eps = static_cast<T>(k.eps);
  for (int64_t i = 0; i < n; ++i) {
    const int j = group[i];
    const T g = grad[i] * mult;
    const T mi = b1 * m[i] + omb1 * g;
    const T vi = b2 * v[i] + omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const T denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay_mult[j] - step_size[j] * (mi / denom);
  }
}

}  // namespace

void sgd_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf) {
  dispatch_cpu("sgd_step", params.dtype(), [&](auto tag) {
    using T = decltype(tag);
    sgd_loop<T>(k, params.data<T>(), grads.data<T>(), groups.data<uint8_t>(), momentum_buf.data<T>(),
                params.numel());
  });
}

void adamw_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  dispatch_cpu("adamw_step", params.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adamw_loop<T>(k, params.data<T>(), grads.data<T>(), groups.data<uint8_t>(), exp_avg.data<T>(),
                  exp_avg_sq.data<T>(), params.numel());
  });
}

void ema_update(const Tensor& ema, const Tensor& model, double decay) {
  dispatch_cpu("ema_update", ema.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T d = static_cast<T>(decay), omd = static_cast<T>(1 - decay);
    T* e = ema.data<T>();
    const T* x = model.data<T>();
    for (int64_t i = 0; i < ema.numel(); ++i) e[i] = d * e[i] + omd * x[i];
  });
}

}  // namespace vt::cpu
