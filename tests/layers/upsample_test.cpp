// Nearest-upsample tests: hand values, double-precision gradient check, GPU parity, bad
// arguments.
#include "layers/upsample.h"

#include <functional>
#include <numeric>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

Shape upsampled(const Shape& x, int scale) {
  return {x[0], x[1] * scale, x[2] * scale, x[3]};
}

Tensor upsample(const Tensor& x, int scale) {
  Tensor y = Tensor::empty(upsampled(x.shape(), scale), x.dtype(), x.device());
  upsample_nearest_forward(x, y, scale);
  return y;
}

TEST(UpsampleNearest, HandComputedScale2) {
  // x = [1 2; 3 4] (1, 2, 2, 1): every value becomes a 2x2 block.
  const Tensor x = from_values({1, 2, 2, 1}, {1, 2, 3, 4});
  test::expect_close(upsample(x, 2),
                     from_values({1, 4, 4, 1}, {1, 1, 2, 2,  //
                                                1, 1, 2, 2,  //
                                                3, 3, 4, 4,  //
                                                3, 3, 4, 4}),
                     0, 0, "forward");
  // dy = 1..16 row-major; each dx cell sums its 2x2 block, on top of dx = 0.5:
  //   (0,0): 1+2+5+6 = 14     (0,1): 3+4+7+8 = 22
  //   (1,0): 9+10+13+14 = 46  (1,1): 11+12+15+16 = 54
  std::vector<double> dyv(16);
  std::iota(dyv.begin(), dyv.end(), 1.0);
  Tensor dx = from_values({1, 2, 2, 1}, {0.5, 0.5, 0.5, 0.5});
  upsample_nearest_backward(from_values({1, 4, 4, 1}, dyv), dx, 2);
  test::expect_close(dx, from_values({1, 2, 2, 1}, {14.5, 22.5, 46.5, 54.5}), 0, 0, "backward");
}

TEST(UpsampleNearest, HandComputedScale3TwoChannels) {
  // x (1, 1, 2, 2) = [(1, -1), (2, -2)] -> y (1, 3, 6, 2): columns 0-2 hold pixel 0 and
  // columns 3-5 pixel 1, on all three rows, each channel separately.
  const Tensor x = from_values({1, 1, 2, 2}, {1, -1, 2, -2});
  std::vector<double> row;
  for (int w = 0; w < 6; ++w) row.insert(row.end(), {w < 3 ? 1.0 : 2.0, w < 3 ? -1.0 : -2.0});
  std::vector<double> want;
  for (int h = 0; h < 3; ++h) want.insert(want.end(), row.begin(), row.end());
  test::expect_close(upsample(x, 3), from_values({1, 3, 6, 2}, want), 0, 0, "forward");
  // dy: channel 0 = 1, channel 1 = 10 everywhere; each dx cell sums 3 * 3 = 9 cells, on top
  // of dx = 1: channel 0 gets 1 + 9 = 10, channel 1 gets 1 + 90 = 91.
  std::vector<double> dyv;
  for (int i = 0; i < 18; ++i) dyv.insert(dyv.end(), {1, 10});
  Tensor dx = from_values({1, 1, 2, 2}, {1, 1, 1, 1});
  upsample_nearest_backward(from_values({1, 3, 6, 2}, dyv), dx, 3);
  test::expect_close(dx, from_values({1, 1, 2, 2}, {10, 91, 10, 91}), 0, 0, "backward");
}

TEST(UpsampleNearest, GradientCheckDouble) {
  for (int scale : {1, 2, 3}) {
    SCOPED_TRACE(cat("scale ", scale));
    Tensor x = test::random_tensor({2, 3, 5, 3}, DType::kF64, 1);
    test::check_gradients(
        {x}, {"x"}, [&] { return std::vector<Tensor>{upsample(x, scale)}; },
        [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) {
          upsample_nearest_backward(dy[0], g[0], scale);
        });
  }
}

TEST(UpsampleNearest, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int scale : {1, 2, 3}) {
      // 7 and 5 channels: one element a thread; 16: 16-byte packs (8 bf16, 4 f32).
      for (const Shape& s :
           {Shape{1, 13, 17, 7}, Shape{3, 13, 17, 7}, Shape{2, 1, 1, 5}, Shape{2, 5, 6, 16}}) {
        SCOPED_TRACE(cat("scale ", scale, " ", dtype_name(dt), " ", s.str()));
        // The CPU reference sees exactly the inputs the GPU sees (bf16-rounded in bf16 runs).
        Tensor x = test::random_tensor(s, DType::kF32, 2);
        Tensor dy = test::random_tensor(upsampled(s, scale), DType::kF32, 3);
        Tensor dx0 = test::random_tensor(s, DType::kF32, 4);
        if (dt == DType::kBF16)
          x = test::round_to_bf16(x), dy = test::round_to_bf16(dy), dx0 = test::round_to_bf16(dx0);
        const Tensor y = upsample(x, scale), dx = dx0.to(Device::kCPU);
        upsample_nearest_backward(dy, dx, scale);

        const Tensor xg = x.to(Device::kCUDA, dt), dyg = dy.to(Device::kCUDA, dt),
                     dxg = dx0.to(Device::kCUDA, dt);
        const Tensor yg = Tensor::empty(y.shape(), dt, Device::kCUDA);
        upsample_nearest_forward(xg, yg, scale);
        upsample_nearest_backward(dyg, dxg, scale);
        synchronize();
        // Forward copies values: exact. Backward adds the same f32 values in the same (a, b)
        // order on both sides, so f32 is bit-identical (tolerance 0); bf16 then rounds that
        // f32 sum once to 8 significant bits, at most half an ulp = 2^-8 of the value.
        test::expect_close(yg, y, 0, 0, "forward");
        test::expect_close(dxg, dx, 0, dt == DType::kF32 ? 0 : 1.0 / 256, "backward");
      }
    }
  }
}

TEST(UpsampleNearest, BadArgumentsNameTheOpAndShapes) {
  const Tensor x = Tensor::empty({1, 2, 3, 2}, DType::kF32, Device::kCPU);
  const Tensor y3 = Tensor::empty({1, 6, 9, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { upsample_nearest_forward(x, y3, 2); },
                     {"upsample_nearest_forward", "(1, 4, 6, 2)", "(1, 6, 9, 2)"});
  test::expect_error([&] { upsample_nearest_backward(y3, x, 2); },
                     {"upsample_nearest_backward", "dy", "(1, 6, 9, 2)"});
  const Tensor xb = Tensor::empty({1, 2, 3, 2}, DType::kBF16, Device::kCPU);
  const Tensor yb = Tensor::empty({1, 4, 6, 2}, DType::kBF16, Device::kCPU);
  test::expect_error([&] { upsample_nearest_forward(xb, yb, 2); },
                     {"upsample_nearest_forward", "unsupported storage type bf16", "(1, 2, 3, 2)"});
  test::expect_error([&] { upsample_nearest_forward(x, y3, 0); },
                     {"upsample_nearest_forward", "scale 0", "(1, 2, 3, 2)"});
  const Tensor x3 = Tensor::empty({2, 3, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { upsample_nearest_forward(x3, y3, 3); },
                     {"upsample_nearest_forward", "rank 4", "(2, 3, 2)"});
}

}  // namespace
}  // namespace vt
