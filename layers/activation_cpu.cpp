// Activations on the CPU: plain loops, the reference for the CUDA kernels.
#include <cmath>

#include "layers/activation.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

template <class T>
T sigmoid(T x) {
  // Split by sign so that exp never overflows.
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T>
T act_value(const Activation& a, T x) {
  switch (a.kind) {
    case ActKind::kReLU: return x > 0 ? x : T(0);
    case ActKind::kSiLU: return x * sigmoid(x);
    case ActKind::kLeakyReLU: return x > 0 ? x : T(a.negative_slope) * x;
    case ActKind::kSigmoid: return sigmoid(x);
  }
  return x;
}

template <class T>
T act_derivative(const Activation& a, T x) {
  switch (a.kind) {
    case ActKind::kReLU: return x > 0 ? T(1) : T(0);
    case ActKind::kSiLU: {
      const T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case ActKind::kLeakyReLU: return x > 0 ? T(1) : T(a.negative_slope);
    case ActKind::kSigmoid: {
      const T s = sigmoid(x);
      return s * (T(1) - s);
    }
  }
  return T(1);
}

}  // namespace

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y) {
  dispatch_cpu("activation_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) yp[i] = act_value(act, xp[i]);
  });
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx) {
  dispatch_cpu("activation_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) dxp[i] += gp[i] * act_derivative(act, xp[i]);
  });
}

}  // namespace vt::cpu
