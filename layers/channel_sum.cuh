// Per-channel column sums over the M = N*H*W positions of NHWC data, the reduction shape
// batch norm's statistics and gradients and the conv bias gradient share. Included by .cu
// files only.
//
// Layout: a block is (kChannels, kRows) threads over a group of 32 consecutive channels.
// threadIdx.x picks the channel, so a warp reads 32 adjacent values of one position
// (coalesced, channel fastest); threadIdx.y strides over the block's positions summing
// sequentially in fp32; column_sum then combines the kRows partials by a fixed shared-memory
// tree. With many positions the M range is split into S slices (channel_sum_slices in
// reduce.h, from the shape alone), one block per (channel group, slice), each writing its
// partial to a (S, C) buffer that slices_total adds up in slice order. Every sum's order
// depends on the shape alone: bit-identical run to run, no atomics.
#pragma once

#include "layers/cuda_common.cuh"
#include "layers/mean_m2.h"

namespace vt::cuda {

constexpr int kChannels = 32;  // channels per block: threadIdx.x, one warp wide
constexpr int kRows = 16;      // position strides per block: threadIdx.y, a power of two for the tree

inline dim3 channel_grid(int64_t c_count, int64_t slices = 1) {
  return dim3(static_cast<unsigned>((c_count + kChannels - 1) / kChannels), static_cast<unsigned>(slices));
}
inline dim3 channel_block() {
  return dim3(kChannels, kRows);
}

// The sum over threadIdx.y of v, for this thread's channel, returned to every thread. Every
// thread of the block must call it (it synchronises); red is the block's (kRows, kChannels)
// scratch. The tree's shape is fixed, so the order of the additions is too.
__device__ inline float column_sum(float v, float (*red)[kChannels]) {
  red[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  for (int half = kRows / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.y) < half)
      red[threadIdx.y][threadIdx.x] += red[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  const float total = red[0][threadIdx.x];
  __syncthreads();  // everyone has read red[0] before the next call overwrites it
  return total;
}

// column_sum for MeanM2 partials: the combination over threadIdx.y, to every thread; the same
// fixed tree. red: the block's (kRows, kChannels) scratch, three of it.
__device__ inline MeanM2 column_combine(MeanM2 v, MeanM2 (*red)[kChannels]) {
  red[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  for (int half = kRows / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.y) < half)
      red[threadIdx.y][threadIdx.x] =
          combine(red[threadIdx.y][threadIdx.x], red[threadIdx.y + half][threadIdx.x]);
    __syncthreads();
  }
  const MeanM2 total = red[0][threadIdx.x];
  __syncthreads();
  return total;
}

// Channel c's total of the S slice partials of part (S, C), in slice order.
__device__ __forceinline__ float slices_total(const float* part, int64_t slices, int64_t c_count, int64_t c) {
  float t = 0.f;
  for (int64_t z = 0; z < slices; ++z) t += part[z * c_count + c];
  return t;
}

}  // namespace vt::cuda
