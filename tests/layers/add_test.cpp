// Elementwise add tests: hand values (incl. in-place and null gradients), double-precision
// gradient check, GPU parity, bad arguments.
#include "layers/add.h"

#include <functional>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

TEST(Add, HandComputed) {
  const Tensor a = from_values({3}, {1, 2, 3}), b = from_values({3}, {10, 20, -30});
  Tensor y = Tensor::empty({3}, DType::kF32, Device::kCPU);
  add_forward(a, b, y);
  test::expect_close(y, from_values({3}, {11, 22, -27}), 0, 0, "forward");
  // In place: a = a + b.
  add_forward(a, b, a);
  test::expect_close(a, from_values({3}, {11, 22, -27}), 0, 0, "forward in place");
  // dy = [0.5 1 2]; da starts at 1, db at -1 (gradients accumulate).
  const Tensor dy = from_values({3}, {0.5, 1, 2});
  Tensor da = from_values({3}, {1, 1, 1}), db = from_values({3}, {-1, -1, -1});
  add_backward(dy, &da, &db);
  test::expect_close(da, from_values({3}, {1.5, 2, 3}), 0, 0, "backward da");
  test::expect_close(db, from_values({3}, {-0.5, 0, 1}), 0, 0, "backward db");
  // Only db wanted: da is untouched.
  add_backward(dy, nullptr, &db);
  test::expect_close(db, from_values({3}, {0, 1, 3}), 0, 0, "backward db only");
  // y = a + a: the same gradient buffer twice gets 2 * dy: 1.5 + [1 2 4].
  add_backward(dy, &da, &da);
  test::expect_close(da, from_values({3}, {2.5, 4, 7}), 0, 0, "backward da == db");
  // Overwriting: da = dy whatever da held, db still accumulates; and with da == db the first
  // pass may overwrite, the second must add.
  add_backward(dy, &da, &db, {}, true, false);
  test::expect_close(da, dy, 0, 0, "backward da overwritten");
  test::expect_close(db, from_values({3}, {0.5, 2, 5}), 0, 0, "backward db accumulated");
  add_backward(dy, &da, &da, {}, true, false);
  test::expect_close(da, from_values({3}, {1, 2, 4}), 0, 0, "backward da == db, first overwritten");
  test::expect_error([&] { add_backward(dy, &da, &da, {}, false, true); }, {"add_backward", "db is da"});
}

TEST(Add, GradientCheckDouble) {
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{4, 5, 6}}) {
    SCOPED_TRACE(s.str());
    Tensor a = test::random_tensor(s, DType::kF64, 1), b = test::random_tensor(s, DType::kF64, 2);
    test::check_gradients(
        {a, b}, {"a", "b"},
        [&] {
          Tensor y = Tensor::empty(s, DType::kF64, Device::kCPU);
          add_forward(a, b, y);
          return std::vector<Tensor>{y};
        },
        [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) { add_backward(dy[0], &g[0], &g[1]); });
  }
}

TEST(Add, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : {Shape{1, 13, 17, 7}, Shape{3, 13, 17, 7}, Shape{1001}}) {
      SCOPED_TRACE(cat(dtype_name(dt), " ", s.str()));
      // The CPU reference sees exactly the inputs the GPU sees (bf16-rounded in bf16 runs).
      Tensor a = test::random_tensor(s, DType::kF32, 2), b = test::random_tensor(s, DType::kF32, 3);
      Tensor dy = test::random_tensor(s, DType::kF32, 4), da0 = test::random_tensor(s, DType::kF32, 5);
      Tensor db0 = test::random_tensor(s, DType::kF32, 6);
      if (dt == DType::kBF16) {
        a = test::round_to_bf16(a), b = test::round_to_bf16(b), dy = test::round_to_bf16(dy);
        da0 = test::round_to_bf16(da0), db0 = test::round_to_bf16(db0);
      }
      const Tensor y = Tensor::empty(s, DType::kF32, Device::kCPU), da = da0.to(Device::kCPU),
                   db = db0.to(Device::kCPU);
      add_forward(a, b, y);
      add_backward(dy, &da, &db);

      const Tensor yg = Tensor::empty(s, dt, Device::kCUDA), dag = da0.to(Device::kCUDA, dt);
      const Tensor dbg = db0.to(Device::kCUDA, dt);
      add_forward(a.to(Device::kCUDA, dt), b.to(Device::kCUDA, dt), yg);
      add_backward(dy.to(Device::kCUDA, dt), &dag, &dbg);
      synchronize();
      // One f32 addition of the same two values on both sides: f32 is bit-identical
      // (tolerance 0); bf16 then rounds that f32 sum once to 8 significant bits, at most
      // half an ulp = 2^-8 of the value.
      const double rtol = dt == DType::kF32 ? 0 : 1.0 / 256;
      test::expect_close(yg, y, 0, rtol, "forward");
      test::expect_close(dag, da, 0, rtol, "backward da");
      test::expect_close(dbg, db, 0, rtol, "backward db");
      // db overwritten (a copy of dy) on both sides, da accumulating.
      const Tensor dao = da0.to(Device::kCPU), dbo = db0.to(Device::kCPU);
      const Tensor daog = da0.to(Device::kCUDA, dt), dbog = db0.to(Device::kCUDA, dt);
      add_backward(dy, &dao, &dbo, {}, false, true);
      add_backward(dy.to(Device::kCUDA, dt), &daog, &dbog, {}, false, true);
      synchronize();
      test::expect_close(daog, dao, 0, rtol, "backward da, db overwritten");
      test::expect_close(dbog, dbo, 0, 0, "backward db overwritten");
    }
  }
}

// scale: x *= alpha, one rounding per element; the gradient of a linear map is alpha dy, which
// the trainer never needs (it scales sums that take no gradient), so no gradient check.
TEST(Scale, HandComputed) {
  const Tensor x = from_values({4}, {1, -3, 0.5, 7});
  scale(x, 0.25);
  test::expect_close(x, from_values({4}, {0.25, -0.75, 0.125, 1.75}), 0, 0, "scale");
  const Tensor d = Tensor::empty({2}, DType::kF64, Device::kCPU);
  d.data<double>()[0] = 1.0, d.data<double>()[1] = 3.0;
  scale(d, 1.0 / 3.0);
  EXPECT_EQ(d.data<double>()[0], 1.0 / 3.0);  // fp64 arithmetic for f64
  EXPECT_EQ(d.data<double>()[1], 3.0 * (1.0 / 3.0));
}

TEST(Scale, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor a = test::random_tensor({3, 13, 17, 7}, DType::kF32, 9);
    if (dt == DType::kBF16) a = test::round_to_bf16(a);
    const Tensor g = a.to(Device::kCUDA, dt);
    scale(a, 1.0 / 3.0);
    scale(g, 1.0 / 3.0);
    synchronize();
    // The same f32 product on both sides; bf16 rounds it once more (half an ulp, 2^-8).
    test::expect_close(g, a, 0, dt == DType::kF32 ? 0 : 1.0 / 256, dtype_name(dt));
  }
}

TEST(Add, BadArgumentsNameTheOpAndShapes) {
  const Tensor a = Tensor::empty({2, 3, 4}, DType::kF32, Device::kCPU);
  const Tensor b = Tensor::empty({2, 4, 3}, DType::kF32, Device::kCPU);
  test::expect_error([&] { add_forward(a, b, a); }, {"add_forward", "b must have shape (2, 3, 4)", "(2, 4, 3)"});
  test::expect_error([&] { add_backward(a, nullptr, &b); }, {"add_backward", "db", "(2, 4, 3)"});
  const Tensor ab = Tensor::empty({2, 3, 4}, DType::kBF16, Device::kCPU);
  test::expect_error([&] { add_forward(ab, ab, ab); },
               {"add_forward", "unsupported storage type bf16", "(2, 3, 4)"});
  const Tensor a64 = Tensor::empty({2, 3, 4}, DType::kF64, Device::kCPU);
  test::expect_error([&] { add_forward(a, a64, a); }, {"add_forward", "different storage types", "(2, 3, 4) f64"});
  test::expect_error([&] { add_backward(a, &a, nullptr); }, {"add_backward", "da must not alias dy"});
}

}  // namespace
}  // namespace vt
