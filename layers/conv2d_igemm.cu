// Implicit-GEMM convolution on tensor cores (bf16 in, fp32 accumulate) for the three conv
// products; the problems, tile geometry and loads are in conv2d_igemm.h. One kernel
// template serves all three:
//   grid (M tiles, N tiles, slices of K); C tile 128 x 64 over 256 threads = 8 warps, or
//   128 x 32 over 4 warps when N <= 32 (conv2d_igemm.h: Tile);
//   per K step of 32: every thread loads its vectors of A and B (8 bf16 each) into
//   registers while the warps multiply the previous step's tiles from shared memory
//   (two shared buffers, one __syncthreads per step), each warp 2 x 2 WMMA 16x16x16 MMAs
//   per 16 of K;
//   epilogue: the fp32 accumulators staged through shared memory (reusing the operand
//   buffers), then written row by row, coalesced along N, through the problem's store
//   (bias add, dx accumulate, or the weight-gradient slice's partial); for a forward with
//   statistics, also each column's (count, mean, M2) over the tile's stored values.
// Deterministic: fixed order everywhere, no atomics. Needs sm_80+ (bf16 WMMA); the
// dispatcher (conv2d.cu) falls back to the direct kernels elsewhere.
#include <mma.h>

#include <type_traits>

#include "layers/conv2d_igemm.cuh"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

using namespace vt::igemm;

// At most 128 registers a thread (ptxas -v), so two wide or four narrow blocks share an SM.
template <class P, class TS>
__global__ void __launch_bounds__(TS::kThreads, 512 / TS::kThreads) igemm_kernel(P p, int k_chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int kBM = TS::kBM, kBN = TS::kBN, kThreads = TS::kThreads, kLdC = TS::kLdC;
  constexpr int kASlots = TS::kASlots, kBSlots = TS::kBSlots;
  using ATile = OperandTile<P::kAK, kBM>;
  using BTile = OperandTile<P::kBK, kBN>;
  constexpr int kOperandBytes = 2 * (ATile::kElems + BTile::kElems) * int(sizeof(bf16));
  constexpr int kCBytes = kBM * kLdC * int(sizeof(float));
  __shared__ __align__(128) unsigned char smem[kOperandBytes > kCBytes ? kOperandBytes : kCBytes];
  // Shared buffers: A0, A1, B0, B1. Addressed by arithmetic on `buf`, not through an array of
  // pointers, which a run-time index would put in local memory.
  bf16* const a_base = reinterpret_cast<bf16*>(smem);
  bf16* const b_base = a_base + 2 * ATile::kElems;
  auto a_buf = [&](int buf) { return a_base + buf * ATile::kElems; };
  auto b_buf = [&](int buf) { return b_base + buf * BTile::kElems; };

  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN, slice = blockIdx.z;
  const int k_begin = slice * k_chunk, k_end = min(p.K, k_begin + k_chunk);
  const int steps = (k_end - k_begin + kBK - 1) / kBK;  // <= 0 for an empty slice: its partial is 0
  const int t = threadIdx.x, warp = t / 32, wm = warp / TS::kWarpsN, wn = warp % TS::kWarpsN;

  // This thread's vectors: tile coordinates (fixed) and registers for the next K step.
  // Every loop over the slots is unrolled, so these arrays stay in registers.
  int a_mn[kASlots], a_k[kASlots], b_mn[kBSlots], b_k[kBSlots];
#pragma unroll
  for (int s = 0; s < kASlots; ++s) ATile::slot(t + s * kThreads, a_mn[s], a_k[s]);
#pragma unroll
  for (int s = 0; s < kBSlots; ++s) BTile::slot(t + s * kThreads, b_mn[s], b_k[s]);
  Vec8<bf16> ra[kASlots], rb[kBSlots];
  auto a_fast = [&](int m, int k, Vec8<bf16>& v) { return p.a_fast(m, k, v); };
  auto a_elem = [&](int m, int k) { return p.a(m, k); };
  auto b_fast = [&](int n, int k, Vec8<bf16>& v) { return p.b_fast(n, k, v); };
  auto b_elem = [&](int n, int k) { return p.b(k, n); };
  auto load = [&](int k0) {
#pragma unroll
    for (int s = 0; s < kASlots; ++s) ra[s] = load8<P::kAK, bf16>(m0 + a_mn[s], k0 + a_k[s], a_fast, a_elem);
#pragma unroll
    for (int s = 0; s < kBSlots; ++s) rb[s] = load8<P::kBK, bf16>(n0 + b_mn[s], k0 + b_k[s], b_fast, b_elem);
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int s = 0; s < kASlots; ++s)
      *reinterpret_cast<Vec8<bf16>*>(a_buf(buf) + ATile::index(a_mn[s], a_k[s])) = ra[s];
#pragma unroll
    for (int s = 0; s < kBSlots; ++s)
      *reinterpret_cast<Vec8<bf16>*>(b_buf(buf) + BTile::index(b_mn[s], b_k[s])) = rb[s];
  };

  using ALayout = std::conditional_t<P::kAK, wmma::row_major, wmma::col_major>;
  using BLayout = std::conditional_t<P::kBK, wmma::col_major, wmma::row_major>;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  load(k_begin);
  stash(0);
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < steps) load(k_begin + (step + 1) * kBK);  // in flight during the MMAs
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, ALayout> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> fb[2];
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], a_buf(buf) + ATile::index(wm * 32 + i * 16, kk), ATile::kLd);
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(fb[j], b_buf(buf) + BTile::index(wn * 32 + j * 16, kk), BTile::kLd);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    if (step + 1 < steps) stash(buf ^ 1);
    __syncthreads();
  }

  // Epilogue: accumulators -> shared (row-major, kLdC) -> the problem's store.
  float* c = reinterpret_cast<float*>(smem);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(c + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc[i][j], kLdC,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = t; e < kBM * kBN; e += kThreads) {
    const int r = e / kBN, col = e % kBN, m = m0 + r, n = n0 + col;
    if (m < p.M && n < p.N) p.store(m, n, slice, c[r * kLdC + col]);
  }
  // The tile's column statistics (ConvFwd with stats): kThreads / kBN row groups per column,
  // each Welford over its rows of the stored values, combined in group order.
  if constexpr (P::kColumnStats) {
    if (p.stats != nullptr) {
      constexpr int kGroups = kThreads / kBN;
      __shared__ MeanM2 part[kGroups][kBN];
      const int col = t % kBN, grp = t / kBN, n = n0 + col;
      MeanM2 acc{0.f, 0.f, 0.f};
      if (n < p.N)
        for (int r = grp; r < kBM && m0 + r < p.M; r += kGroups) acc.add(p.stored(n, c[r * kLdC + col]));
      part[grp][col] = acc;
      __syncthreads();
      if (grp == 0 && n < p.N) {
        MeanM2 total = part[0][col];
        for (int k = 1; k < kGroups; ++k) total = combine(total, part[k][col]);
        p.stats[int64_t(blockIdx.x) * p.N + n] = total;
      }
    }
  }
#endif
}

template <class P>
__global__ void reduce_kernel(P p) {
  VT_GRID_STRIDE(i, int64_t(p.M) * p.N) {
    p.reduce(i);
  }
}

template <class P, class TS>
void launch_tile(const P& p, int slices, int k_chunk, cudaStream_t st) {
  const dim3 grid((p.M + TS::kBM - 1) / TS::kBM, (p.N + TS::kBN - 1) / TS::kBN, slices);
  VT_CHECK(grid.y <= 65535, "conv2d (implicit GEMM): ", p.N, " columns exceed the grid");
  igemm_kernel<P, TS><<<grid, TS::kThreads, 0, st>>>(p, k_chunk);
  VT_LAUNCH_CHECK();
}

// The narrow tile for N <= 32 (16- and 32-channel products), the wide one otherwise; or the
// tile of width `tile_width` (32 or 64) when it is given.
template <class P>
void launch(const P& p, int slices, int k_chunk, cudaStream_t st, int tile_width = 0) {
  VT_CHECK(tile_width == 0 || tile_width == NarrowTile::kBN || tile_width == WideTile::kBN,
           "conv2d (implicit GEMM): no tile of width ", tile_width);
  if ((tile_width ? tile_width : tile_n(p.N)) == NarrowTile::kBN)
    launch_tile<P, NarrowTile>(p, slices, k_chunk, st);
  else
    launch_tile<P, WideTile>(p, slices, k_chunk, st);
}

}  // namespace

bool conv2d_igemm_available(const Conv2dDims& d) {
  static const int major = [] {
    int dev = 0, m = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return 0;
    return m;
  }();
  return major >= 8 && igemm_supported(d);
}

void conv2d_igemm_forward(const Conv2dDims& d, const bf16* x, const bf16* w, const float* b, bf16* y,
                          cudaStream_t st, int tile_width, MeanM2* stats) {
  ConvFwd<bf16> p(d, x, w, b, y);
  p.stats = stats;
  launch(p, 1, p.K, st, tile_width);
}

void conv2d_igemm_dgrad(const Conv2dDims& d, const bf16* dy, const bf16* w, bf16* dx, bool overwrite,
                        cudaStream_t st) {
  for (int phase = 0; phase < ConvDgrad<bf16>::phases(d); ++phase) {
    const ConvDgrad<bf16> p(d, dy, w, dx, phase, overwrite);
    if (p.runs()) launch(p, 1, p.K, st);
  }
}

void conv2d_igemm_wgrad(const Conv2dDims& d, const bf16* dy, const bf16* x, float* dw, float* workspace,
                        cudaStream_t st) {
  const int splits = wgrad_splits(d);
  const ConvWgrad<bf16> p(d, dy, x, dw, workspace, splits, wgrad_transposed(d));
  launch(p, splits, wgrad_chunk(d, splits), st);
  if (splits > 1) {
    reduce_kernel<<<grid_for(int64_t(p.M) * p.N), kThreads, 0, st>>>(p);
    VT_LAUNCH_CHECK();
  }
}

}  // namespace vt::cuda
