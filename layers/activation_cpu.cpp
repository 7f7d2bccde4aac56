// Activations on the CPU: plain loops, the reference for the CUDA kernels. In fp32 the
// sigmoid (SiLU's, 26% of a yolov8n CPU step with std::exp, bench/step_profile) is a
// branch-free form the compiler vectorizes; this file is compiled with -fno-trapping-math
// (CMakeLists.txt), without which GCC keeps its clamp as branches and the loop scalar.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "layers/activation.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

// e^x for the fp32 sigmoid, without branches: x clamped to [-87, 89], n = round(x / ln 2)
// by the 1.5 * 2^23 rounding trick (n read from the sum's low bits, so no float-to-int
// conversion, which NaN would make undefined), r = x - n ln 2 in two parts (|r| <= ln 2 / 2),
// e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative), times 2^n built in the
// exponent bits. Within 1e-7 relative of double exp on [-87, 88.3]; below, e^-87 (the
// sigmoid then rounds to 1 anyway); above, +inf from n = 128 (so the sigmoid of x < -88.3 is
// 0, as it rounds to in double); NaN gives NaN.
inline float exp_for_sigmoid(float x) {
  x = std::min(std::max(x, -87.f), 89.f);
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t tb, kb;
  std::memcpy(&tb, &t, 4);
  std::memcpy(&kb, &kRound, 4);
  const int32_t bits = (tb - kb + 127) * (int32_t(1) << 23);
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

template <class T>
T sigmoid(T x) {
  // Split by sign so that exp never overflows.
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}
// Within 5e-7 relative of the double form (tests/layers/activation_test.cpp).
template <>
float sigmoid(float x) {
  return 1.f / (1.f + exp_for_sigmoid(-x));
}

// The value and derivative of activation K at x (slope: LeakyReLU's negative slope).
template <ActKind K, class T>
T act_value(T x, T slope) {
  if constexpr (K == ActKind::kReLU) return x > 0 ? x : T(0);
  if constexpr (K == ActKind::kSiLU) return x * sigmoid(x);
  if constexpr (K == ActKind::kLeakyReLU) return x > 0 ? x : slope * x;
  if constexpr (K == ActKind::kSigmoid) return sigmoid(x);
}

template <ActKind K, class T>
T act_derivative(T x, T slope) {
  if constexpr (K == ActKind::kReLU) return x > 0 ? T(1) : T(0);
  if constexpr (K == ActKind::kSiLU) {
    const T s = sigmoid(x);
    return s * (T(1) + x * (T(1) - s));
  }
  if constexpr (K == ActKind::kLeakyReLU) return x > 0 ? T(1) : slope;
  if constexpr (K == ActKind::kSigmoid) {
    const T s = sigmoid(x);
    return s * (T(1) - s);
  }
}

// One plain loop per kind and direction (the kind a template argument, the pointers locals:
// through a lambda's captures GCC does not vectorize); elements are independent, so
// splitting them over OpenMP threads changes no result.
template <ActKind K, class T>
void forward_loop(const T* x, T* y, int64_t n, T slope) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) y[i] = act_value<K>(x[i], slope);
}

template <ActKind K, class T>
void backward_loop(const T* x, const T* dy, T* dx, int64_t n, T slope) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) dx[i] += dy[i] * act_derivative<K>(x[i], slope);
}

// fn(std::integral_constant<ActKind, kind>{}).
template <class Fn>
void with_kind(ActKind kind, Fn&& fn) {
  switch (kind) {
    case ActKind::kReLU: return fn(std::integral_constant<ActKind, ActKind::kReLU>{});
    case ActKind::kSiLU: return fn(std::integral_constant<ActKind, ActKind::kSiLU>{});
    case ActKind::kLeakyReLU: return fn(std::integral_constant<ActKind, ActKind::kLeakyReLU>{});
    case ActKind::kSigmoid: return fn(std::integral_constant<ActKind, ActKind::kSigmoid>{});
  }
}

}  // namespace

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y) {
  dispatch_cpu("activation_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_kind(act.kind, [&](auto kind) {
      forward_loop<decltype(kind)::value, T>(x.data<T>(), y.data<T>(), x.numel(), T(act.negative_slope));
    });
  });
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx) {
  dispatch_cpu("activation_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_kind(act.kind, [&](auto kind) {
      backward_loop<decltype(kind)::value, T>(x.data<T>(), dy.data<T>(), dx.data<T>(), x.numel(),
                                              T(act.negative_slope));
    });
  });
}

}  // namespace vt::cpu
