// Convolution as implicit GEMM: the three products of a conv (forward, input gradient,
// weight gradient) written as C (M x N) = A (M x K) B (K x N) whose A and B elements are
// gathered from the NHWC activations and OHWI weights on the fly (no im2col buffer). The
// tensor-core kernel (conv2d_igemm.cu) tiles C and streams K through shared memory; this
// header holds everything that is not tensor-core arithmetic, as __host__ __device__ code,
// so that tests/layers/conv2d_igemm_test.cpp replays the kernel's tiling, its loads, the
// warps' fragment addressing and its epilogue on the CPU (with T = float) against the
// reference convolution.
//
// The three problems (groups == 1; d = conv2d_dims; K ordered (kh, kw, channel), the
// weights' own OHWI order):
//   ConvFwd:   y  (M = N Ho Wo, N = Cout)          = x_col (M, KH KW Cin)  . w^T   (+ bias)
//   ConvDgrad: dx (M = N H W,   N = Cin)          += dy_gather (M, KH KW Cout) . w'  (K, Cin)
//              where dy_gather(m = (n, hi, wi), k = (kh, kw, co)) = dy[n, ho, wo, co] when
//              hi + pad - kh = ho stride exactly with ho in range (likewise wo), else 0;
//              run as stride_h x stride_w phase GEMMs, each over the pixels and taps that
//              meet (see ConvDgrad), so no structural zero is multiplied
//   ConvWgrad: dw (M = Cout,    N = KH KW Cin)    += dy^T (Cout, P) . x_col (P, KH KW Cin),
//              P = N Ho Wo, split over `splits` slices of P; each slice writes its partial
//              (splits, M, N) to the workspace and reduce_partials adds them into dw in slice
//              order, so the result is deterministic (no atomics). Or transposed,
//              dw^T (M = KH KW Cin, N = Cout) += x_col^T . dy, when that pads less
//              (wgrad_transposed: small Cout under the 128-row tile)
//
// Operands are loaded as vectors of 8 consecutive elements along the dimension that is
// contiguous in memory: K for "K-contiguous" operands (kAKContig / kBKContig true), M or N otherwise.
// Out-of-range elements (beyond M, N, K or the padded image) read as zero. Two ways:
//   - vector problems (a_vec and b_vec: every channel count a multiple of 8, so a vector is
//     8 channels of one pixel and lies wholly inside or wholly outside): each thread's
//     vector is a "walk" (a_walk / b_walk) that follows K a step of kBK at a time with adds
//     and compares only, no division, and gives the vector's offset or -1 for zeros; the
//     kernel copies it global -> shared asynchronously (cp.async, zero-filled for -1);
//   - the rest (the stem's 3 channels, odd counts): load8 through registers, element by
//     element where the vector does not apply, from the offsets a_offset / b_offset compute.
// The warps multiply with mma.sync m16n8k16 fed by ldmatrix (OperandTile::ldsm_a / ldsm_b
// give each lane's row address; acc_position where each accumulator lands in C).
#pragma once

#include <algorithm>
#include <cstdint>

#include "layers/conv2d.h"
#include "layers/host_device.h"
#include "layers/mean_m2.h"

namespace vt::igemm {

// Eight consecutive elements, one 16-byte load for bf16.
template <class T>
struct alignas(16) Vec8 {
  T v[8];
};

// Tile geometry shared by the kernel and its CPU replay: a BM x BN C tile per block of
// Threads / 32 warps, each warp a WM x WN region of it ((WM / 16) x (WN / 8)
// mma.m16n8k16 fragments), K in steps of 32. Shared-memory rows are padded by 8 elements
// against bank conflicts (and stay 16-byte aligned, as ldmatrix and cp.async need). The
// asynchronous loads keep kStages K steps in flight (two ahead of the one being
// multiplied); the register path two buffers.
constexpr int kBK = 32, kPad = 8, kStages = 3;
template <int BM, int BN, int Threads, int WM = 32, int WN = 32>
struct Tile {
  static constexpr int kBM = BM, kBN = BN, kThreads = Threads, kWM = WM, kWN = WN;
  static constexpr int kWarpsN = BN / WN;                    // warps across N; BM / WM down M
  static constexpr int kFragsM = WM / 16, kFragsN = WN / 8;  // a warp's m16 x n8 fragments
  static constexpr int kASlots = BM * kBK / 8 / Threads;     // vectors of A per thread and K step
  static constexpr int kBSlots = BN * kBK / 8 / Threads;     // vectors of B per thread and K step
  static constexpr int kLdC = BN + 4;                        // float staging of C for the epilogue
  static_assert((BM / WM) * (BN / WN) * 32 == Threads, "one WM x WN region per warp");
  static_assert(WM % 16 == 0 && WN % 16 == 0, "whole ldmatrix.x4 loads of A and B");
  static_assert(kASlots * Threads * 8 == BM * kBK && kBSlots * Threads * 8 == BN * kBK,
                "whole vectors per thread");
};
// 128 x 64 over 8 warps (2 and 1 vectors of A and B per thread); for N <= 32, 128 x 32 over
// 4 warps (4 and 1), so that narrow products (16 or 32 channels) do not multiply padding;
// for wide products with enough tiles, 128 x 128 over 8 warps of 64 x 32 (2 and 2 vectors):
// twice the multiplies per byte loaded of 128 x 64, one block per SM (kBigTileBlocks).
using WideTile = Tile<128, 64, 256>;
using NarrowTile = Tile<128, 32, 128>;
using BigTile = Tile<128, 128, 256, 64, 32>;
constexpr int kBM = WideTile::kBM;  // every tile's M
// The 128 x 128 tile only where it still gives this many blocks: two waves of a 132-SM GPU.
constexpr int64_t kBigTileBlocks = 264;
// The tile width for a C of `rows` x `cols`: 32 for cols <= 32; 128 for cols >= 128 where it
// pads the columns no more than 64 does and leaves kBigTileBlocks blocks; else 64. A pure function of
// the shapes (the weight gradient's slices and workspace are planned from it). Then the
// number of C tiles, and the C area those pad it to.
inline int64_t tile_n(int64_t rows, int64_t cols) {
  if (cols <= NarrowTile::kBN) return NarrowTile::kBN;
  const int64_t big = (cols + BigTile::kBN - 1) / BigTile::kBN;
  if (cols >= BigTile::kBN &&
      big * BigTile::kBN <= (cols + WideTile::kBN - 1) / WideTile::kBN * WideTile::kBN &&
      (rows + kBM - 1) / kBM * big >= kBigTileBlocks)
    return BigTile::kBN;
  return WideTile::kBN;
}
inline int64_t tile_count(int64_t rows, int64_t cols) {
  const int64_t bn = tile_n(rows, cols);
  return (rows + kBM - 1) / kBM * ((cols + bn - 1) / bn);
}
inline int64_t padded_tile_area(int64_t rows, int64_t cols) {
  return tile_count(rows, cols) * kBM * tile_n(rows, cols);
}

// One operand's tile in shared memory: MN x kBK, stored with its contiguous dimension
// innermost (rows of kBK for K-contiguous operands, of MN otherwise), rows padded by kPad.
// ldmatrix.x4 reads four 8 x 8 matrices, each from 8 rows of 8 elements (16 bytes) whose
// addresses lanes 8q .. 8q + 7 give for matrix q; lane L receives elements (L / 4, 2 (L % 4))
// and (L / 4, 2 (L % 4) + 1) of each matrix, or with .trans (used for the operands whose K is
// not contiguous) elements (2 (L % 4), L / 4) and (2 (L % 4) + 1, L / 4). ldsm_a / ldsm_b
// order the four matrices as mma.m16n8k16 wants its registers: A's a0..a3 are the 16 x 16
// fragment's (m +0, k +0), (m +8, k +0), (m +0, k +8), (m +8, k +8) quarters; B's b0, b1 of
// two 8-column fragments: (n +0, k +0), (n +0, k +8), (n +8, k +0), (n +8, k +8). With rows of
// 40, 72 or 136 elements (80, 144, 272 bytes) the 8 rows of a matrix fall in 8 different
// 16-byte bank groups: no conflicts.
template <bool KContig, int MN>
struct OperandTile {
  static constexpr int kLd = KContig ? kBK + kPad : MN + kPad;  // leading dimension (elements)
  static constexpr int kElems = KContig ? MN * kLd : kBK * kLd;
  // Offset of element (mn, k) of the tile.
  VT_HD static int index(int mn, int k) { return KContig ? mn * kLd + k : k * kLd + mn; }
  // Lane `lane`'s row address (element offset) for the A fragment at rows mn0 .. mn0 + 15,
  // k kk .. kk + 15.
  VT_HD static int ldsm_a(int lane, int mn0, int kk) {
    const int q = lane / 8, r = lane % 8;
    return KContig ? index(mn0 + r + (q & 1) * 8, kk + (q >> 1) * 8)
                   : index(mn0 + (q & 1) * 8, kk + r + (q >> 1) * 8);
  }
  // ... and for the two B fragments at columns n0 .. n0 + 15, k kk .. kk + 15.
  VT_HD static int ldsm_b(int lane, int n0, int kk) {
    const int q = lane / 8, r = lane % 8;
    return KContig ? index(n0 + r + (q >> 1) * 8, kk + (q & 1) * 8)
                   : index(n0 + (q >> 1) * 8, kk + r + (q & 1) * 8);
  }
  // Vector `v` (0 .. MN kBK / 8) of the tile: its first element (mn, k), relative to the tile.
  VT_HD static void slot(int v, int& mn, int& k) {
    if (KContig)
      mn = v / (kBK / 8), k = v % (kBK / 8) * 8;
    else
      k = v / (MN / 8), mn = v % (MN / 8) * 8;
  }
};

// Where accumulator e (0..3) of a warp's fragment (i, j) (i: its 16-row block, j: its
// 8-column block in the warp's region) lies in that region for lane `lane`
// (mma.m16n8k16's D: rows L / 4 and L / 4 + 8, columns 2 (L % 4) and + 1).
VT_HD void acc_position(int lane, int i, int j, int e, int& row, int& col) {
  row = i * 16 + lane / 4 + (e / 2) * 8;
  col = j * 8 + 2 * (lane % 4) + (e % 2);
}

// Loads 8 elements along the operand's contiguous dimension, starting at (mn, k): the
// problem's fast path when it applies, else element by element.
template <bool KContig, class T, class Fast, class Elem>
VT_HD Vec8<T> load8(int mn, int k, Fast fast, Elem elem) {
  Vec8<T> out;
  if (fast(mn, k, out)) return out;
  for (int j = 0; j < 8; ++j) out.v[j] = KContig ? elem(mn, k + j) : elem(mn + j, k);
  return out;
}

// Whether p may be read as Vec8 (16-byte aligned); element offsets are multiples of 8.
VT_HD bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

template <class T>
VT_HD Vec8<T> zeros8() {
  Vec8<T> z;
  for (int j = 0; j < 8; ++j) z.v[j] = T(0.f);
  return z;
}

// The element at offset o of p, or zero for o < 0 (padding, beyond the matrix).
template <class T>
VT_HD T at_or_zero(const T* p, int64_t o) {
  return o < 0 ? T(0.f) : p[o];
}
// The 8 elements at offset o of p (zeros for o < 0) when the vector path applies (`vec`);
// false otherwise, and load8 goes element by element.
template <class T>
VT_HD bool vec_at_or_zero(bool vec, const T* p, int64_t o, Vec8<T>& out) {
  if (!vec) return false;
  out = o < 0 ? zeros8<T>() : *reinterpret_cast<const Vec8<T>*>(p + o);
  return true;
}

// Decoded output/input pixel index m = (n, y, x) of an (N, Hh, Ww) grid.
struct Pixel {
  int n, y, x;
};
VT_HD Pixel pixel_of(int m, int hh, int ww) {
  const int hw = hh * ww, r = m % hw;
  return {m / hw, r / ww, r % ww};
}

// The sizes every problem keeps, as 32-bit ints (index arithmetic; addresses are 64-bit).
// xq, yq: elements from one pixel of x (and dx), of y (and dy), to the next (Conv2dDims::xq,
// yq: cin and cout, or the pitch of a channel view).
struct Dims {
  int n, h, w, cin, xq, ho, wo, cout, yq, kh, kw, sh, sw, ph, pw;
  explicit Dims(const Conv2dDims& d)
      : n(int(d.n)),
        h(int(d.h)),
        w(int(d.w)),
        cin(int(d.cin)),
        xq(int(d.xq)),
        ho(int(d.ho)),
        wo(int(d.wo)),
        cout(int(d.cout)),
        yq(int(d.yq)),
        kh(int(d.kh)),
        kw(int(d.kw)),
        sh(int(d.stride_h)),
        sw(int(d.stride_w)),
        ph(int(d.pad_h)),
        pw(int(d.pad_w)) {}

  // x address of im2col element (p, f): output position p = (n, ho, wo), filter index
  // f = (kh, kw, ci); -1 where the tap falls in the padding.
  VT_HD int64_t x_col(int p, int f) const {
    const Pixel o = pixel_of(p, ho, wo);
    const int ci = f % cin, t = f / cin;
    const int hi = o.y * sh - ph + t / kw, wi = o.x * sw - pw + t % kw;
    if (hi < 0 || hi >= h || wi < 0 || wi >= w) return -1;
    return ((int64_t(o.n) * h + hi) * w + wi) * xq + ci;
  }

  // Walks (vector problems, see the top): the same offsets for a vector that moves kBK
  // along K per step, by adds and compares. Each starts with one division, then next() / at().
  // 32-bit arithmetic: igemm_supported keeps every element offset under 2^31.
  //
  // FWalk: x_col(p, f) along f = (kh, kw, ci) for one output pixel p (ConvFwd's A). cin must
  // be a multiple of 8 (a vector never straddles two taps); f past the filter reads zeros.
  struct FWalk {
    int image;       // x offset of the pixel's image
    int iy0, ix0;    // the window's top-left input pixel (may be negative: padding)
    int ty, tx, ci;  // the tap and channel of f
    bool live;       // p < N Ho Wo
  };
  VT_HD FWalk f_walk(int p, int f) const {
    const Pixel o = pixel_of(p, ho, wo);
    const int t = f / cin;
    const bool live = p < n * ho * wo;
    return {live ? o.n * h * w * xq : 0, o.y * sh - ph, o.x * sw - pw, t / kw, t % kw, f % cin, live};
  }
  VT_HD void f_next(FWalk& t) const {
    t.ci += kBK;
    while (t.ci >= cin) {
      t.ci -= cin;
      if (++t.tx == kw) t.tx = 0, ++t.ty;
    }
  }
  VT_HD int64_t f_at(const FWalk& t) const {
    const int iy = t.iy0 + t.ty, ix = t.ix0 + t.tx;
    if (!t.live || t.ty >= kh || iy < 0 || iy >= h || ix < 0 || ix >= w) return -1;
    return t.image + (iy * w + ix) * xq + t.ci;
  }

  // PWalk: along the output pixels p = (n, oy, ox) for one fixed column (ConvWgrad's operands):
  // x_col(p, f) for a filter index f (x_at), or dy[p, co] (dy_at). Pixels past the batch read
  // zeros.
  struct PWalk {
    int img, oy, ox;
    int dy, dx;  // f's tap minus the padding: input pixel (oy sh + dy, ox sw + dx); 0 for dy
    int c;       // the channel
    bool live;   // the column exists
  };
  VT_HD PWalk p_walk(int p, int dy, int dx, int c, bool live) const {
    const Pixel o = pixel_of(p, ho, wo);
    return {o.n, o.y, o.x, dy, dx, c, live};
  }
  VT_HD PWalk x_walk(int p, int f) const {  // f < KH KW Cin or not live
    const int t = f / cin;
    return p_walk(p, t / kw - ph, t % kw - pw, f % cin, f < kh * kw * cin);
  }
  VT_HD void p_next(PWalk& t) const {
    t.ox += kBK;
    while (t.ox >= wo) {
      t.ox -= wo;
      if (++t.oy == ho) t.oy = 0, ++t.img;
    }
  }
  VT_HD int64_t x_at(const PWalk& t) const {
    const int iy = t.oy * sh + t.dy, ix = t.ox * sw + t.dx;
    if (!t.live || t.img >= n || iy < 0 || iy >= h || ix < 0 || ix >= w) return -1;
    return ((t.img * h + iy) * w + ix) * xq + t.c;
  }
  VT_HD int64_t dy_at(const PWalk& t) const {
    if (!t.live || t.img >= n) return -1;
    return ((t.img * ho + t.oy) * wo + t.ox) * yq + t.c;
  }
};

// A walk along a row of a row-major matrix (ConvFwd's weights: w[n, k]): offset row * K + k.
struct RowWalk {
  int off;
  int k;
  bool live;  // the row exists
};

// Shapes this path handles: groups 1 and every index within 32 bits.
inline bool igemm_supported(const Conv2dDims& d) {
  const int64_t big = int64_t{1} << 31;
  return d.groups == 1 && d.n * d.h * d.w * d.xq < big && d.n * d.ho * d.wo * d.yq < big &&
         d.n * d.ho * d.wo < big && d.cout * d.kh * d.kw * d.cin < big;
}

// Whether the weight gradient runs transposed (dw^T = x_col^T . dy: M = KH KW Cin, N = Cout):
// when that pads the C tiles less. The 128 x 64 tile over M = Cout leaves most rows idle for
// Cout = 16..64 (yolov8n: 41% of the padded tile work is useful with M = Cout everywhere,
// 54% choosing per conv); ties keep M = Cout.
inline bool wgrad_transposed(const Conv2dDims& d) {
  const int64_t co = d.cout, f = d.kh * d.kw * d.cin;
  return padded_tile_area(f, co) < padded_tile_area(co, f);
}

// Slices of P = N Ho Wo the weight gradient is split into: enough blocks (about 1024) to
// fill a large GPU, each slice at least 8 K steps long. A pure function of the shapes, so
// the workspace is sized at plan time and results do not depend on the device.
inline int wgrad_splits(const Conv2dDims& d) {
  const bool t = wgrad_transposed(d);
  const int64_t rows = t ? d.kh * d.kw * d.cin : d.cout, cols = t ? d.cout : d.kh * d.kw * d.cin;
  const int64_t tiles = tile_count(rows, cols);
  const int64_t p = d.n * d.ho * d.wo;
  const int64_t by_fill = (1024 + tiles - 1) / tiles, by_length = std::max<int64_t>(1, p / (8 * kBK));
  return static_cast<int>(std::max<int64_t>(1, std::min({by_fill, by_length, int64_t{256}})));
}
// K (= P) elements per slice: a multiple of kBK, so no K step straddles two slices.
inline int wgrad_chunk(const Conv2dDims& d, int splits) {
  const int64_t p = d.n * d.ho * d.wo, steps = (p + kBK - 1) / kBK;
  return static_cast<int>((steps + splits - 1) / splits * kBK);
}
// Bytes of the partial sums (0 when one slice adds straight into dw).
inline size_t wgrad_workspace_bytes(const Conv2dDims& d) {
  const int splits = wgrad_splits(d);
  return splits == 1 ? 0 : size_t(splits) * size_t(d.cout) * size_t(d.kh * d.kw * d.cin) * sizeof(float);
}

// Whether vectors of 8 channels of x or dx (x_vec), y or dy (y_vec) are whole and 16-byte
// aligned: the channel count, the pitch and the start all in 8s.
template <class T>
VT_HD bool x_vec(const Dims& d, const T* x) {
  return d.cin % 8 == 0 && d.xq % 8 == 0 && aligned16(x);
}
template <class T>
VT_HD bool y_vec(const Dims& d, const T* y) {
  return d.cout % 8 == 0 && d.yq % 8 == 0 && aligned16(y);
}

template <class T>
VT_HD float to_float(T v) {
  return static_cast<float>(v);
}

// y = x_col . w^T + bias. A = x_col (K-contiguous: channels), B(k, co) = w[co, k] (K-contiguous).
// With `stats`, the epilogue also writes, per tile of kBM rows and per column, the (count,
// mean, M2) of the values as stored (after the rounding to T): the batch norm that reads y
// then takes its statistics from these (ceil(M / kBM), N) partials instead of a pass over y.
template <class T>
struct ConvFwd {
  static constexpr bool kAKContig = true, kBKContig = true, kColumnStats = true;
  Dims d;
  const T* x;
  const T* w;
  const float* bias;  // may be null
  T* y;
  MeanM2* stats = nullptr;  // (ceil(M / kBM), N), or null
  int M, N, K;
  bool a_vec, b_vec;  // 8 consecutive k are 8 channels of one tap / of one filter, aligned
  bool c_vec;         // the epilogue stores 8 columns at once (store8): N % 8 == 0, y aligned
  ConvFwd(const Conv2dDims& cd, const T* x_, const T* w_, const float* b_, T* y_)
      : d(cd),
        x(x_),
        w(w_),
        bias(b_),
        y(y_),
        M(d.n * d.ho * d.wo),
        N(d.cout),
        K(d.kh * d.kw * d.cin),
        a_vec(x_vec(d, x_)),
        b_vec(K % 8 == 0 && aligned16(w_)),
        c_vec(y_vec(d, y_)) {}

  // x address of A(m, k), or -1 outside the image or the matrix.
  VT_HD int64_t a_offset(int m, int k) const { return m < M && k < K ? d.x_col(m, k) : -1; }
  VT_HD T a(int m, int k) const { return at_or_zero(x, a_offset(m, k)); }
  VT_HD bool a_fast(int m, int k, Vec8<T>& out) const {
    return vec_at_or_zero(a_vec, x, a_offset(m, k), out);
  }
  VT_HD int64_t b_offset(int k, int n) const { return n < N && k < K ? int64_t(n) * K + k : -1; }  // w[n, k]
  VT_HD T b(int k, int n) const { return at_or_zero(w, b_offset(k, n)); }
  VT_HD bool b_fast(int n, int k, Vec8<T>& out) const {
    return vec_at_or_zero(b_vec, w, b_offset(k, n), out);
  }
  // The walks (vector problems): A along x_col's filter index, B along w's rows.
  using AWalk = Dims::FWalk;
  using BWalk = RowWalk;
  VT_HD const T* a_src() const { return x; }
  VT_HD AWalk a_walk(int m, int k) const { return d.f_walk(m, k); }
  VT_HD void a_next(AWalk& t) const { d.f_next(t); }
  VT_HD int64_t a_at(const AWalk& t) const { return d.f_at(t); }
  VT_HD const T* b_src() const { return w; }
  VT_HD BWalk b_walk(int n, int k) const { return {n < N ? n * K + k : 0, k, n < N}; }
  VT_HD void b_next(BWalk& t) const { t.off += kBK, t.k += kBK; }
  VT_HD int64_t b_at(const BWalk& t) const { return t.live && t.k < K ? t.off : -1; }

  VT_HD void store(int m, int n, int /*slice*/, float v) const {
    y[int64_t(m) * d.yq + n] = T(v + (bias ? bias[n] : 0.f));
  }
  // store() of columns n .. n + 7 (c_vec), one 16-byte store.
  VT_HD void store8(int m, int n, int /*slice*/, const float* v) const {
    Vec8<T> o;
    for (int j = 0; j < 8; ++j) o.v[j] = T(v[j] + (bias ? bias[n + j] : 0.f));
    *reinterpret_cast<Vec8<T>*>(y + int64_t(m) * d.yq + n) = o;
  }
  // The value store(m, n, v) writes, as a float.
  VT_HD float stored(int n, float v) const { return to_float(T(v + (bias ? bias[n] : 0.f))); }
};

// dx += dy_gather . w' (dx = ..., overwriting) for one stride phase. An input pixel (hi, wi) is read by tap
// kh only when hi + pad_h - kh is a multiple of stride_h, i.e. kh = (hi + pad_h) mod stride_h (mod stride_h),
// so the pixels split into stride_h x stride_w phases, each with its own taps: phase (py, px) holds the
// pixels with (hi + pad_h) % stride_h == py (likewise wi) and the taps kh = py + stride_h i, kw = px +
// stride_w j. One GEMM per phase then multiplies no structural zeros (stride 1: one phase, every tap). A
// (K-contiguous: dy's channels), K ordered (i, j, co); B(k, ci) = w[co, kh, kw, ci] (N-contiguous: w's input
// channels).
template <class T>
struct ConvDgrad {
  static constexpr bool kAKContig = true, kBKContig = false, kColumnStats = false;
  Dims d;
  const T* dy;
  const T* w;
  T* dx;
  int py, px;    // the phase
  int hi0, wi0;  // its first input row and column; then every stride_h-th / stride_w-th
  int hp, wp;    // its rows and columns
  int th, tw;    // its taps along h and w
  int M, N, K;
  bool a_vec, b_vec;  // dy's / w's channels in aligned groups of 8
  bool c_vec;         // store8 applies: dx's channels in aligned groups of 8
  bool overwrite;     // dx = C instead of dx += C
  static int phases(const Conv2dDims& cd) { return int(cd.stride_h * cd.stride_w); }
  ConvDgrad(const Conv2dDims& cd, const T* dy_, const T* w_, T* dx_, int phase, bool overwrite_ = false)
      : d(cd),
        dy(dy_),
        w(w_),
        dx(dx_),
        py(phase / d.sw),
        px(phase % d.sw),
        hi0(((py - d.ph) % d.sh + d.sh) % d.sh),
        wi0(((px - d.pw) % d.sw + d.sw) % d.sw),
        hp(hi0 < d.h ? (d.h - 1 - hi0) / d.sh + 1 : 0),
        wp(wi0 < d.w ? (d.w - 1 - wi0) / d.sw + 1 : 0),
        th(py < d.kh ? (d.kh - 1 - py) / d.sh + 1 : 0),
        tw(px < d.kw ? (d.kw - 1 - px) / d.sw + 1 : 0),
        M(d.n * hp * wp),
        N(d.cin),
        K(th * tw * d.cout),
        a_vec(y_vec(d, dy_)),
        b_vec(d.cin % 8 == 0 && aligned16(w_)),
        c_vec(x_vec(d, dx_)),
        overwrite(overwrite_) {}

  // Whether the phase's GEMM runs: it has pixels, and taps reach them (K > 0) or, when it
  // overwrites, it must write their zeros (K == 0: an all-zero product).
  bool runs() const { return M > 0 && (K > 0 || overwrite); }
  // The tap (kh, kw) and output channel of column k.
  VT_HD void tap(int k, int& kh, int& kw, int& co) const {
    const int t = k / d.cout;
    co = k % d.cout, kh = py + d.sh * (t / tw), kw = px + d.sw * (t % tw);
  }
  // dx offset (without the channel) of the phase's pixel m.
  VT_HD int64_t pixel_offset(int m) const {
    const Pixel i = pixel_of(m, hp, wp);
    return ((int64_t(i.n) * d.h + hi0 + d.sh * i.y) * d.w + wi0 + d.sw * i.x) * d.xq;
  }
  // dy address of A(m, k), or -1 where the output the tap reads lies outside dy.
  VT_HD int64_t a_offset(int m, int k) const {
    if (m >= M || k >= K) return -1;
    const Pixel i = pixel_of(m, hp, wp);
    int kh, kw, co;
    tap(k, kh, kw, co);
    const int ho = (hi0 + d.sh * i.y + d.ph - kh) / d.sh,
              wo = (wi0 + d.sw * i.x + d.pw - kw) / d.sw;  // exact
    const bool inside =
        hi0 + d.sh * i.y + d.ph >= kh && wi0 + d.sw * i.x + d.pw >= kw && ho < d.ho && wo < d.wo;
    return inside ? ((int64_t(i.n) * d.ho + ho) * d.wo + wo) * d.yq + co : -1;
  }
  VT_HD T a(int m, int k) const { return at_or_zero(dy, a_offset(m, k)); }
  VT_HD bool a_fast(int m, int k, Vec8<T>& out) const {
    return vec_at_or_zero(a_vec, dy, a_offset(m, k), out);
  }
  // w address of B(k, n): w[co, kh, kw, n]; -1 beyond the matrix.
  VT_HD int64_t b_offset(int k, int n) const {
    if (n >= N || k >= K) return -1;
    int kh, kw, co;
    tap(k, kh, kw, co);
    return ((int64_t(co) * d.kh + kh) * d.kw + kw) * d.cin + n;
  }
  VT_HD T b(int k, int n) const { return at_or_zero(w, b_offset(k, n)); }
  VT_HD bool b_fast(int n, int k, Vec8<T>& out) const {
    return vec_at_or_zero(b_vec, w, b_offset(k, n), out);
  }
  // The walks (vector problems): K = (i, j, co) counted up with carries; A's output pixel
  // moves up and left one per tap step (ho = (hi + pad_h - py) / stride_h - i), B's weight row
  // follows the tap. A phase with K == 0 has no steps: its walks are never read.
  struct Taps {
    int i, j, co;
  };
  VT_HD Taps taps(int k) const {
    if (K == 0) return {0, 0, 0};
    const int t = k / d.cout;
    return {t / tw, t % tw, k % d.cout};
  }
  VT_HD void taps_next(Taps& t) const {
    t.co += kBK;
    while (t.co >= d.cout) {
      t.co -= d.cout;
      if (++t.j == tw) t.j = 0, ++t.i;
    }
  }
  struct AWalk {
    int image;     // dy offset of the pixel's image
    int oy0, ox0;  // the output pixel tap (py, px) reads from
    Taps t;
    bool live;  // m < M
  };
  struct BWalk {
    Taps t;
    int n;      // the column: an input channel
    bool live;  // n < N
  };
  VT_HD const T* a_src() const { return dy; }
  VT_HD AWalk a_walk(int m, int k) const {
    const Pixel i = pixel_of(m, hp, wp);
    return {m < M ? i.n * d.ho * d.wo * d.yq : 0, (hi0 + d.sh * i.y + d.ph - py) / d.sh,
            (wi0 + d.sw * i.x + d.pw - px) / d.sw, taps(k), m < M};
  }
  VT_HD void a_next(AWalk& w) const { taps_next(w.t); }
  VT_HD int64_t a_at(const AWalk& w) const {
    const int oy = w.oy0 - w.t.i, ox = w.ox0 - w.t.j;
    if (!w.live || w.t.i >= th || oy < 0 || oy >= d.ho || ox < 0 || ox >= d.wo) return -1;
    return w.image + (oy * d.wo + ox) * d.yq + w.t.co;
  }
  VT_HD const T* b_src() const { return w; }
  VT_HD BWalk b_walk(int n, int k) const { return {taps(k), n, n < N}; }
  VT_HD void b_next(BWalk& w) const { taps_next(w.t); }
  VT_HD int64_t b_at(const BWalk& w) const {
    if (!w.live || w.t.i >= th) return -1;
    return ((w.t.co * d.kh + py + d.sh * w.t.i) * d.kw + px + d.sw * w.t.j) * d.cin + w.n;
  }

  VT_HD void store(int m, int n, int /*slice*/, float v) const {
    T& o = dx[pixel_offset(m) + n];
    o = T(overwrite ? v : to_float(o) + v);
  }
  // store() of columns n .. n + 7 (c_vec): one 16-byte store, after one 16-byte load unless
  // it overwrites.
  VT_HD void store8(int m, int n, int /*slice*/, const float* v) const {
    Vec8<T>* o = reinterpret_cast<Vec8<T>*>(dx + pixel_offset(m) + n);
    Vec8<T> r = overwrite ? zeros8<T>() : *o;
    for (int j = 0; j < 8; ++j) r.v[j] = T(overwrite ? v[j] : to_float(r.v[j]) + v[j]);
    *o = r;
  }
};

// dw += dy^T . x_col over one slice of P: A(co, p) = dy[p, co] (M-contiguous: dy's
// channels), B(p, f = (kh, kw, ci)) = x_col (N-contiguous: x's channels). Transposed,
// dw^T += x_col^T . dy: A(f, p) = x_col (M-contiguous), B(p, co) = dy (N-contiguous); the
// same loads with the roles swapped, and the store writes dw[co, f] from C(f, co).
template <class T>
struct ConvWgrad {
  static constexpr bool kAKContig = false, kBKContig = false, kColumnStats = false;
  Dims d;
  const T* dy;
  const T* x;
  float* dw;
  float* partial;  // (splits, M, N) when splits > 1
  int splits;
  bool transposed;
  int M, N, K;
  bool a_vec, b_vec;  // A's / B's channels (dy's or x's) in aligned groups of 8
  bool c_vec;         // store8 applies: C's rows contiguous in memory (partials, or dw untransposed)
  ConvWgrad(const Conv2dDims& cd, const T* dy_, const T* x_, float* dw_, float* partial_, int splits_,
            bool transposed_)
      : d(cd),
        dy(dy_),
        x(x_),
        dw(dw_),
        partial(partial_),
        splits(splits_),
        transposed(transposed_),
        M(transposed_ ? d.kh * d.kw * d.cin : d.cout),
        N(transposed_ ? d.cout : d.kh * d.kw * d.cin),
        K(d.n * d.ho * d.wo),
        a_vec(transposed_ ? x_vec(d, x_) : y_vec(d, dy_)),
        b_vec(transposed_ ? y_vec(d, dy_) : x_vec(d, x_)),
        c_vec(N % 8 == 0 && (splits_ > 1 ? aligned16(partial_) : !transposed_ && aligned16(dw_))) {}

  // dy[p, co], or x_col (p, f) (-1 in the padding), or -1 beyond the matrix.
  VT_HD int64_t dy_offset(int p, int co) const { return p < K ? int64_t(p) * d.yq + co : -1; }
  VT_HD int64_t x_offset(int p, int f) const { return p < K ? d.x_col(p, f) : -1; }
  VT_HD const T* a_src() const { return transposed ? x : dy; }
  VT_HD const T* b_src() const { return transposed ? dy : x; }
  VT_HD int64_t a_offset(int m, int k) const {
    if (m >= M) return -1;
    return transposed ? x_offset(k, m) : dy_offset(k, m);
  }
  VT_HD T a(int m, int k) const { return at_or_zero(a_src(), a_offset(m, k)); }
  VT_HD bool a_fast(int m, int k, Vec8<T>& out) const {
    return vec_at_or_zero(a_vec, a_src(), a_offset(m, k), out);
  }
  VT_HD int64_t b_offset(int k, int n) const {
    if (n >= N) return -1;
    return transposed ? dy_offset(k, n) : x_offset(k, n);
  }
  VT_HD T b(int k, int n) const { return at_or_zero(b_src(), b_offset(k, n)); }
  VT_HD bool b_fast(int n, int k, Vec8<T>& out) const {
    return vec_at_or_zero(b_vec, b_src(), b_offset(k, n), out);
  }
  // The walks (vector problems): both operands move along P, x_col's column (a filter
  // index) or dy's (a channel) fixed.
  using AWalk = Dims::PWalk;
  using BWalk = Dims::PWalk;
  VT_HD Dims::PWalk dy_walk(int p, int co) const { return d.p_walk(p, 0, 0, co, co < d.cout); }
  VT_HD AWalk a_walk(int m, int k) const { return transposed ? d.x_walk(k, m) : dy_walk(k, m); }
  VT_HD void a_next(AWalk& t) const { d.p_next(t); }
  VT_HD int64_t a_at(const AWalk& t) const { return transposed ? d.x_at(t) : d.dy_at(t); }
  VT_HD BWalk b_walk(int n, int k) const { return transposed ? dy_walk(k, n) : d.x_walk(k, n); }
  VT_HD void b_next(BWalk& t) const { d.p_next(t); }
  VT_HD int64_t b_at(const BWalk& t) const { return transposed ? d.dy_at(t) : d.x_at(t); }

  // dw's index of C(m, n): dw is (Cout, KH KW Cin) whichever way C runs.
  VT_HD int64_t dw_index(int m, int n) const { return transposed ? int64_t(n) * M + m : int64_t(m) * N + n; }
  VT_HD void store(int m, int n, int slice, float v) const {
    if (splits == 1)
      dw[dw_index(m, n)] += v;
    else
      partial[(int64_t(slice) * M + m) * N + n] = v;
  }
  // store() of columns n .. n + 7 (c_vec): two 16-byte stores (and loads, adding into dw).
  VT_HD void store8(int m, int n, int slice, const float* v) const {
    Vec8<float>* o = reinterpret_cast<Vec8<float>*>(splits == 1 ? dw + int64_t(m) * N + n
                                                                : partial + (int64_t(slice) * M + m) * N + n);
    Vec8<float> r = splits == 1 ? *o : zeros8<float>();
    for (int j = 0; j < 8; ++j) r.v[j] += v[j];
    *o = r;
  }
  // Adds the slices' partials of C element i (< M N, row-major) into dw, in slice order.
  VT_HD void reduce(int64_t i) const {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += partial[int64_t(z) * M * N + i];
    dw[dw_index(int(i / N), int(i % N))] += s;
  }
};

}  // namespace vt::igemm
