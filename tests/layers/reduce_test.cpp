// Reduction tests: hand values (incl. NaN/Inf and empty input), double-precision gradient
// checks for the two differentiable reductions, GPU parity (exact on small integers, and
// within the fp32 tree's error bound on random data), GPU determinism, bad arguments.
#include "layers/reduce.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "layers/check.h"
#include "layers/op.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;

using ReduceFn = void (*)(const Tensor&, const Tensor&, const Tensor&, Stream);
struct Reduction {
  const char* name;
  ReduceFn fn;
};
const Reduction kSum{"reduce_sum", reduce_sum};
const Reduction kSumSquares{"reduce_sum_squares", reduce_sum_squares};
const Reduction kMaxAbs{"reduce_max_abs", reduce_max_abs};
const Reduction kCount{"count_nonfinite", count_nonfinite};
const Reduction kAll[] = {kSum, kSumSquares, kMaxAbs, kCount};

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// Runs a reduction on x's device into a fresh out that starts at 99 (to show it is
// overwritten) and returns out[0].
double reduce_value(const Reduction& r, const Tensor& x) {
  Tensor out = from_values({1}, {99}, param_dtype(x.dtype())).to(x.device());
  Tensor workspace;
  const int64_t need = reduce_workspace_elems(x.numel(), x.device());
  if (need > 0) workspace = Tensor::empty({need}, DType::kF32, x.device());
  r.fn(x, out, workspace, Stream{});
  if (x.is_cuda()) synchronize();  // synchronize() throws on a machine with no CUDA driver
  return values(out)[0];
}

// The shapes the GPU tests run: empty, single, odd, an NHWC activation (13x17 images, 7
// channels, batch 1 and 3), more than one block (odd), and past the 1024-block cap
// (2^24 + 3, where a block's chunk is uneven).
const Shape kGpuShapes[] = {Shape{0},
                            Shape{1},
                            Shape{7},
                            Shape{13, 17, 7},
                            Shape{1, 13, 17, 7},
                            Shape{3, 13, 17, 7},
                            Shape{1000003},
                            Shape{(1 << 24) + 3}};

// x on the CPU in f32, its values exactly representable in `dt` (bf16-rounded for bf16), so
// the CPU reference reads exactly what the GPU reads.
Tensor gpu_test_input(const Shape& s, DType dt, uint64_t seed) {
  Tensor x = test::random_tensor(s, DType::kF32, seed);
  return dt == DType::kBF16 ? test::round_to_bf16(x) : x;
}

TEST(Reduce, HandComputedValues) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    // Any rank reads as flat: (4) and (2, 2) give the same results.
    for (const Shape& s : {Shape{4}, Shape{2, 2}}) {
      const Tensor x = from_values(s, {1, -2, 3, 0.5}, dt);
      EXPECT_EQ(reduce_value(kSum, x), 2.5);           // 1 - 2 + 3 + 0.5
      EXPECT_EQ(reduce_value(kSumSquares, x), 14.25);  // 1 + 4 + 9 + 0.25
      EXPECT_EQ(reduce_value(kMaxAbs, x), 3.0);        // max(1, 2, 3, 0.5)
      EXPECT_EQ(reduce_value(kCount, x), 0.0);
    }
  }
}

TEST(Reduce, HandComputedBackwardAccumulates) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = from_values({4}, {1, -2, 3, 0.5}, dt);
    const Tensor dout = from_values({1}, {2}, dt);
    // dx starts at 1 to show that the gradient accumulates.
    Tensor dx = from_values({4}, {1, 1, 1, 1}, dt);
    reduce_sum_backward(dout, dx);  // 1 + 2
    EXPECT_EQ(values(dx), (std::vector<double>{3, 3, 3, 3}));
    dx = from_values({4}, {1, 1, 1, 1}, dt);
    reduce_sum_squares_backward(x, dout, dx);  // 1 + 2 * x * 2 = 1 + 4x
    EXPECT_EQ(values(dx), (std::vector<double>{5, -7, 13, 3}));
  }
}

TEST(Reduce, CpuAccumulatesF32InDouble) {
  // In fp32, 2^24 + 1 rounds back to 2^24 (ties to even), so a float accumulator would
  // return 2^24; the double accumulator returns 2^24 + 4, which f32 represents exactly.
  const Tensor x = from_values({5}, {16777216, 1, 1, 1, 1}, DType::kF32);
  EXPECT_EQ(reduce_value(kSum, x), 16777220.0);
}

TEST(Reduce, NonFiniteValues) {
  const double big = std::numeric_limits<float>::max();
  struct Case {
    std::vector<double> x;
    double max_abs, count;
  } cases[] = {
      {{1, -kInf, 2}, kInf, 1},        // -Inf: |.| = +Inf
      {{1, kNaN, -kInf, 5}, kNaN, 2},  // NaN wins over Inf
      {{3, -4, kNaN}, kNaN, 1},        // NaN last
      {{kNaN, 3, -4}, kNaN, 1},        // NaN first
      {{kInf, -kInf, kNaN, kInf}, kNaN, 4},
      {{big, -big, 1e-40}, big, 0},  // large and subnormal values are finite
  };
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " case with " + std::to_string(c.x.size()) + " values");
      const Tensor x = from_values({static_cast<int64_t>(c.x.size())}, c.x, dt);
      const double m = reduce_value(kMaxAbs, x);
      if (std::isnan(c.max_abs))
        EXPECT_TRUE(std::isnan(m)) << m;
      else
        EXPECT_EQ(m, c.max_abs);
      EXPECT_EQ(reduce_value(kCount, x), c.count);
    }
  }
  // Sums propagate non-finite values by ordinary arithmetic.
  EXPECT_EQ(reduce_value(kSum, from_values({3}, {1, -kInf, 2})), -kInf);
  EXPECT_TRUE(std::isnan(reduce_value(kSumSquares, from_values({3}, {1, kNaN, 2}))));
}

TEST(Reduce, EmptyInputGivesZero) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const Shape& s : {Shape{0}, Shape{2, 0, 3}}) {
      const Tensor x = Tensor::empty(s, dt, Device::kCPU);
      for (const Reduction& r : kAll) EXPECT_EQ(reduce_value(r, x), 0.0) << r.name << " " << s.str();
      // The backwards have nothing to do.
      Tensor dx = Tensor::empty(s, dt, Device::kCPU);
      const Tensor dout = from_values({1}, {2}, dt);
      reduce_sum_backward(dout, dx);
      reduce_sum_squares_backward(x, dout, dx);
    }
  }
}

TEST(Reduce, GradientCheckDouble) {
  Tensor x = test::random_tensor({3, 5, 7}, DType::kF64, 1);
  const Tensor none;
  auto forward = [&](ReduceFn fn) {
    return [&x, &none, fn] {
      Tensor out = Tensor::empty({1}, DType::kF64, Device::kCPU);
      fn(x, out, none, Stream{});
      return std::vector<Tensor>{out};
    };
  };
  {
    SCOPED_TRACE("reduce_sum");
    test::check_gradients(
        {x}, {"x"}, forward(reduce_sum),
        [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) { reduce_sum_backward(dy[0], g[0]); });
  }
  {
    SCOPED_TRACE("reduce_sum_squares");
    test::check_gradients({x}, {"x"}, forward(reduce_sum_squares),
                          [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) {
                            reduce_sum_squares_backward(x, dy[0], g[0]);
                          });
  }
}

// Longest chain of fp32 roundings in the CUDA reduction of n elements (see reduce.cu): a
// thread's serial fold of ceil(chunk / 256) elements, the 8-level block tree, the serial
// fold of ceil(B / 256) partials, the 8-level final tree.
double cuda_fold_depth(int64_t n) {
  const int64_t blocks = reduce_workspace_elems(n, Device::kCUDA);
  if (blocks == 0) return 0;
  const int64_t chunk = (n + blocks - 1) / blocks;
  return static_cast<double>((chunk + 255) / 256 + 8 + (blocks + 255) / 256 + 8);
}

TEST(Reduce, GpuExactOnSmallIntegers) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : kGpuShapes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + s.str());
      // Values in {-1, 0, 1} from a hash of the index. Every value the GPU forms is the sum
      // of a subset of the elements, an integer of magnitude <= sum|x| < 2^24, so each fp32
      // addition is exact and the result must equal the CPU's exactly, in any order. A
      // dropped or doubled nonzero element changes the sum of squares by 1, so any indexing
      // error shows.
      Tensor x = Tensor::empty(s, DType::kF32, Device::kCPU);
      double abs_sum = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        const uint64_t h = (static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull) >> 62;
        const float v = h == 0 ? -1.f : h == 3 ? 1.f : 0.f;
        x.data<float>()[i] = v;
        abs_sum += std::abs(v);
      }
      ASSERT_LT(abs_sum, 16777216.0) << "the exactness argument needs sum|x| < 2^24";
      const Tensor xg = x.to(Device::kCUDA, dt);
      EXPECT_EQ(reduce_value(kSum, xg), reduce_value(kSum, x));
      EXPECT_EQ(reduce_value(kSumSquares, xg), reduce_value(kSumSquares, x));
      EXPECT_EQ(reduce_value(kSumSquares, xg), abs_sum);
    }
  }
}

TEST(Reduce, GpuMatchesCpuWithinFp32TreeBound) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : kGpuShapes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + s.str());
      const Tensor x = gpu_test_input(s, dt, 2);
      const Tensor xg = x.to(Device::kCUDA, dt);
      double abs_sum = 0, sq_sum = 0;
      for (double v : values(x)) abs_sum += std::abs(v), sq_sum += v * v;
      // The GPU's fp32 tree errs by at most gamma_d * sum|terms| ~= d * u * sum|terms|
      // (u = 2^-24, d = cuda_fold_depth(n); d = 85 at n = 2^24 + 3, i.e. ~5e-6 relative),
      // plus one rounding per squared term for sums of squares. The CPU's double sum is
      // exact to ~n * 2^-53 (negligible) and is rounded once to f32 (u * |sum|). bf16 inputs
      // widen to fp32 exactly, and the CPU reads the same bf16-rounded values, so the same
      // bound holds. The margin of 2 roundings absorbs the gamma_d vs d * u difference.
      const double u = std::ldexp(1.0, -24), d = cuda_fold_depth(x.numel());
      const double sum = reduce_value(kSum, x), sum_g = reduce_value(kSum, xg);
      EXPECT_LE(std::abs(sum_g - sum), (d + 2) * u * abs_sum) << "sum " << sum_g << " vs " << sum;
      const double sq = reduce_value(kSumSquares, x), sq_g = reduce_value(kSumSquares, xg);
      EXPECT_LE(std::abs(sq_g - sq), (d + 3) * u * sq_sum) << "sum of squares " << sq_g << " vs " << sq;
      // max and counting are exact in any order.
      EXPECT_EQ(reduce_value(kMaxAbs, xg), reduce_value(kMaxAbs, x));
      EXPECT_EQ(reduce_value(kCount, xg), 0.0);
    }
  }
}

TEST(Reduce, GpuBackwardMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : kGpuShapes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + s.str());
      const Tensor x = gpu_test_input(s, dt, 3), dx0 = gpu_test_input(s, dt, 4);
      const Tensor dout = from_values({1}, {0.37});
      Tensor dx_sum = dx0.to(Device::kCPU), dx_sq = dx0.to(Device::kCPU);
      reduce_sum_backward(dout, dx_sum);
      reduce_sum_squares_backward(x, dout, dx_sq);

      const Tensor xg = x.to(Device::kCUDA, dt), doutg = dout.to(Device::kCUDA);
      Tensor dxg_sum = dx0.to(Device::kCUDA, dt), dxg_sq = dx0.to(Device::kCUDA, dt);
      reduce_sum_backward(doutg, dxg_sum);
      reduce_sum_squares_backward(xg, doutg, dxg_sq);
      synchronize();
      // f32: the same fp32 operations as the CPU, except that the GPU may fuse 2x*d + dx
      // into one FMA (one rounding fewer): 1 ulp of values of order 1, far inside 1e-6.
      // bf16: the result is rounded once to 8 significant bits, at most 2^-9 relative;
      // rtol 2^-8 leaves a 2x margin, and atol covers results that cancel to near zero.
      const double rtol = dt == DType::kF32 ? 1e-6 : 1.0 / 256, atol = dt == DType::kF32 ? 1e-6 : 1e-5;
      test::expect_close(dxg_sum, dx_sum, atol, rtol, "reduce_sum_backward");
      test::expect_close(dxg_sq, dx_sq, atol, rtol, "reduce_sum_squares_backward");
    }
  }
}

TEST(Reduce, GpuNonFiniteAnywhere) {
  VT_REQUIRE_GPU();
  const int64_t n = 1000003;
  const int64_t blocks = reduce_workspace_elems(n, Device::kCUDA), chunk = (n + blocks - 1) / blocks;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    // One special value at a time, at the ends of the array and of a block's chunk.
    for (int64_t p : {int64_t{0}, chunk - 1, chunk, n / 2, n - chunk, n - 1}) {
      for (double special : {kNaN, -kInf, 1000.0}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " x[" + std::to_string(p) +
                     "] = " + std::to_string(special));
        Tensor x = gpu_test_input({n}, dt, 5);
        x.data<float>()[p] = static_cast<float>(special);
        const Tensor xg = x.to(Device::kCUDA, dt);
        const double m = reduce_value(kMaxAbs, xg);
        if (std::isnan(special))
          EXPECT_TRUE(std::isnan(m)) << m;
        else
          EXPECT_EQ(m, std::abs(special));
        EXPECT_EQ(reduce_value(kCount, xg), std::isfinite(special) ? 0.0 : 1.0);
      }
    }
    // Many: every 997th element NaN or Inf, past the 1024-block cap. The count is exact.
    SCOPED_TRACE(std::string(dtype_name(dt)) + " many");
    const int64_t big = (int64_t{1} << 24) + 3;
    Tensor x = gpu_test_input({big}, dt, 6);
    for (int64_t i = 0; i < big; i += 997) x.data<float>()[i] = static_cast<float>(i % 2 ? kNaN : kInf);
    const Tensor xg = x.to(Device::kCUDA, dt);
    EXPECT_EQ(reduce_value(kCount, xg), static_cast<double>((big + 996) / 997));
    EXPECT_EQ(reduce_value(kCount, xg), reduce_value(kCount, x));
    EXPECT_TRUE(std::isnan(reduce_value(kMaxAbs, xg)));
  }
}

TEST(Reduce, GpuIsDeterministic) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t n : {int64_t{1000003}, (int64_t{1} << 24) + 3}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n = " + std::to_string(n));
      const Tensor xg = gpu_test_input({n}, dt, 7).to(Device::kCUDA, dt);
      for (const Reduction& r : kAll) {
        // Fresh out and workspace buffers each time: the result must not depend on them.
        const double first = reduce_value(r, xg), second = reduce_value(r, xg);
        EXPECT_EQ(std::memcmp(&first, &second, sizeof(double)), 0)
            << r.name << ": " << first << " vs " << second;
      }
    }
  }
}

TEST(Reduce, BadArgumentsNameTheOpAndShapes) {
  const Tensor x = Tensor::empty({2, 3}, DType::kF32, Device::kCPU);
  const Tensor out = Tensor::empty({1}, DType::kF32, Device::kCPU);
  const Tensor none;
  // out of the wrong shape.
  test::expect_error([&] { reduce_sum(x, Tensor::empty({2}, DType::kF32, Device::kCPU), none); },
               {"reduce_sum", "out must have shape (1)", "out: (2)"});
  // out of the wrong type: f64 with f32 x.
  test::expect_error([&] { reduce_sum_squares(x, Tensor::empty({1}, DType::kF64, Device::kCPU), none); },
               {"reduce_sum_squares", "out must be f32", "x: (2, 3) f32 cpu", "out: (1) f64 cpu"});
  // bf16 on the CPU.
  const Tensor xb = Tensor::empty({2, 3}, DType::kBF16, Device::kCPU);
  test::expect_error([&] { reduce_max_abs(xb, out, none); },
               {"reduce_max_abs", "unsupported storage type bf16 on cpu", "x: (2, 3) bf16 cpu"});
  // Backward shapes.
  test::expect_error([&] { reduce_sum_backward(Tensor::empty({2}, DType::kF32, Device::kCPU), x); },
               {"reduce_sum_backward", "dout must have shape (1)", "dout: (2)"});
  test::expect_error(
      [&] {
        reduce_sum_squares_backward(x, out, Tensor::empty({3, 2}, DType::kF32, Device::kCPU));
      },
      {"reduce_sum_squares_backward", "dx must have shape (2, 3)", "dx: (3, 2)"});

  // A missing or short CUDA workspace. Views of a dummy address: the contract check throws
  // before anything touches the memory, so this runs without a GPU too.
  static float dummy[1];
  const Tensor xg = Tensor::view(dummy, {5000}, DType::kF32, Device::kCUDA);  // needs 2 partials
  const Tensor outg = Tensor::view(dummy, {1}, DType::kF32, Device::kCUDA);
  ASSERT_EQ(reduce_workspace_elems(5000, Device::kCUDA), 2);
  test::expect_error(
      [&] { count_nonfinite(xg, outg, Tensor::view(dummy, {1}, DType::kF32, Device::kCUDA)); },
      {"count_nonfinite", "workspace must be f32 on cuda with at least 2 elements", "workspace: (1)"});
  test::expect_error([&] { reduce_sum(xg, outg, none); }, {"reduce_sum", "workspace", "x: (5000) f32 cuda"});
  test::expect_error([&] { reduce_sum(xg, outg, Tensor::view(dummy, {4}, DType::kBF16, Device::kCUDA)); },
               {"reduce_sum", "workspace must be f32", "workspace: (4) bf16 cuda"});
}

TEST(Reduce, WorkspaceDependsOnlyOnN) {
  EXPECT_EQ(reduce_workspace_elems(0, Device::kCUDA), 0);
  EXPECT_EQ(reduce_workspace_elems(1, Device::kCUDA), 1);
  EXPECT_EQ(reduce_workspace_elems(4096, Device::kCUDA), 1);
  EXPECT_EQ(reduce_workspace_elems(4097, Device::kCUDA), 2);
  EXPECT_EQ(reduce_workspace_elems(1000003, Device::kCUDA), 245);  // ceil(1000003 / 4096)
  EXPECT_EQ(reduce_workspace_elems(int64_t{1} << 40, Device::kCUDA), 1024);
  EXPECT_EQ(reduce_workspace_elems(1000003, Device::kCPU), 0);
}

}  // namespace
}  // namespace vt
