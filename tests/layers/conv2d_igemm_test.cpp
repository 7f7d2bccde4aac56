// The implicit-GEMM convolution's tiling, loads, fragment addressing and epilogues, replayed
// on the CPU in f32 against the reference convolution. The replay does what igemm_kernel
// (conv2d_igemm.cu) does, with the same conv2d_igemm.h code: per block (M tile, N tile, K
// slice) and K step, each thread fills its vectors of the shared tiles at OperandTile::index,
// from its walks (vector problems: the kernel's asynchronous path; every walk offset is also
// checked against a_offset / b_offset) or through load8 (the register path); each warp then
// multiplies its 32 x 32 region as ldmatrix.x4 and mma.m16n8k16 would, lane by lane, from
// the row addresses ldsm_a / ldsm_b give (the instructions' fragment layouts are emulated
// below, as the PTX ISA defines them); the accumulators land at acc_position, the epilogue
// calls the problem's store (store8, 8 columns at once, where c_vec), and the weight
// gradient's slices are reduced in order. What only a GPU shows (the instructions themselves,
// cp.async, synchronisation) is in Conv2d.GpuParity.
#include "layers/conv2d_igemm.h"

#include <array>
#include <cmath>
#include <vector>

#include "layers/check.h"
#include "layers/conv2d.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using namespace igemm;

// ldmatrix.x4 over `tile`: lanes 8q .. 8q + 7 give the rows of matrix q (row_of[lane]: the
// element offset of 8 consecutive elements); lane L receives r[q] = elements (L / 4,
// 2 (L % 4) + e), e = 0, 1, of matrix q, or with .trans elements (2 (L % 4) + e, L / 4).
using Frag = std::array<std::array<std::array<float, 2>, 4>, 32>;  // [lane][register][half]
Frag ldmatrix_x4(const std::vector<float>& tile, const std::array<int, 32>& row_of, bool trans) {
  Frag out;
  for (int lane = 0; lane < 32; ++lane)
    for (int q = 0; q < 4; ++q)
      for (int e = 0; e < 2; ++e) {
        const int r = lane / 4, c = 2 * (lane % 4) + e;
        out[lane][q][e] = trans ? tile[row_of[8 * q + c] + r] : tile[row_of[8 * q + r] + c];
      }
  return out;
}

// mma.m16n8k16 (row.col): D (16 x 8) += A (16 x 16) B (16 x 8), with A in a[lane][0..3]
// (a0: row g, columns 2c + e; a1: row g + 8; a2: columns + 8; a3: both), B in registers bq,
// bq + 1 of b (b0: rows 2c + e, column g; b1: rows + 8), D in d[lane][0..3] (d0, d1: row g,
// columns 2c + e; d2, d3: row g + 8), where g = lane / 4, c = lane % 4.
void mma_16816(std::array<std::array<float, 4>, 32>& d, const Frag& a, const Frag& b, int bq) {
  float am[16][16], bm[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, c = lane % 4;
    for (int e = 0; e < 2; ++e) {
      am[g][2 * c + e] = a[lane][0][e], am[g + 8][2 * c + e] = a[lane][1][e];
      am[g][2 * c + 8 + e] = a[lane][2][e], am[g + 8][2 * c + 8 + e] = a[lane][3][e];
      bm[2 * c + e][g] = b[lane][bq][e], bm[2 * c + 8 + e][g] = b[lane][bq + 1][e];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, c = lane % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e / 2) * 8, col = 2 * c + e % 2;
      for (int k = 0; k < 16; ++k) d[lane][e] += am[row][k] * bm[k][col];
    }
  }
}

// Replays igemm_kernel for problem p with tile TS over `slices` K slices of k_chunk (a
// multiple of kBK).
template <class TS, class P>
void replay_tile(const P& p, int slices, int k_chunk) {
  constexpr int kBM = TS::kBM, kBN = TS::kBN, kThreads = TS::kThreads, kWarps = kThreads / 32;
  using ATile = OperandTile<P::kAKContig, kBM>;
  using BTile = OperandTile<P::kBKContig, kBN>;
  const bool walks = p.a_vec && p.b_vec;  // the kernel's asynchronous path
  std::vector<float> as(ATile::kElems), bs(BTile::kElems), c(kBM * TS::kLdC);
  auto a_fast = [&](int m, int k, Vec8<float>& v) { return p.a_fast(m, k, v); };
  auto a_elem = [&](int m, int k) { return p.a(m, k); };
  auto b_fast = [&](int n, int k, Vec8<float>& v) { return p.b_fast(n, k, v); };
  auto b_elem = [&](int n, int k) { return p.b(k, n); };
  // Copies the 8 elements at offset o of src (zeros for -1) to tile[at ..], as cp.async does.
  auto put = [](std::vector<float>& tile, int at, const float* src, int64_t o) {
    Vec8<float> v;
    vec_at_or_zero(true, src, o, v);
    std::copy(v.v, v.v + 8, tile.begin() + at);
  };
  int64_t walk_mismatches = 0;
  for (int m0 = 0; m0 < p.M; m0 += kBM)
    for (int n0 = 0; n0 < p.N; n0 += kBN)
      for (int z = 0; z < slices; ++z) {
        const int k_begin = z * k_chunk, k_end = std::min(p.K, k_begin + k_chunk);
        const int steps = (k_end - k_begin + kBK - 1) / kBK;
        std::vector<typename P::AWalk> wa;
        std::vector<typename P::BWalk> wb;
        for (int v = 0; v < kThreads * TS::kASlots; ++v) {
          int mn, k;
          ATile::slot(v, mn, k);
          wa.push_back(p.a_walk(m0 + mn, k_begin + k));
        }
        for (int v = 0; v < kThreads * TS::kBSlots; ++v) {
          int mn, k;
          BTile::slot(v, mn, k);
          wb.push_back(p.b_walk(n0 + mn, k_begin + k));
        }
        constexpr int kFM = TS::kFragsM, kFN = TS::kFragsN;
        std::vector<std::array<std::array<std::array<float, 4>, 32>, kFM * kFN>> acc(
            kWarps);  // [warp][i j][lane][e]
        for (auto& w : acc)
          for (auto& f : w)
            for (auto& l : f) l.fill(0.f);
        for (int step = 0; step < steps; ++step) {
          const int k0 = k_begin + step * kBK;
          // Slot s of thread t is vector t + s kThreads of the tile, as in the kernel.
          for (int v = 0; v < kThreads * TS::kASlots; ++v) {
            int mn, k;
            ATile::slot(v, mn, k);
            if (walks) {
              const int64_t o = p.a_at(wa[v]);
              walk_mismatches += o != p.a_offset(m0 + mn, k0 + k);
              put(as, ATile::index(mn, k), p.a_src(), o);
              p.a_next(wa[v]);
            } else {
              const Vec8<float> x = load8<P::kAKContig, float>(m0 + mn, k0 + k, a_fast, a_elem);
              std::copy(x.v, x.v + 8, as.begin() + ATile::index(mn, k));
            }
          }
          for (int v = 0; v < kThreads * TS::kBSlots; ++v) {
            int mn, k;
            BTile::slot(v, mn, k);
            if (walks) {
              const int64_t o = p.b_at(wb[v]);
              walk_mismatches += o != p.b_offset(k0 + k, n0 + mn);
              put(bs, BTile::index(mn, k), p.b_src(), o);
              p.b_next(wb[v]);
            } else {
              const Vec8<float> x = load8<P::kBKContig, float>(n0 + mn, k0 + k, b_fast, b_elem);
              std::copy(x.v, x.v + 8, bs.begin() + BTile::index(mn, k));
            }
          }
          // warp_mma: per 16 of K, the A fragments i, the B fragment pairs h, an MMA per (i, j).
          for (int warp = 0; warp < kWarps; ++warp) {
            const int wm = warp / TS::kWarpsN, wn = warp % TS::kWarpsN;
            for (int kk = 0; kk < kBK; kk += 16) {
              Frag fa[kFM], fb[kFN / 2];
              for (int i = 0; i < kFM; ++i) {
                std::array<int, 32> rows;
                for (int lane = 0; lane < 32; ++lane)
                  rows[lane] = ATile::ldsm_a(lane, wm * TS::kWM + i * 16, kk);
                fa[i] = ldmatrix_x4(as, rows, !P::kAKContig);
              }
              for (int h = 0; h < kFN / 2; ++h) {
                std::array<int, 32> rows;
                for (int lane = 0; lane < 32; ++lane)
                  rows[lane] = BTile::ldsm_b(lane, wn * TS::kWN + h * 16, kk);
                fb[h] = ldmatrix_x4(bs, rows, !P::kBKContig);
              }
              for (int i = 0; i < kFM; ++i)
                for (int j = 0; j < kFN; ++j)
                  mma_16816(acc[warp][i * kFN + j], fa[i], fb[j / 2], (j % 2) * 2);
            }
          }
        }
        // Epilogue: accumulators -> C staging (acc_position) -> the problem's store.
        std::fill(c.begin(), c.end(), std::nanf(""));
        for (int warp = 0; warp < kWarps; ++warp) {
          const int wm = warp / TS::kWarpsN, wn = warp % TS::kWarpsN;
          for (int i = 0; i < kFM; ++i)
            for (int j = 0; j < kFN; ++j)
              for (int lane = 0; lane < 32; ++lane)
                for (int e = 0; e < 4; ++e) {
                  int row, col;
                  acc_position(lane, i, j, e, row, col);
                  c[(wm * TS::kWM + row) * TS::kLdC + wn * TS::kWN + col] = acc[warp][i * kFN + j][lane][e];
                }
        }
        for (int r = 0; r < kBM; ++r)
          for (int col = 0; col < kBN; col += p.c_vec ? 8 : 1)
            if (m0 + r < p.M && n0 + col < p.N) {
              if (p.c_vec)
                p.store8(m0 + r, n0 + col, z, &c[r * TS::kLdC + col]);
              else
                p.store(m0 + r, n0 + col, z, c[r * TS::kLdC + col]);
            }
      }
  EXPECT_EQ(walk_mismatches, 0) << "walk offsets that differ from a_offset / b_offset";
}

// Every tile must be right for any N (tile_n picks by shape; kernel_bench forces each).
template <class P>
void replay(const P& p, int slices, int k_chunk, int width) {
  if (width == NarrowTile::kBN)
    replay_tile<NarrowTile>(p, slices, k_chunk);
  else if (width == WideTile::kBN)
    replay_tile<WideTile>(p, slices, k_chunk);
  else
    replay_tile<BigTile>(p, slices, k_chunk);
}

struct Case {
  Shape x, w;
  Conv2dParams p;
  const char* what;
  // x and dx as channels [x_off, x_off + Cin) of x_total (Tensor::channels), or 0: contiguous;
  // y and dy likewise.
  int64_t x_total = 0, x_off = 0, y_total = 0, y_off = 0;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.what;
}

class Conv2dIgemm : public ::testing::TestWithParam<Case> {};

// Forward, dx and dw (with 1, 3 and 5 K slices: 5 leaves the last slice empty) against the
// library's CPU convolution on the same f32 inputs; gradients accumulate onto random
// starting values, as the op's contract says.
TEST_P(Conv2dIgemm, ReplayMatchesReference) {
  const Case& c = GetParam();
  Shape wide =
      c.x;  // x's and dx's buffers; compared whole, so channels outside a view must keep their values
  if (c.x_total > 0) wide[3] = c.x_total;
  const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
  Shape y_wide = ys;  // y's and dy's
  if (c.y_total > 0) y_wide[3] = c.y_total;
  const Conv2dDims d = conv2d_dims(c.x, c.w, c.p, wide[3], y_wide[3]);
  ASSERT_TRUE(igemm_supported(d));
  auto view = [&](const Tensor& t) { return t.channels(c.x_off, c.x[3]); };
  auto yview = [&](const Tensor& t) { return t.channels(c.y_off, ys[3]); };
  const Tensor x = view(test::random_tensor(wide, DType::kF32, 1)),
               w = test::random_tensor(c.w, DType::kF32, 2);
  const Tensor b = test::random_tensor({c.w[0]}, DType::kF32, 3),
               dy = yview(test::random_tensor(y_wide, DType::kF32, 4));
  const Tensor y0 = test::random_tensor(y_wide, DType::kF32, 7);  // y's buffer before the forward
  const Tensor dx0 = test::random_tensor(wide, DType::kF32, 5),
               dw0 = test::random_tensor(c.w, DType::kF32, 6);
  const size_t ws_bytes = conv2d_workspace_bytes(c.x, c.w, c.p, DType::kF32, Device::kCPU);
  const Tensor ws =
      ws_bytes ? Tensor::empty({int64_t(ws_bytes / 4 + 1)}, DType::kF32, Device::kCPU) : Tensor{};

  Tensor y_ref = y0.to(Device::kCPU);
  conv2d_forward(x, w, &b, yview(y_ref), c.p, ws);
  Tensor dx_ref = dx0.to(Device::kCPU), dw_ref = dw0.to(Device::kCPU);
  const Tensor dx_ref_view = view(dx_ref);
  conv2d_backward(x, w, dy, &dx_ref_view, &dw_ref, nullptr, c.p, ws);
  // Overwriting dx: the CPU op on a dx holding garbage gives its accumulation onto zeros.
  Conv2dParams over = c.p;
  over.overwrite_dx = true;
  Tensor dx_over = dx0.to(Device::kCPU), dx_zero = dx0.to(Device::kCPU);
  const Tensor dx_over_view = view(dx_over), dx_zero_view = view(dx_zero);
  zero(dx_zero_view);
  conv2d_backward(x, w, dy, &dx_over_view, nullptr, nullptr, over, ws);
  conv2d_backward(x, w, dy, &dx_zero_view, nullptr, nullptr, c.p, ws);
  test::expect_close(dx_over, dx_zero, 0, 0, "dx overwritten by the CPU op");

  // Sums of at most 3*3*24 products of values in [-1, 1], and dw's of up to 2*13*17: f32
  // in a different order than BLAS, so 1e-4 relative with a small absolute floor.
  for (int width : {NarrowTile::kBN, WideTile::kBN, BigTile::kBN}) {
    SCOPED_TRACE(cat("128 x ", width, " tile"));
    Tensor y = y0.to(Device::kCPU);
    const ConvFwd<float> fwd(d, x.data<float>(), w.data<float>(), b.data<float>(), yview(y).data<float>());
    replay(fwd, 1, fwd.K, width);
    test::expect_close(y, y_ref, 1e-4, 1e-4, "y");

    Tensor dx = dx0.to(Device::kCPU);
    int64_t pixels = 0, pairs = 0;  // phase pixels, and their (pixel, tap) pairs
    for (int phase = 0; phase < ConvDgrad<float>::phases(d); ++phase) {
      const ConvDgrad<float> dgrad(d, dy.data<float>(), w.data<float>(), view(dx).data<float>(), phase);
      if (dgrad.runs()) replay(dgrad, 1, dgrad.K, width);
      pixels += dgrad.M;
      pairs += int64_t(dgrad.M) * (dgrad.K / d.cout);
    }
    test::expect_close(dx, dx_ref, 1e-4, 1e-4, "dx");
    // Overwriting, from dx0 as garbage: every pixel written, those no tap reaches with zeros
    // (their phase runs with K == 0).
    Tensor dxo = dx0.to(Device::kCPU);
    for (int phase = 0; phase < ConvDgrad<float>::phases(d); ++phase) {
      const ConvDgrad<float> dgrad(d, dy.data<float>(), w.data<float>(), view(dxo).data<float>(), phase,
                                   true);
      if (dgrad.runs()) replay(dgrad, 1, dgrad.K, width);
    }
    test::expect_close(dxo, dx_over, 1e-4, 1e-4, "dx overwritten");
    // The phases hold every pixel once, and exactly the (pixel, tap) pairs whose offset is a
    // multiple of the stride: no structural zero is multiplied.
    auto meeting = [](int64_t size, int64_t k, int64_t stride, int64_t pad) {
      int64_t n = 0;
      for (int64_t i = 0; i < size; ++i)
        for (int64_t t = 0; t < k; ++t) n += (i + pad - t) % stride == 0;
      return n;
    };
    EXPECT_EQ(pixels, d.n * d.h * d.w);
    EXPECT_EQ(pairs, d.n * meeting(d.h, d.kh, d.stride_h, d.pad_h) * meeting(d.w, d.kw, d.stride_w, d.pad_w));

    for (bool transposed : {false, true})
      for (int splits : {1, 3, 5}) {
        Tensor dw = dw0.to(Device::kCPU);
        std::vector<float> partial(size_t(splits) * c.w.numel(), -1e30f);  // every entry must be written
        const ConvWgrad<float> wgrad(d, dy.data<float>(), x.data<float>(), dw.data<float>(), partial.data(),
                                     splits, transposed);
        replay(wgrad, splits, wgrad_chunk(d, splits), width);
        if (splits > 1)
          for (int64_t i = 0; i < c.w.numel(); ++i) wgrad.reduce(i);
        test::expect_close(dw, dw_ref, 1e-3, 1e-4,
                           cat("dw, ", splits, " slices", transposed ? ", transposed" : "").c_str());
      }
  }
}

// Channel counts that are multiples of 8 take the 16-byte paths; 7 and 3 the scalar ones.
INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dIgemm,
    ::testing::Values(
        Case{{2, 9, 11, 16}, {24, 3, 3, 16}, {1, 1, 1, 1, 1}, "3x3 s1 p1, vector loads"},
        Case{{2, 13, 17, 7}, {5, 3, 3, 7}, {2, 2, 1, 1, 1}, "3x3 s2 p1, scalar loads"},
        Case{{2, 13, 17, 16}, {8, 3, 3, 16}, {2, 2, 1, 1, 1}, "3x3 s2 p1, vector loads"},
        Case{{3, 10, 10, 8}, {136, 1, 1, 8}, {}, "1x1, two N tiles"},
        Case{{1, 20, 21, 3}, {16, 3, 3, 3}, {2, 2, 1, 1, 1}, "the stem: Cin 3"},
        Case{{2, 7, 9, 24}, {16, 5, 3, 24}, {1, 2, 2, 0, 1}, "5x3 kernel, mixed stride"},
        Case{{2, 14, 16, 8}, {16, 5, 5, 8}, {3, 3, 2, 2, 1}, "5x5 s3 p2: 9 phases"},
        Case{{2, 12, 12, 16}, {16, 1, 1, 16}, {2, 2, 0, 0, 1}, "1x1 s2: phases no tap reaches"},
        Case{{2, 9, 11, 16}, {24, 3, 3, 16}, {1, 1, 1, 1, 1}, "x, y channel views", 48, 16, 40, 8},
        Case{{2, 10, 10, 8}, {136, 1, 1, 8}, {}, "1x1, x, y channel views", 24, 8, 144, 0},
        Case{{2, 9, 8, 16}, {8, 3, 3, 16}, {2, 2, 1, 1, 1}, "s2, x, y views", 40, 24, 24, 16},
        Case{{2, 9, 11, 16}, {24, 3, 3, 16}, {1, 1, 1, 1, 1}, "unaligned views", 42, 2, 27, 1}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::to_string(i.index); });

// The tile width: 128 x 32 for narrow products, 128 x 128 for wide ones with blocks enough
// for two waves and no more padding than 128 x 64's, 128 x 64 otherwise.
TEST(Conv2dIgemmPlan, TileWidth) {
  EXPECT_EQ(tile_n(100000, 16), 32);
  EXPECT_EQ(tile_n(100000, 32), 32);
  EXPECT_EQ(tile_n(100000, 80), 64);             // the class convs: never 128
  EXPECT_EQ(tile_n(36864, 128), 128);            // 288 row tiles
  EXPECT_EQ(tile_n(264 * 128 - 127, 128), 128);  // 264 tiles exactly
  EXPECT_EQ(tile_n(263 * 128, 128), 64);         // 263: under two waves
  EXPECT_EQ(tile_n(1024, 256), 64);              // 8 x 2 tiles
  EXPECT_EQ(tile_n(100000, 192), 64);            // 128 x 128 would pad 192 to 256
  EXPECT_EQ(tile_n(100000, 320), 64);            // 384 vs 320
  EXPECT_EQ(tile_n(100000, 384), 128);
  EXPECT_EQ(tile_count(36864, 256), 288 * 2);
  EXPECT_EQ(padded_tile_area(36864, 192), 36864 * 192);
}

// The slicing of the weight gradient: a pure function of the shapes, enough blocks for a big
// GPU on yolov8n's stem at batch 64, one slice for small problems, the workspace to match.
TEST(Conv2dIgemmPlan, WgradSlices) {
  const Conv2dDims stem = conv2d_dims({64, 640, 640, 3}, {16, 3, 3, 3}, {2, 2, 1, 1, 1});
  EXPECT_EQ(wgrad_splits(stem), 256);  // 1 tile, P = 6.5M: capped at 256 slices
  EXPECT_EQ(wgrad_chunk(stem, 256) % kBK, 0);
  EXPECT_GE(int64_t(wgrad_chunk(stem, 256)) * 256, 64 * 320 * 320);
  EXPECT_EQ(wgrad_workspace_bytes(stem), size_t(256) * 16 * 27 * 4);
  const Conv2dDims deep = conv2d_dims({64, 20, 20, 256}, {256, 3, 3, 256}, {1, 1, 1, 1, 1});
  EXPECT_EQ(wgrad_splits(deep), 15);  // 2 x 36 tiles: ceil(1024 / 72)
  const Conv2dDims small = conv2d_dims({3, 13, 17, 7}, {5, 3, 3, 7}, {2, 2, 1, 1, 1});
  EXPECT_EQ(wgrad_splits(small), 1);
  EXPECT_EQ(wgrad_workspace_bytes(small), 0u);
  EXPECT_EQ(conv2d_workspace_bytes({64, 20, 20, 256}, {256, 3, 3, 256}, {1, 1, 1, 1, 1}, DType::kBF16,
                                   Device::kCUDA),
            size_t(15) * 256 * 2304 * 4);
  // f32 runs the direct kernels: only the bias gradient's partials, 100 slices of the 25600
  // positions (8 channel groups would allow 128, but each slice keeps at least 256 positions).
  EXPECT_EQ(conv2d_workspace_bytes({64, 20, 20, 256}, {256, 3, 3, 256}, {1, 1, 1, 1, 1}, DType::kF32,
                                   Device::kCUDA),
            size_t(100) * 256 * 4);
  EXPECT_FALSE(igemm_supported(conv2d_dims({2, 8, 8, 4}, {4, 3, 3, 1}, {1, 1, 1, 1, 4})));  // grouped
}

// The weight gradient's orientation: transposed where the 128-row tile over Cout would pad
// more, with the slices planned over the tiles of that orientation.
TEST(Conv2dIgemmPlan, WgradOrientation) {
  // yolov8n's 32 -> 32 3x3 at 160: 128 x 320 padded one way, 384 x 64 the other.
  const Conv2dDims c32 = conv2d_dims({64, 160, 160, 32}, {32, 3, 3, 32}, {1, 1, 1, 1, 1});
  EXPECT_TRUE(wgrad_transposed(c32));
  EXPECT_EQ(wgrad_splits(c32), 256);  // 3 tiles of 384 x 64: ceil(1024 / 3) capped at 256
  // Ties keep M = Cout: the stem (128 x 64 either way) and yolov8s's 256 -> 256 3x3.
  EXPECT_FALSE(wgrad_transposed(conv2d_dims({64, 640, 640, 3}, {16, 3, 3, 3}, {2, 2, 1, 1, 1})));
  EXPECT_FALSE(wgrad_transposed(conv2d_dims({64, 20, 20, 256}, {256, 3, 3, 256}, {1, 1, 1, 1, 1})));
  // A 1x1 with 64 outputs from 128 channels: 128 x 128 one way, 128 x 64 transposed.
  EXPECT_TRUE(wgrad_transposed(conv2d_dims({64, 80, 80, 128}, {64, 1, 1, 128}, {})));
}

}  // namespace
}  // namespace vt
