// Helpers shared by the CUDA kernels: storage-type conversion, the sigmoid family, launch
// geometry, vectorized elementwise launches, the f32/bf16 dispatch, and the post-launch check. Included by
// .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "layers/check.h"
#include "layers/tensor.h"

namespace vt::cuda {

using bf16 = __nv_bfloat16;

inline cudaStream_t stream_of(Stream s) {
  return static_cast<cudaStream_t>(s.handle);
}

// Loads and stores in fp32 whatever the storage type; all arithmetic is fp32.
__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(bf16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Sigmoid, SiLU and SiLU's derivative in fp32: the activation kernels and batch norm's fused
// SiLU use the same formulas, so fused and separate ops agree to the rounding of u.
// __expf and __fdividef: relative errors of a few ulp, far below bf16's and the training
// noise, in a handful of instructions (an IEEE division is a call with a slow path). For
// x < -88, 1 + e^-x overflows to inf and the quotient is 0, as the limit.
__device__ __forceinline__ float sigmoid_fast(float x) {
  return __fdividef(1.f, 1.f + __expf(-x));
}
__device__ __forceinline__ float silu(float x) {
  return x * sigmoid_fast(x);
}
__device__ __forceinline__ float silu_derivative(float x) {
  const float s = sigmoid_fast(x);
  return s * (1.f + x * (1.f - s));
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements; capped, since the loop covers the rest.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

#define VT_GRID_STRIDE(i, n)                                                             \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Elementwise kernels in 16-byte packs (8 bf16 or 4 f32 per load and store), the
// memory-bound ops' access pattern. An op is a functor with
//   template <int V> __device__ void apply(int64_t i) const   // elements [i, i + V)
// that reads and writes its buffers with load_pack / store_pack. launch_elementwise runs it
// with V = 16 / sizeof(T) when every buffer is 16-byte aligned and the caller allows packs
// (the n % V tail with V = 1), else element by element. Each element is handled by one thread, so outputs may
// alias inputs.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <int V, class T>
__device__ __forceinline__ Pack<std::remove_const_t<T>, V> load_pack(T* p) {
  return *reinterpret_cast<const Pack<std::remove_const_t<T>, V>*>(p);
}
template <int V, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

template <int V, class Op>
__global__ void elementwise_kernel(Op op, int64_t n) {
  const int64_t packs = n / V;
  VT_GRID_STRIDE(p, packs) {
    op.template apply<V>(p * V);
  }
  if (V > 1 && blockIdx.x == 0 && threadIdx.x < n - packs * V) op.template apply<1>(packs * V + threadIdx.x);
}

template <class T, class Op>
void launch_elementwise(const Op& op, int64_t n, std::initializer_list<const void*> buffers, cudaStream_t st,
                        bool packs_allowed = true) {
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  bool aligned = packs_allowed;
  for (const void* b : buffers) aligned = aligned && reinterpret_cast<uintptr_t>(b) % 16 == 0;
  if (aligned)
    elementwise_kernel<V><<<grid_for((n + V - 1) / V), kThreads, 0, st>>>(op, n);
  else
    elementwise_kernel<1><<<grid_for(n), kThreads, 0, st>>>(op, n);
}

// Calls fn(T{}) with T = float or bf16 for the CUDA activation storage types.
template <class Fn>
void dispatch(const char* op, DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kF32:
      fn(float{});
      return;
    case DType::kBF16:
      fn(bf16{});
      return;
    default:
      VT_CHECK(false, op, ": storage type ", dtype_name(dt), " is not supported on CUDA");
  }
}

// Launch errors surface here, at the op that made them, not at the next sync.
#define VT_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

}  // namespace vt::cuda
