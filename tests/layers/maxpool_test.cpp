// Max-pool tests: hand values (incl. the tie and NaN rules), double-precision gradient
// check, GPU parity, bad arguments.
#include "layers/maxpool.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

const MaxPoolParams k2s2{2, 2, 0}, k5s1p2{5, 1, 2}, k3s2p1{3, 2, 1};

std::string name_of(const MaxPoolParams& p) {
  return cat(p.kernel, "x", p.kernel, " s", p.stride, " p", p.pad);
}

Tensor pool(const Tensor& x, const MaxPoolParams& p) {
  Tensor y = Tensor::empty(maxpool_output_shape(x.shape(), p), x.dtype(), x.device());
  maxpool_forward(x, y, p);
  return y;
}

// Exact equality where NaN equals NaN.
void expect_same(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const std::vector<double> a = test::values(actual), e = test::values(expected);
  int bad = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == e[i] || (std::isnan(a[i]) && std::isnan(e[i]))) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << a[i] << ", expected " << e[i];
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size() << " elements differ";
}

TEST(MaxPool, OutputShape) {
  EXPECT_EQ(maxpool_output_shape({2, 13, 17, 7}, k2s2),
            (Shape{2, 6, 8, 7}));  // odd sizes drop the last row/col
  EXPECT_EQ(maxpool_output_shape({2, 13, 17, 7}, k5s1p2), (Shape{2, 13, 17, 7}));
  EXPECT_EQ(maxpool_output_shape({2, 13, 17, 7}, k3s2p1), (Shape{2, 7, 9, 7}));  // (13 + 2 - 3) / 2 + 1 = 7
  EXPECT_EQ(maxpool_output_shape({1, 1, 1, 3}, k5s1p2), (Shape{1, 1, 1, 3}));
}

TEST(MaxPool, HandComputed2x2Stride2WithTies) {
  // x (1, 4, 4, 1), windows marked:   window maxima, first in kh-major scan order:
  //   1 5 | 2 0                        {1,5,3,4} -> 5 at (0,1)   {2,0,8,6} -> 8 at (1,2)
  //   3 4 | 8 6                        {7,0,9,2} -> 9 at (3,0)
  //   ----+----                        {1,3,3,2} -> 3: a tie of (2,3) and (3,2); kh-major scan
  //   7 0 | 1 3                        reaches (2,3) first, so it wins (a kw-major scan would
  //   9 2 | 3 2                        pick (3,2)).
  const Tensor x = from_values({1, 4, 4, 1}, {1, 5, 2, 0, 3, 4, 8, 6, 7, 0, 1, 3, 9, 2, 3, 2});
  test::expect_close(pool(x, k2s2), from_values({1, 2, 2, 1}, {5, 8, 9, 3}), 0, 0, "forward");
  // dy = [1 2; 3 4] routed to the winners, on top of dx = 0.5 everywhere (accumulates).
  Tensor dx = from_values({1, 4, 4, 1}, std::vector<double>(16, 0.5));
  maxpool_backward(x, from_values({1, 2, 2, 1}, {1, 2, 3, 4}), dx, k2s2);
  test::expect_close(dx,
                     from_values({1, 4, 4, 1}, {0.5, 1.5, 0.5, 0.5,  //
                                                0.5, 0.5, 2.5, 0.5,  //
                                                0.5, 0.5, 0.5, 4.5,  //
                                                3.5, 0.5, 0.5, 0.5}),
                     0, 0, "backward");
}

TEST(MaxPool, HandComputedSppf5x5Stride1Pad2) {
  // x (1, 4, 5, 1) = 5h + w increases along rows and columns, so each window's max is its
  // bottom-right real cell: y[h][w] = x[min(h+2, 3)][min(w+2, 4)]. E.g. y[0][0]: rows 0..2,
  // cols 0..2 -> x[2][2] = 12; y[1][3]: rows 0..3, cols 1..4 -> x[3][4] = 19; y[3][0]: rows
  // 1..3, cols 0..2 -> x[3][2] = 17.
  std::vector<double> xv(20);
  std::iota(xv.begin(), xv.end(), 0.0);
  const Tensor x = from_values({1, 4, 5, 1}, xv);
  test::expect_close(pool(x, k5s1p2), from_values({1, 4, 5, 1}, {12, 13, 14, 14, 14,  //
                                                                 17, 18, 19, 19, 19,  //
                                                                 17, 18, 19, 19, 19,  //
                                                                 17, 18, 19, 19, 19}),
                     0, 0, "forward");
  // dy = 1 everywhere: dx counts the windows each cell wins. Row 2 wins for oh = 0 only,
  // row 3 for oh = 1, 2, 3; col 2 for ow = 0, col 3 for ow = 1, col 4 for ow = 2, 3, 4. So
  // dx[2][2] = 1*1, dx[3][4] = 3*3 = 9, dx[2][4] = 1*3, dx[3][2] = 3*1; plus the initial 1.
  Tensor dx = from_values({1, 4, 5, 1}, std::vector<double>(20, 1));
  maxpool_backward(x, from_values({1, 4, 5, 1}, std::vector<double>(20, 1)), dx, k5s1p2);
  test::expect_close(dx, from_values({1, 4, 5, 1}, {1, 1, 1, 1, 1,  //
                                                    1, 1, 1, 1, 1,  //
                                                    1, 1, 2, 2, 4,  //
                                                    1, 1, 4, 4, 10}),
                     0, 0, "backward");
}

TEST(MaxPool, HandComputed3x3Stride2Pad1PaddingNeverWins) {
  // x (1, 3, 3, 2); channel 0 all negative (so a zero pad would win if it could),
  // channel 1 = -channel 0:
  //   ch0: -5 -3 -8    ch1: 5 3 8
  //        -2 -9 -4         2 9 4
  //        -7 -1 -6         7 1 6
  // Ho = Wo = (3 + 2 - 3) / 2 + 1 = 2; the windows' real cells:
  //   (0,0): rows 0-1, cols 0-1   (0,1): rows 0-1, cols 1-2
  //   (1,0): rows 1-2, cols 0-1   (1,1): rows 1-2, cols 1-2
  // ch0 maxima: -2 at (1,0); -3 at (0,1); -1 at (2,1); -1 at (2,1) again.
  // ch1 maxima: 9 at (1,1) in all four windows.
  const Tensor x = from_values({1, 3, 3, 2}, {-5, 5, -3, 3, -8, 8,  //
                                              -2, 2, -9, 9, -4, 4,  //
                                              -7, 7, -1, 1, -6, 6});
  test::expect_close(pool(x, k3s2p1), from_values({1, 2, 2, 2}, {-2, 9, -3, 9, -1, 9, -1, 9}), 0, 0,
                     "forward");
  // dy ch0 = [1 2; 3 4], ch1 = [10 20; 30 40], dx starts at 0.25:
  //   ch0: (1,0) += 1, (0,1) += 2, (2,1) += 3 + 4;  ch1: (1,1) += 10 + 20 + 30 + 40.
  Tensor dx = from_values({1, 3, 3, 2}, std::vector<double>(18, 0.25));
  maxpool_backward(x, from_values({1, 2, 2, 2}, {1, 10, 2, 20, 3, 30, 4, 40}), dx, k3s2p1);
  test::expect_close(dx,
                     from_values({1, 3, 3, 2}, {0.25, 0.25, 2.25, 0.25, 0.25, 0.25,    //
                                                1.25, 0.25, 0.25, 100.25, 0.25, 0.25,  //
                                                0.25, 0.25, 7.25, 0.25, 0.25, 0.25}),
                     0, 0, "backward");
  // 2x2 stride 2 on the 3x3 map: Ho = Wo = (3 - 2) / 2 + 1 = 1, the last row and column are
  // dropped: max{-5, -3, -2, -9} = -2 and max{5, 3, 2, 9} = 9.
  test::expect_close(pool(x, k2s2), from_values({1, 1, 1, 2}, {-2, 9}), 0, 0, "2x2 s2 on 3x3");
}

TEST(MaxPool, NanPropagatesAndTheFirstNanWins) {
  // Window [1 NaN; NaN 5]: the first NaN in scan order, (0,1), wins; y is NaN and the
  // gradient goes to (0,1). Window [-inf -inf; -inf 2] checks that -inf inputs are fine.
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const Tensor x = from_values({1, 2, 4, 1}, {1, nan, -inf, -inf, nan, 5, -inf, 2});
  expect_same(pool(x, k2s2), from_values({1, 1, 2, 1}, {nan, 2}), "forward");
  Tensor dx = Tensor::empty({1, 2, 4, 1}, DType::kF32, Device::kCPU);
  maxpool_backward(x, from_values({1, 1, 2, 1}, {3, 4}), dx, k2s2);
  expect_same(dx, from_values({1, 2, 4, 1}, {0, 3, 0, 0, 0, 0, 0, 4}), "backward");
}

// Distinct values: a shuffled 0, 1, ..., n-1 scaled by 0.01, so any two values in a window
// differ by >= 0.01, far more than the gradient check's step h = 1e-6: no probe can change
// a window's winner.
Tensor distinct_values(const Shape& s, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.01 * static_cast<double>(i) - 1.0;
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  return from_values(s, v, DType::kF64);
}

TEST(MaxPool, GradientCheckDouble) {
  for (const MaxPoolParams& p : {k2s2, k5s1p2, k3s2p1}) {
    for (const Shape& s : {Shape{2, 7, 9, 3}, Shape{1, 6, 5, 2}}) {
      SCOPED_TRACE(name_of(p) + " " + s.str());
      Tensor x = distinct_values(s, 11);
      test::check_gradients(
          {x}, {"x"}, [&] { return std::vector<Tensor>{pool(x, p)}; },
          [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) {
            maxpool_backward(x, dy[0], g[0], p);
          });
    }
  }
}

// Runs forward and backward on the CPU (f32) and the GPU (dt) from the same inputs, which
// are bf16-rounded for bf16 runs so that only the GPU's own rounding differs.
void expect_gpu_matches_cpu(Tensor x, Tensor dy, Tensor dx0, DType dt, const MaxPoolParams& p,
                            double bwd_rtol) {
  if (dt == DType::kBF16)
    x = test::round_to_bf16(x), dy = test::round_to_bf16(dy), dx0 = test::round_to_bf16(dx0);
  const Tensor y = pool(x, p);
  const Tensor dx = dx0.to(Device::kCPU);
  maxpool_backward(x, dy, dx, p);

  const Tensor xg = x.to(Device::kCUDA, dt), dyg = dy.to(Device::kCUDA, dt), dxg = dx0.to(Device::kCUDA, dt);
  const Tensor yg = Tensor::empty(y.shape(), dt, Device::kCUDA);
  maxpool_forward(xg, yg, p);
  maxpool_backward(xg, dyg, dxg, p);
  synchronize();
  expect_same(yg, y, "forward");
  test::expect_close(dxg, dx, 0, bwd_rtol, "backward");
}

TEST(MaxPool, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const MaxPoolParams& p : {k2s2, k5s1p2, k3s2p1}) {
      for (const Shape& s : {Shape{1, 13, 17, 7}, Shape{3, 13, 17, 7}, Shape{2, 2, 3, 5}}) {
        SCOPED_TRACE(name_of(p) + " " + dtype_name(dt) + " " + s.str());
        // Forward picks one input value, so it is exact in both types. Backward adds the
        // same f32 values in the same (oh, ow) order on both sides, so f32 is bit-identical
        // (tolerance 0); bf16 then rounds that f32 sum once to 8 significant bits, an error
        // of at most half an ulp = 2^-8 of the value.
        const double rtol = dt == DType::kF32 ? 0 : 1.0 / 256;
        expect_gpu_matches_cpu(test::random_tensor(s, DType::kF32, 2),
                               test::random_tensor(maxpool_output_shape(s, p), DType::kF32, 3),
                               test::random_tensor(s, DType::kF32, 4), dt, p, rtol);
      }
    }
  }
}

TEST(MaxPool, GpuFollowsTheTieAndNanRules) {
  VT_REQUIRE_GPU();
  // Values from {0, 1, 2} make ties in nearly every window, and a few NaNs sit among them.
  // Small integers are exact in bf16 and so are their sums here (at most 25 windows of dy
  // in {1, 2, 3} plus dx0 in {0, 1}: below 2^8), so both types must match exactly.
  const Shape s{3, 13, 17, 7};
  std::mt19937_64 rng(5);
  std::vector<double> xv(static_cast<size_t>(s.numel()));
  for (double& v : xv) v = static_cast<double>(rng() % 3);
  for (int i = 0; i < 40; ++i) xv[rng() % xv.size()] = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const MaxPoolParams& p : {k2s2, k5s1p2, k3s2p1}) {
      SCOPED_TRACE(name_of(p) + " " + dtype_name(dt));
      const Shape ys = maxpool_output_shape(s, p);
      std::vector<double> dyv(static_cast<size_t>(ys.numel())), dxv(xv.size());
      for (double& v : dyv) v = static_cast<double>(1 + rng() % 3);
      for (double& v : dxv) v = static_cast<double>(rng() % 2);
      expect_gpu_matches_cpu(from_values(s, xv), from_values(ys, dyv), from_values(s, dxv), dt, p, 0);
    }
  }
}

TEST(MaxPool, BadArgumentsNameTheOpAndShapes) {
  const Tensor x = Tensor::empty({1, 4, 4, 2}, DType::kF32, Device::kCPU);
  const Tensor y_bad = Tensor::empty({1, 3, 3, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { maxpool_forward(x, y_bad, k2s2); }, {"maxpool_forward", "(1, 2, 2, 2)", "(1, 3, 3, 2)"});
  const Tensor y = Tensor::empty({1, 2, 2, 2}, DType::kF32, Device::kCPU);
  const Tensor dx_bad = Tensor::empty({1, 4, 4, 3}, DType::kF32, Device::kCPU);
  test::expect_error([&] { maxpool_backward(x, y, dx_bad, k2s2); }, {"maxpool_backward", "dx", "(1, 4, 4, 3)"});
  const Tensor xb = Tensor::empty({1, 4, 4, 2}, DType::kBF16, Device::kCPU);
  const Tensor yb = Tensor::empty({1, 2, 2, 2}, DType::kBF16, Device::kCPU);
  test::expect_error([&] { maxpool_forward(xb, yb, k2s2); },
               {"maxpool_forward", "unsupported storage type bf16", "(1, 4, 4, 2)"});
  // pad 2 > kernel 3 / 2; a window larger than the padded input; not NHWC; y aliasing x.
  test::expect_error([&] { maxpool_forward(x, y, {3, 2, 2}); }, {"maxpool_forward", "pad 2", "(1, 4, 4, 2)"});
  test::expect_error(
      [&] {
        maxpool_forward(x, y, {7, 1, 1});
      },
      {"maxpool_forward", "smaller than the window", "(1, 4, 4, 2)"});
  const Tensor x3 = Tensor::empty({4, 4, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { maxpool_forward(x3, y, k2s2); }, {"maxpool_forward", "rank 4", "(4, 4, 2)"});
  const Tensor xsame = Tensor::empty({1, 1, 1, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { maxpool_forward(xsame, xsame, {1, 1, 0}); }, {"maxpool_forward", "alias"});
}

}  // namespace
}  // namespace vt
