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

// One loop per kind, so that each is a plain vectorisable loop; elements are independent,
// so splitting them over OpenMP threads changes no result.
template <class T, class F>
void for_each_element(int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) f(i);
}

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y) {
  dispatch_cpu("activation_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const Activation a = act;
    switch (a.kind) {
      case ActKind::kReLU: for_each_element<T>(x.numel(), [=](int64_t i) { yp[i] = act_value({ActKind::kReLU}, xp[i]); }); break;
      case ActKind::kSiLU: for_each_element<T>(x.numel(), [=](int64_t i) { yp[i] = act_value({ActKind::kSiLU}, xp[i]); }); break;
      case ActKind::kLeakyReLU: for_each_element<T>(x.numel(), [=](int64_t i) { yp[i] = act_value(a, xp[i]); }); break;
      case ActKind::kSigmoid: for_each_element<T>(x.numel(), [=](int64_t i) { yp[i] = act_value({ActKind::kSigmoid}, xp[i]); }); break;
    }
  });
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx) {
  dispatch_cpu("activation_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
    const Activation a = act;
    for_each_element<T>(x.numel(), [=](int64_t i) { dxp[i] += gp[i] * act_derivative(a, xp[i]); });
  });
}

}  // namespace vt::cpu
