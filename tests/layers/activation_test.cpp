// Activation tests: hand values, double-precision gradient check, GPU parity, bad arguments.
#include "layers/activation.h"

#include <cmath>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;

const Activation kAll[] = {{ActKind::kReLU}, {ActKind::kSiLU}, {ActKind::kLeakyReLU, 0.1f}, {ActKind::kSigmoid}};

TEST(Activation, HandComputedValuesAndDerivatives) {
  const Tensor x = from_values({4}, {-2.0, -0.5, 0.0, 1.5});
  const double s15 = 1 / (1 + std::exp(-1.5)), s05 = 1 / (1 + std::exp(0.5)), s2 = 1 / (1 + std::exp(2.0));
  struct Case {
    Activation act;
    std::vector<double> y, dydx;
  } cases[] = {
      {{ActKind::kReLU}, {0, 0, 0, 1.5}, {0, 0, 0, 1}},
      {{ActKind::kLeakyReLU, 0.1f}, {-0.2, -0.05, 0, 1.5}, {0.1, 0.1, 0.1, 1}},
      {{ActKind::kSigmoid}, {s2, s05, 0.5, s15}, {s2 * (1 - s2), s05 * (1 - s05), 0.25, s15 * (1 - s15)}},
      {{ActKind::kSiLU},
       {-2 * s2, -0.5 * s05, 0, 1.5 * s15},
       {s2 * (1 - 2 * (1 - s2)), s05 * (1 - 0.5 * (1 - s05)), 0.5, s15 * (1 + 1.5 * (1 - s15))}},
  };
  for (const Case& c : cases) {
    Tensor y = Tensor::empty({4}, DType::kF32, Device::kCPU);
    activation_forward(c.act, x, y);
    test::expect_close(y, from_values({4}, c.y), 1e-6, 1e-6, c.act.name());
    // dx starts at 1 to show that the gradient accumulates.
    Tensor dx = from_values({4}, {1, 1, 1, 1});
    activation_backward(c.act, x, from_values({4}, {2, 2, 2, 2}), dx);
    std::vector<double> want;
    for (double d : c.dydx) want.push_back(1 + 2 * d);
    test::expect_close(dx, from_values({4}, want), 1e-6, 1e-6, std::string(c.act.name()) + " backward");
  }
}

// The fp32 sigmoid and SiLU (a vectorized exp of their own) against double over the whole
// float range that matters, extremes included: values within 5e-7 relative (4 ulp) or 1e-38
// absolute (results that underflow); derivatives within 2e-6 relative or 1e-7 absolute (s (1
// - s) and SiLU's derivative cancel near 0, leaving errors of a few ulp of 1); NaN stays NaN.
TEST(Activation, F32SigmoidFamilyMatchesDouble) {
  std::vector<double> xs = {-1e30, -200, -104, -88, -87.5, -87, -30, -1e-3, 0, 1e-30, 1e-3, 30, 87, 88, 89, 1e30};
  for (double x = -40; x <= 40; x += 0.0137) xs.push_back(x);
  const int64_t n = static_cast<int64_t>(xs.size());
  const Tensor x32 = from_values({n}, xs);
  for (const Activation& act : {Activation{ActKind::kSigmoid}, Activation{ActKind::kSiLU}}) {
    SCOPED_TRACE(act.name());
    Tensor y32 = Tensor::empty({n}, DType::kF32, Device::kCPU), y64 = Tensor::empty({n}, DType::kF64, Device::kCPU);
    activation_forward(act, x32, y32);
    activation_forward(act, from_values({n}, values(x32), DType::kF64), y64);  // the same (rounded) inputs
    test::expect_close(y32, y64, 1e-38, 5e-7, "forward");
    Tensor d32 = Tensor::empty({n}, DType::kF32, Device::kCPU), d64 = Tensor::empty({n}, DType::kF64, Device::kCPU);
    activation_backward(act, x32, from_values({n}, std::vector<double>(xs.size(), 1.0)), d32);
    activation_backward(act, from_values({n}, values(x32), DType::kF64),
                        from_values({n}, std::vector<double>(xs.size(), 1.0), DType::kF64), d64);
    test::expect_close(d32, d64, 1e-7, 2e-6, "backward");
  }
  Tensor y = Tensor::empty({1}, DType::kF32, Device::kCPU);
  activation_forward({ActKind::kSiLU}, from_values({1}, {std::nan("")}), y);
  EXPECT_TRUE(std::isnan(y.data<float>()[0]));
}

TEST(Activation, GradientCheckDouble) {
  for (const Activation& act : kAll) {
    SCOPED_TRACE(act.name());
    Tensor x = test::random_away_from_zero({2, 3, 5, 7}, DType::kF64, 1, 0.05);
    test::check_gradients(
        {x}, {"x"},
        [&] {
          Tensor y = Tensor::empty(x.shape(), DType::kF64, Device::kCPU);
          activation_forward(act, x, y);
          return std::vector<Tensor>{y};
        },
        [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) { activation_backward(act, x, dy[0], g[0]); });
  }
}

TEST(Activation, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : {Shape{1, 13, 17, 7}, Shape{3, 13, 17, 7}}) {
      for (const Activation& act : kAll) {
        SCOPED_TRACE(std::string(act.name()) + " " + dtype_name(dt) + " " + s.str());
        // The CPU reference sees exactly the inputs the GPU sees (bf16-rounded in bf16 runs).
        Tensor x = test::random_tensor(s, DType::kF32, 2, -6, 6);
        Tensor dy = test::random_tensor(s, DType::kF32, 3);
        if (dt == DType::kBF16) x = test::round_to_bf16(x), dy = test::round_to_bf16(dy);
        Tensor y = Tensor::empty(s, DType::kF32, Device::kCPU), dx = Tensor::empty(s, DType::kF32, Device::kCPU);
        activation_forward(act, x, y);
        activation_backward(act, x, dy, dx);

        Tensor xg = x.to(Device::kCUDA, dt), dyg = dy.to(Device::kCUDA, dt);
        Tensor yg = Tensor::empty(s, dt, Device::kCUDA), dxg = Tensor::empty(s, dt, Device::kCUDA);
        activation_forward(act, xg, yg);
        activation_backward(act, xg, dyg, dxg);
        synchronize();
        // f32: the GPU's __expf is within 2 ulp, so 1e-5 relative covers it with room.
        // bf16: one final rounding to 8 significant bits is at most 2^-8 = 0.39% relative;
        // 1% allows that plus the f32 differences, and atol covers results near zero.
        const double rtol = dt == DType::kF32 ? 1e-5 : 1e-2, atol = dt == DType::kF32 ? 1e-6 : 1e-3;
        test::expect_close(yg, y, atol, rtol, "forward");
        test::expect_close(dxg, dx, atol, rtol, "backward");
      }
    }
  }
}

TEST(Activation, BadArgumentsNameTheOpAndShapes) {
  Tensor x = Tensor::empty({2, 3}, DType::kF32, Device::kCPU);
  Tensor y = Tensor::empty({3, 2}, DType::kF32, Device::kCPU);
  try {
    activation_forward({ActKind::kReLU}, x, y);
    FAIL() << "shape mismatch accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("activation_forward"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(3, 2)"), std::string::npos) << e.what();
  }
  Tensor xb = Tensor::empty({2, 3}, DType::kBF16, Device::kCPU), yb = Tensor::empty({2, 3}, DType::kBF16, Device::kCPU);
  try {
    activation_forward({ActKind::kReLU}, xb, yb);
    FAIL() << "bf16 on the CPU accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported storage type bf16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(activation_forward({ActKind::kReLU}, x, x), Error);  // aliasing
}

}  // namespace
}  // namespace vt
