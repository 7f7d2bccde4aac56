// Reductions in CUDA: two passes of fixed shape and no atomics, so every result is a
// function of the input alone (bit-identical run to run, on every rank and every SM count).
//
// Pass 1 (partials_kernel): B = reduce_workspace_elems(n) blocks of kThreads (256) threads.
// Block b owns the contiguous chunk [b * chunk, min(n, (b + 1) * chunk)), chunk = ceil(n / B);
// its thread t folds the chunk's elements t, t + 256, t + 512, ... in that order (so a warp
// reads consecutive addresses), then the block folds its 256 values in a shared-memory
// pairwise tree (strides 128, 64, ..., 1) and writes one partial to workspace[b].
// Pass 2 (finish_kernel): one block; thread t folds partials t, t + 256, ... in order, the
// same tree follows, and thread 0 writes out[0]. It also runs for n = 0 (B = 0), writing the
// identity, 0, so that out is always overwritten.
//
// An Op says what is folded: the accumulator type, its identity, how an element enters, how
// two accumulators combine, and how the total becomes out[0]. Float arithmetic is fp32; the
// count is integer throughout.
#include <cstdint>
#include <limits>

#include "layers/cuda_common.cuh"
#include "layers/reduce.h"

namespace vt::cuda {
namespace {

static_assert((kThreads & (kThreads - 1)) == 0, "the shared-memory tree needs a power-of-two block");

struct SumOp {
  using Acc = float;
  using Partial = float;
  __device__ static Acc identity() { return 0.f; }
  __device__ static Acc load(float v) { return v; }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static float result(Acc a) { return a; }
};

struct SumSquaresOp {
  using Acc = float;
  using Partial = float;
  __device__ static Acc identity() { return 0.f; }
  __device__ static Acc load(float v) { return v * v; }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static float result(Acc a) { return a; }
};

struct MaxAbsOp {
  using Acc = float;
  using Partial = float;
  __device__ static Acc identity() { return 0.f; }
  __device__ static Acc load(float v) { return fabsf(v); }
  // fmaxf would drop a NaN; a diagnostic must propagate it.
  __device__ static Acc combine(Acc a, Acc b) { return (isnan(a) || a > b) ? a : b; }
  __device__ static float result(Acc a) { return a; }
};

struct CountNonfiniteOp {
  // Integers, so the count is exact; a block's count (at most chunk, checked < 2^32) is
  // stored bit-for-bit in its 4-byte workspace slot.
  using Acc = unsigned long long;
  using Partial = unsigned int;
  __device__ static Acc identity() { return 0ull; }
  __device__ static Acc load(float v) { return isfinite(v) ? 0ull : 1ull; }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static float result(Acc a) { return static_cast<float>(a); }  // rounds to nearest
};

// Folds tree[0 .. kThreads) into tree[0] in a fixed pairwise order; every thread of the
// block must call it, after writing its own tree[threadIdx.x].
template <class Op>
__device__ void fold_tree(typename Op::Acc* tree) {
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride)
      tree[threadIdx.x] = Op::combine(tree[threadIdx.x], tree[threadIdx.x + stride]);
    __syncthreads();
  }
}

// x: (n) flat; partials: (gridDim.x). Launched with blockDim.x == kThreads.
template <class Op, class T>
__global__ void partials_kernel(const T* x, int64_t n, int64_t chunk, typename Op::Partial* partials) {
  __shared__ typename Op::Acc tree[kThreads];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < n ? begin + chunk : n;
  typename Op::Acc acc = Op::identity();
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
    acc = Op::combine(acc, Op::load(to_f32(x[i])));
  tree[threadIdx.x] = acc;
  fold_tree<Op>(tree);
  if (threadIdx.x == 0) partials[blockIdx.x] = static_cast<typename Op::Partial>(tree[0]);
}

// partials: (num_partials); out: (1). One block of kThreads.
template <class Op>
__global__ void finish_kernel(const typename Op::Partial* partials, int num_partials, float* out) {
  using Acc = typename Op::Acc;
  __shared__ Acc tree[kThreads];
  Acc acc = Op::identity();
  for (int i = threadIdx.x; i < num_partials; i += kThreads)
    acc = Op::combine(acc, static_cast<Acc>(partials[i]));
  tree[threadIdx.x] = acc;
  fold_tree<Op>(tree);
  if (threadIdx.x == 0) out[0] = Op::result(tree[0]);
}

// dout: (1); dx: (n) flat.
template <class T>
__global__ void sum_backward_kernel(const float* dout, T* dx, int64_t n) {
  const float d = dout[0];
  VT_GRID_STRIDE(i, n) {
    dx[i] = from_f32<T>(to_f32(dx[i]) + d);
  }
}

// x, dx: (n) flat; dout: (1).
template <class T>
__global__ void sum_squares_backward_kernel(const T* x, const float* dout, T* dx, int64_t n) {
  const float d = dout[0];
  VT_GRID_STRIDE(i, n) {
    dx[i] = from_f32<T>(to_f32(dx[i]) + 2.f * to_f32(x[i]) * d);
  }
}

template <class Op>
void reduce(const char* op, const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  using Partial = typename Op::Partial;
  static_assert(sizeof(Partial) == sizeof(float), "a partial fills one f32 workspace slot");
  const int64_t n = x.numel();
  const int64_t blocks = reduce_workspace_elems(n, Device::kCUDA);
  // The workspace is untyped scratch: counts keep their integer bits in its f32 slots.
  Partial* partials = static_cast<Partial*>(workspace.raw());
  if (blocks > 0) {
    const int64_t chunk = (n + blocks - 1) / blocks;
    VT_CHECK(chunk <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max()), op, ": ", n,
             " elements are more than the per-block partials can count");
    dispatch(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      partials_kernel<Op, T>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream_of(s)>>>(x.data<T>(), n, chunk, partials);
    });
    VT_LAUNCH_CHECK();
  }
  finish_kernel<Op><<<1, kThreads, 0, stream_of(s)>>>(partials, static_cast<int>(blocks), out.data<float>());
  VT_LAUNCH_CHECK();
}

}  // namespace

void reduce_sum(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  reduce<SumOp>("reduce_sum", x, out, workspace, s);
}

void reduce_sum_squares(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  reduce<SumSquaresOp>("reduce_sum_squares", x, out, workspace, s);
}

void reduce_max_abs(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  reduce<MaxAbsOp>("reduce_max_abs", x, out, workspace, s);
}

void count_nonfinite(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  reduce<CountNonfiniteOp>("count_nonfinite", x, out, workspace, s);
}

void reduce_sum_backward(const Tensor& dout, const Tensor& dx, Stream s) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  dispatch("reduce_sum_backward", dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    sum_backward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(dout.data<float>(), dx.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("reduce_sum_squares_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    sum_squares_backward_kernel<T>
        <<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<T>(), dout.data<float>(), dx.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
