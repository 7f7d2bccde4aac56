// Implicit-GEMM convolution on tensor cores (bf16 in, fp32 accumulate) for the three conv
// products; the problems, tile geometry, loads and fragment addressing are in
// conv2d_igemm.h. One kernel template serves all three:
//   grid (M tiles, N tiles, slices of K); C tile 128 x 64 over 256 threads = 8 warps, 128 x 32
//   over 4 warps when N <= 32, or 128 x 128 over 8 warps (conv2d_igemm.h: Tile, tile_n);
//   each warp a 32 x 32 region (64 x 32 in the 128 x 128 tile), per 16 of K one ldmatrix.x4
//   of A per 16 rows, one of B per 16 columns, and an mma.sync m16n8k16 per 16 x 8
//   fragment; shared memory dynamic (over 48 KiB for the 128 x 128 tile);
//   operands, per K step of 32:
//     Async (vector problems): each thread's vectors copied global -> shared by cp.async
//     (16 bytes, zero-filled where the walk says -1), kStages steps in flight, one
//     __syncthreads per step; the addresses come from the walks, no division in the loop;
//     registers (the rest): every thread loads its vectors into registers while the warps
//     multiply the previous step's tiles, then stores them to the other shared buffer;
//   epilogue: the fp32 accumulators staged through shared memory (reusing the operand
//   buffers), then written row by row, coalesced along N, 8 columns a thread where the
//   problem allows it (store8) or one, through the problem's store
//   (bias add, dx accumulate, or the weight-gradient slice's partial); for a forward with
//   statistics, also each column's (count, mean, M2) over the tile's stored values.
// Deterministic: fixed order everywhere, no atomics. Needs sm_80+ (bf16 mma, cp.async); the
// dispatcher (conv2d.cu) falls back to the direct kernels elsewhere.
#include <algorithm>
#include <cstdint>

#include "layers/conv2d_igemm.cuh"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

using namespace vt::igemm;

// Device code needs sm_80+. The tests' CUDA emulator (tests/cuda_emu) runs it on the CPU,
// with each PTX operation below replaced by its lane-by-lane equivalent.
#if defined(VT_CUDA_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define VT_IGEMM_DEVICE_CODE 1
#endif

#ifdef VT_IGEMM_DEVICE_CODE
#ifdef VT_CUDA_EMULATION
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return vt_emu::ptx::shared_address(p);
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const bf16* src, int64_t o) {
  vt_emu::ptx::cp_async16(dst, src + (o < 0 ? 0 : o), o < 0);
}
__device__ __forceinline__ void cp_async_commit() {
  vt_emu::ptx::cp_async_commit();
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  vt_emu::ptx::cp_async_wait(N);
}
template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  vt_emu::ptx::ldmatrix_x4(r, addr, Trans);
}
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  vt_emu::ptx::mma_16816_bf16(d, a, b0, b1);
}
#else
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// The 16 bytes at element offset o of src, global -> shared, asynchronously; zeros for o < 0
// (a walk's "reads zeros": nothing is read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const bf16* src, int64_t o) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src + (o < 0 ? 0 : o)),
               "r"(o < 0 ? 0 : 16)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
// d (16 x 8, f32) += a (16 x 16, bf16) b (16 x 8, bf16).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // VT_CUDA_EMULATION

// A warp's fragment accumulators: acc[i][j] is the m16n8 fragment at rows 16 i, columns 8 j
// of its region.
template <class TS>
using Acc = float[TS::kFragsM][TS::kFragsN][4];

// One warp's region (warp row wm, column wn) over one K step of the shared tiles at a_tile /
// b_tile (shared addresses).
template <class P, class TS>
__device__ __forceinline__ void warp_mma(uint32_t a_tile, uint32_t b_tile, int wm, int wn, int lane,
                                         Acc<TS>& acc) {
  using ATile = OperandTile<P::kAKContig, TS::kBM>;
  using BTile = OperandTile<P::kBKContig, TS::kBN>;
  constexpr int kFM = TS::kFragsM, kFN = TS::kFragsN;
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    uint32_t fa[kFM][4], fb[kFN / 2][4];
#pragma unroll
    for (int i = 0; i < kFM; ++i)
      ldmatrix_x4<!P::kAKContig>(fa[i], a_tile + 2 * ATile::ldsm_a(lane, wm * TS::kWM + i * 16, kk));
#pragma unroll
    for (int h = 0; h < kFN / 2; ++h)
      ldmatrix_x4<!P::kBKContig>(fb[h], b_tile + 2 * BTile::ldsm_b(lane, wn * TS::kWN + h * 16, kk));
#pragma unroll
    for (int i = 0; i < kFM; ++i)
#pragma unroll
      for (int j = 0; j < kFN; ++j)
        mma_16816(acc[i][j], fa[i], fb[j / 2][(j % 2) * 2], fb[j / 2][(j % 2) * 2 + 1]);
  }
}
#endif

// The kernel's shared memory: the operand buffers (kStages with the asynchronous loads, two
// through registers), reused after the loop for the C staging (and the column statistics).
template <class P, class TS, bool Async>
struct SharedLayout {
  static constexpr int kBuffers = Async ? kStages : 2;
  static constexpr int kABytes = OperandTile<P::kAKContig, TS::kBM>::kElems * 2;  // bf16
  static constexpr int kBBytes = OperandTile<P::kBKContig, TS::kBN>::kElems * 2;
  static constexpr int kGroups = TS::kThreads / TS::kBN;  // row groups of the column statistics
  static constexpr int kCBytes = TS::kBM * TS::kLdC * 4;  // fp32
  static constexpr int kStatsBytes = P::kColumnStats ? kGroups * TS::kBN * int(sizeof(MeanM2)) : 0;
  static constexpr int kBytes = std::max(kBuffers * (kABytes + kBBytes), kCBytes + kStatsBytes);
};

// Blocks an SM must hold (__launch_bounds__): two of 8 warps or four of 4 with 32 x 32 warp
// regions (at most 128 registers a thread, ptxas -v); one for the 128 x 128 tile, whose
// 64 x 32 warp regions hold twice the accumulators.
template <class TS>
constexpr int kMinBlocks = (TS::kWM * TS::kWN > 32 * 32) ? 1 : 512 / TS::kThreads;

template <class P, class TS, bool Async>
__global__ void __launch_bounds__(TS::kThreads, kMinBlocks<TS>) igemm_kernel(P p, int k_chunk) {
#ifdef VT_IGEMM_DEVICE_CODE
  constexpr int kBM = TS::kBM, kBN = TS::kBN, kThreads = TS::kThreads, kLdC = TS::kLdC;
  constexpr int kASlots = TS::kASlots, kBSlots = TS::kBSlots;
  using ATile = OperandTile<P::kAKContig, kBM>;
  using BTile = OperandTile<P::kBKContig, kBN>;
  using Layout = SharedLayout<P, TS, Async>;
  constexpr int kBuffers = Layout::kBuffers, kABytes = Layout::kABytes, kBBytes = Layout::kBBytes;
  constexpr int kGroups = Layout::kGroups;
  extern __shared__ __align__(128) unsigned char smem[];  // Layout::kBytes, dynamic
  // Buffers A0 .. A(kBuffers - 1), then the B ones, addressed by arithmetic (shared addresses).
  const uint32_t a_base = shared_address(smem), b_base = a_base + kBuffers * kABytes;

  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN, slice = blockIdx.z;
  const int k_begin = slice * k_chunk, k_end = min(p.K, k_begin + k_chunk);
  const int steps = (k_end - k_begin + kBK - 1) / kBK;  // <= 0 for an empty slice: its partial is 0
  const int t = threadIdx.x, lane = t % 32, warp = t / 32, wm = warp / TS::kWarpsN, wn = warp % TS::kWarpsN;

  // This thread's vectors: tile coordinates, fixed for the whole loop. Every loop over the
  // slots is unrolled, so the per-slot arrays stay in registers.
  int a_mn[kASlots], a_k[kASlots], b_mn[kBSlots], b_k[kBSlots];
#pragma unroll
  for (int s = 0; s < kASlots; ++s) ATile::slot(t + s * kThreads, a_mn[s], a_k[s]);
#pragma unroll
  for (int s = 0; s < kBSlots; ++s) BTile::slot(t + s * kThreads, b_mn[s], b_k[s]);

  Acc<TS> acc;
#pragma unroll
  for (int i = 0; i < TS::kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < TS::kFragsN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  if constexpr (Async) {
    typename P::AWalk wa[kASlots];
    typename P::BWalk wb[kBSlots];
#pragma unroll
    for (int s = 0; s < kASlots; ++s) wa[s] = p.a_walk(m0 + a_mn[s], k_begin + a_k[s]);
#pragma unroll
    for (int s = 0; s < kBSlots; ++s) wb[s] = p.b_walk(n0 + b_mn[s], k_begin + b_k[s]);
    // Copies the next K step into buffer `buf` and moves the walks on.
    auto issue = [&](int buf) {
#pragma unroll
      for (int s = 0; s < kASlots; ++s) {
        cp_async16(a_base + buf * kABytes + 2 * ATile::index(a_mn[s], a_k[s]), p.a_src(), p.a_at(wa[s]));
        p.a_next(wa[s]);
      }
#pragma unroll
      for (int s = 0; s < kBSlots; ++s) {
        cp_async16(b_base + buf * kBBytes + 2 * BTile::index(b_mn[s], b_k[s]), p.b_src(), p.b_at(wb[s]));
        p.b_next(wb[s]);
      }
    };
    // Group g holds K step g (empty groups past the end keep the count uniform).
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < steps) issue(s);
      cp_async_commit();
    }
    int buf = 0, next_buf = kStages - 1;
    for (int step = 0; step < steps; ++step) {
      cp_async_wait<kStages - 2>();  // this thread's copies of step `step` have landed
      __syncthreads();               // everyone's; and everyone is done with step - 1's buffer
      if (step + kStages - 1 < steps) issue(next_buf);
      cp_async_commit();
      warp_mma<P, TS>(a_base + buf * kABytes, b_base + buf * kBBytes, wm, wn, lane, acc);
      buf = buf + 1 == kStages ? 0 : buf + 1;
      next_buf = next_buf + 1 == kStages ? 0 : next_buf + 1;
    }
    cp_async_wait<0>();
  } else {
    Vec8<bf16> ra[kASlots], rb[kBSlots];
    auto a_fast = [&](int m, int k, Vec8<bf16>& v) { return p.a_fast(m, k, v); };
    auto a_elem = [&](int m, int k) { return p.a(m, k); };
    auto b_fast = [&](int n, int k, Vec8<bf16>& v) { return p.b_fast(n, k, v); };
    auto b_elem = [&](int n, int k) { return p.b(k, n); };
    auto load = [&](int k0) {
#pragma unroll
      for (int s = 0; s < kASlots; ++s)
        ra[s] = load8<P::kAKContig, bf16>(m0 + a_mn[s], k0 + a_k[s], a_fast, a_elem);
#pragma unroll
      for (int s = 0; s < kBSlots; ++s)
        rb[s] = load8<P::kBKContig, bf16>(n0 + b_mn[s], k0 + b_k[s], b_fast, b_elem);
    };
    bf16* const a_ptr = reinterpret_cast<bf16*>(smem);
    bf16* const b_ptr = a_ptr + kBuffers * ATile::kElems;
    auto stash = [&](int buf) {
#pragma unroll
      for (int s = 0; s < kASlots; ++s)
        *reinterpret_cast<Vec8<bf16>*>(a_ptr + buf * ATile::kElems + ATile::index(a_mn[s], a_k[s])) = ra[s];
#pragma unroll
      for (int s = 0; s < kBSlots; ++s)
        *reinterpret_cast<Vec8<bf16>*>(b_ptr + buf * BTile::kElems + BTile::index(b_mn[s], b_k[s])) = rb[s];
    };
    load(k_begin);
    stash(0);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
      const int buf = step & 1;
      if (step + 1 < steps) load(k_begin + (step + 1) * kBK);  // in flight during the MMAs
      warp_mma<P, TS>(a_base + buf * kABytes, b_base + buf * kBBytes, wm, wn, lane, acc);
      if (step + 1 < steps) stash(buf ^ 1);
      __syncthreads();
    }
  }
  __syncthreads();  // the operand buffers are free for the staging of C

  // Epilogue: accumulators -> shared (row-major, kLdC) -> the problem's store.
  float* c = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < TS::kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < TS::kFragsN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int row, col;
        acc_position(lane, i, j, e, row, col);
        c[(wm * TS::kWM + row) * kLdC + wn * TS::kWN + col] = acc[i][j][e];
      }
  __syncthreads();
  if (p.c_vec) {  // 8 columns a thread at a time (N % 8 == 0: all 8 or none in range)
    for (int e = t; e < kBM * kBN / 8; e += kThreads) {
      const int r = e / (kBN / 8), col = e % (kBN / 8) * 8, m = m0 + r, n = n0 + col;
      if (m < p.M && n < p.N) p.store8(m, n, slice, c + r * kLdC + col);
    }
  } else {
    for (int e = t; e < kBM * kBN; e += kThreads) {
      const int r = e / kBN, col = e % kBN, m = m0 + r, n = n0 + col;
      if (m < p.M && n < p.N) p.store(m, n, slice, c[r * kLdC + col]);
    }
  }
  // The tile's column statistics (ConvFwd with stats): kGroups row groups per column, each
  // Welford over its rows of the stored values, combined in group order.
  if constexpr (P::kColumnStats) {
    if (p.stats != nullptr) {
      MeanM2* part = reinterpret_cast<MeanM2*>(smem + kBM * kLdC * sizeof(float));  // [kGroups][kBN]
      const int col = t % kBN, grp = t / kBN, n = n0 + col;
      MeanM2 acc{0.f, 0.f, 0.f};
      if (n < p.N)
        for (int r = grp; r < kBM && m0 + r < p.M; r += kGroups) acc.add(p.stored(n, c[r * kLdC + col]));
      part[grp * kBN + col] = acc;
      __syncthreads();
      if (grp == 0 && n < p.N) {
        MeanM2 total = part[col];
        for (int k = 1; k < kGroups; ++k) total = combine(total, part[k * kBN + col]);
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

template <class P, class TS, bool Async>
void launch_kernel(const P& p, dim3 grid, int k_chunk, cudaStream_t st) {
  constexpr int bytes = SharedLayout<P, TS, Async>::kBytes;
  if constexpr (bytes > 48 * 1024) {  // above the default limit: opted into once per kernel
    static const cudaError_t set =
        cudaFuncSetAttribute(igemm_kernel<P, TS, Async>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    VT_CHECK(set == cudaSuccess, "conv2d (implicit GEMM): ", bytes,
             " bytes of shared memory refused: ", cudaGetErrorString(set));
  }
  igemm_kernel<P, TS, Async><<<grid, TS::kThreads, bytes, st>>>(p, k_chunk);
}

// The asynchronous loads where both operands come in whole vectors (vector problems), the
// register path otherwise (or when chosen).
template <class P, class TS>
void launch_tile(const P& p, int slices, int k_chunk, cudaStream_t st, bool registers) {
  const dim3 grid((p.M + TS::kBM - 1) / TS::kBM, (p.N + TS::kBN - 1) / TS::kBN, slices);
  VT_CHECK(grid.y <= 65535, "conv2d (implicit GEMM): ", p.N, " columns exceed the grid");
  if (p.a_vec && p.b_vec && !registers)
    launch_kernel<P, TS, true>(p, grid, k_chunk, st);
  else
    launch_kernel<P, TS, false>(p, grid, k_chunk, st);
  VT_LAUNCH_CHECK();
}

// The plan's tile (tile_n), or the choice's.
template <class P>
void launch(const P& p, int slices, int k_chunk, cudaStream_t st, IgemmChoice c = {}) {
  const int64_t width = c.tile_width ? c.tile_width : tile_n(p.M, p.N);
  if (width == NarrowTile::kBN)
    launch_tile<P, NarrowTile>(p, slices, k_chunk, st, c.registers);
  else if (width == WideTile::kBN)
    launch_tile<P, WideTile>(p, slices, k_chunk, st, c.registers);
  else if (width == BigTile::kBN)
    launch_tile<P, BigTile>(p, slices, k_chunk, st, c.registers);
  else
    VT_CHECK(false, "conv2d (implicit GEMM): no tile of width ", width);
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
                          cudaStream_t st, MeanM2* stats, IgemmChoice choice) {
  ConvFwd<bf16> p(d, x, w, b, y);
  p.stats = stats;
  launch(p, 1, p.K, st, choice);
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
