// Activations in CUDA: one elementwise kernel per direction in 16-byte packs
// (launch_elementwise), the kind chosen inside (a uniform branch, so it costs nothing per
// element).
#include "layers/activation.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

__device__ __forceinline__ float act_value(ActKind k, float slope, float x) {
  switch (k) {
    case ActKind::kReLU:
      return x > 0.f ? x : 0.f;
    case ActKind::kSiLU:
      return silu(x);
    case ActKind::kLeakyReLU:
      return x > 0.f ? x : slope * x;
    case ActKind::kSigmoid:
      return sigmoid_fast(x);
  }
  return x;
}

__device__ __forceinline__ float act_derivative(ActKind k, float slope, float x) {
  switch (k) {
    case ActKind::kReLU:
      return x > 0.f ? 1.f : 0.f;
    case ActKind::kSiLU:
      return silu_derivative(x);
    case ActKind::kLeakyReLU:
      return x > 0.f ? 1.f : slope;
    case ActKind::kSigmoid: {
      const float s = sigmoid_fast(x);
      return s * (1.f - s);
    }
  }
  return 1.f;
}

// y = f(x) and dx += dy f'(x), in 16-byte packs (launch_elementwise).
template <class T>
struct Forward {
  ActKind k;
  float slope;
  const T* x;
  T* y;
  template <int V>
  __device__ void apply(int64_t i) const {
    const Pack<T, V> a = load_pack<V>(x + i);
    Pack<T, V> o;
#pragma unroll
    for (int j = 0; j < V; ++j) o.v[j] = from_f32<T>(act_value(k, slope, to_f32(a.v[j])));
    store_pack(y + i, o);
  }
};

template <class T>
struct Backward {
  ActKind k;
  float slope;
  const T* x;
  const T* dy;
  T* dx;
  template <int V>
  __device__ void apply(int64_t i) const {
    const Pack<T, V> a = load_pack<V>(x + i), g = load_pack<V>(dy + i);
    Pack<T, V> o = load_pack<V>(dx + i);
#pragma unroll
    for (int j = 0; j < V; ++j)
      o.v[j] = from_f32<T>(to_f32(o.v[j]) + to_f32(g.v[j]) * act_derivative(k, slope, to_f32(a.v[j])));
    store_pack(dx + i, o);
  }
};

}  // namespace

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("activation_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_elementwise<T>(Forward<T>{act.kind, act.negative_slope, x.data<T>(), y.data<T>()}, n,
                          {x.raw(), y.raw()}, stream_of(s));
  });
  VT_LAUNCH_CHECK();
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx,
                         Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("activation_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_elementwise<T>(Backward<T>{act.kind, act.negative_slope, x.data<T>(), dy.data<T>(), dx.data<T>()},
                          n, {x.raw(), dy.raw(), dx.raw()}, stream_of(s));
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
