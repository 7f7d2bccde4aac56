// Helpers shared by the CUDA kernels: storage-type conversion, launch geometry, the
// f32/bf16 dispatch, and the post-launch check. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "layers/check.h"
#include "layers/tensor.h"

namespace vt::cuda {

using bf16 = __nv_bfloat16;

inline cudaStream_t stream_of(Stream s) { return static_cast<cudaStream_t>(s.handle); }

// Loads and stores in fp32 whatever the storage type; all arithmetic is fp32.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements; capped, since the loop covers the rest.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

#define VT_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Calls fn(T{}) with T = float or bf16 for the CUDA activation storage types.
template <class Fn>
void dispatch(const char* op, DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kF32: fn(float{}); return;
    case DType::kBF16: fn(bf16{}); return;
    default: VT_CHECK(false, op, ": storage type ", dtype_name(dt), " is not supported on CUDA");
  }
}

// Launch errors surface here, at the op that made them, not at the next sync.
#define VT_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

}  // namespace vt::cuda
