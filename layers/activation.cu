// Activations in CUDA: one grid-stride elementwise kernel per direction, the kind chosen
// inside (a uniform branch, so it costs nothing per element).
#include "layers/activation.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

__device__ __forceinline__ float act_value(ActKind k, float slope, float x) {
  switch (k) {
    case ActKind::kReLU: return x > 0.f ? x : 0.f;
    case ActKind::kSiLU: return x * sigmoid(x);
    case ActKind::kLeakyReLU: return x > 0.f ? x : slope * x;
    case ActKind::kSigmoid: return sigmoid(x);
  }
  return x;
}

__device__ __forceinline__ float act_derivative(ActKind k, float slope, float x) {
  switch (k) {
    case ActKind::kReLU: return x > 0.f ? 1.f : 0.f;
    case ActKind::kSiLU: {
      const float s = sigmoid(x);
      return s * (1.f + x * (1.f - s));
    }
    case ActKind::kLeakyReLU: return x > 0.f ? 1.f : slope;
    case ActKind::kSigmoid: {
      const float s = sigmoid(x);
      return s * (1.f - s);
    }
  }
  return 1.f;
}

template <class T>
__global__ void forward_kernel(ActKind k, float slope, const T* x, T* y, int64_t n) {
  VT_GRID_STRIDE(i, n) { y[i] = from_f32<T>(act_value(k, slope, to_f32(x[i]))); }
}

template <class T>
__global__ void backward_kernel(ActKind k, float slope, const T* x, const T* dy, T* dx, int64_t n) {
  VT_GRID_STRIDE(i, n) {
    dx[i] = from_f32<T>(to_f32(dx[i]) + to_f32(dy[i]) * act_derivative(k, slope, to_f32(x[i])));
  }
}

}  // namespace

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("activation_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(act.kind, act.negative_slope,
                                                                   x.data<T>(), y.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx,
                         Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("activation_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(
        act.kind, act.negative_slope, x.data<T>(), dy.data<T>(), dx.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
