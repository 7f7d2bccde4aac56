// Storage-type conversion tests: hand values (the /255 input scaling, round-to-nearest-even
// into bf16), GPU parity (bit-exact: one fp32 division or one rounding on both sides), and
// bad arguments. Neither op has a backward, so there is no gradient check.
#include "layers/convert.h"

#include <cmath>
#include <vector>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

Tensor bytes(const Shape& s, const std::vector<uint8_t>& v) {
  Tensor t = Tensor::empty(s, DType::kU8, Device::kCPU);
  std::copy(v.begin(), v.end(), t.data<uint8_t>());
  return t;
}

TEST(Convert, ImageToActivationHandComputed) {
  const Tensor x = bytes({1, 1, 2, 3}, {0, 1, 51, 127, 128, 255});
  Tensor y = Tensor::empty({1, 1, 2, 3}, DType::kF32, Device::kCPU);
  image_to_activation(x, y);
  // fp32 quotients, as PyTorch's img.float() / 255.
  const std::vector<float> want = {0.f, 1.f / 255.f, 51.f / 255.f, 127.f / 255.f, 128.f / 255.f, 1.f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(y.data<float>()[i], want[i]) << i;
  EXPECT_EQ(y.data<float>()[2], 0.2f);
  // f64 (the gradient-check mode): double quotients. Shapes may differ, counts must not.
  Tensor y64 = Tensor::empty({6}, DType::kF64, Device::kCPU);
  image_to_activation(x, y64);
  EXPECT_EQ(y64.data<double>()[3], 127.0 / 255.0);
  EXPECT_EQ(y64.data<double>()[5], 1.0);
}

TEST(Convert, CastHandComputed) {
  // bf16 keeps 8 significant bits: the ulp at 1 is 2^-7. Ties go to the even neighbour.
  const double u = std::ldexp(1.0, -7);
  const Tensor x = from_values({6}, {1.0, 1 + u / 2, 1 + 1.5 * u, -2.5, 3.14159274101257324, 65504});
  Tensor b = Tensor::empty({6}, DType::kBF16, Device::kCPU);
  cast(x, b);
  test::expect_close(b, from_values({6}, {1.0, 1.0, 1 + 2 * u, -2.5, 3.140625, 65536}), 0, 0, "f32 -> bf16");
  EXPECT_EQ(test::values(b)[1], 1.0);
  EXPECT_EQ(test::values(b)[2], 1 + 2 * u);
  Tensor back = Tensor::empty({2, 3}, DType::kF32, Device::kCPU);
  cast(b, back);
  EXPECT_EQ(test::values(back), test::values(b));
  Tensor wide = Tensor::empty({6}, DType::kF64, Device::kCPU);
  cast(x, wide);
  EXPECT_EQ(test::values(wide), test::values(x));
}

TEST(Convert, BadArguments) {
  const Tensor u8 = bytes({4}, {1, 2, 3, 4});
  const Tensor f = Tensor::empty({4}, DType::kF32, Device::kCPU);
  test::expect_error([&] { cast(u8, f); }, {"cast", "f32, bf16 or f64", "x: (4) u8 cpu"});
  test::expect_error([&] { cast(f, Tensor::empty({5}, DType::kF32, Device::kCPU)); },
                     {"cast", "same number of elements", "y: (5) f32 cpu"});
  test::expect_error([&] { cast(f, f); }, {"cast", "must not overlap"});
  test::expect_error([&] { image_to_activation(f, Tensor::empty({4}, DType::kF32, Device::kCPU)); },
                     {"image_to_activation", "x must be u8"});
  test::expect_error([&] { image_to_activation(u8, Tensor::empty({4}, DType::kBF16, Device::kCPU)); },
                     {"image_to_activation", "bf16", "cpu"});
  test::expect_error(
      [&] {
        image_to_activation(u8, Tensor::empty({2, 3}, DType::kF32, Device::kCPU));
      },
      {"image_to_activation", "same number of elements"});
}

TEST(Convert, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (const Shape& s : {Shape{1, 13, 17, 3}, Shape{3, 13, 17, 3}, Shape{1001}}) {
    SCOPED_TRACE(s.str());
    Tensor img = Tensor::empty(s, DType::kU8, Device::kCPU);
    for (int64_t i = 0; i < img.numel(); ++i)
      img.data<uint8_t>()[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    Tensor ref = Tensor::empty(s, DType::kF32, Device::kCPU);
    image_to_activation(img, ref);
    const Tensor x = test::random_tensor(s, DType::kF32, 3, -100, 100);
    Tensor ref_b = Tensor::empty(s, DType::kBF16, Device::kCPU);
    cast(x, ref_b);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(dtype_name(dt));
      // Both sides form the same IEEE fp32 quotient and round it once to nearest even:
      // bit-identical, tolerance 0 (the CPU reference rounded to bf16 for bf16).
      const Tensor y = Tensor::empty(s, dt, Device::kCUDA);
      image_to_activation(img.to(Device::kCUDA), y);
      synchronize();
      test::expect_close(y, dt == DType::kF32 ? ref : test::round_to_bf16(ref), 0, 0, "image");
    }
    // f32 -> bf16 -> f32 on the device, each step exact against the CPU.
    const Tensor xb = Tensor::empty(s, DType::kBF16, Device::kCUDA),
                 xf = Tensor::empty(s, DType::kF32, Device::kCUDA);
    cast(x.to(Device::kCUDA), xb);
    cast(xb, xf);
    synchronize();
    test::expect_close(xb, ref_b, 0, 0, "f32 -> bf16");
    test::expect_close(xf, ref_b, 0, 0, "bf16 -> f32");
  }
}

}  // namespace
}  // namespace vt
