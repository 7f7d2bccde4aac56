// Channel concat / split tests: hand values, double-precision gradient checks, GPU parity,
// bad arguments.
#include "layers/concat.h"

#include <functional>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

// Fresh zeroed tensors with the pixel dims of `like` and the given channel counts.
std::vector<Tensor> parts_like(const Shape& like, const std::vector<int64_t>& channels, DType dt,
                               Device dev) {
  std::vector<Tensor> out;
  for (int64_t c : channels) out.push_back(Tensor::empty({like[0], like[1], like[2], c}, dt, dev));
  return out;
}

TEST(Concat, HandComputedChannels1And2) {
  // Two pixels (1, 1, 2, C): x0 (C=1) = [1 | 2], x1 (C=2) = [10 11 | 20 21]
  //   -> y (C=3) = [1 10 11 | 2 20 21].
  const Tensor x0 = from_values({1, 1, 2, 1}, {1, 2}), x1 = from_values({1, 1, 2, 2}, {10, 11, 20, 21});
  Tensor y = Tensor::empty({1, 1, 2, 3}, DType::kF32, Device::kCPU);
  concat_forward({x0, x1}, y);
  test::expect_close(y, from_values({1, 1, 2, 3}, {1, 10, 11, 2, 20, 21}), 0, 0, "forward");
  // dy = [1 2 3 | 4 5 6]: dx0 = 0.5 + [1 | 4], dx1 = 1 + [2 3 | 5 6] (accumulates).
  Tensor dx0 = from_values({1, 1, 2, 1}, {0.5, 0.5}), dx1 = from_values({1, 1, 2, 2}, {1, 1, 1, 1});
  concat_backward(from_values({1, 1, 2, 3}, {1, 2, 3, 4, 5, 6}), {dx0, dx1});
  test::expect_close(dx0, from_values({1, 1, 2, 1}, {1.5, 4.5}), 0, 0, "backward dx0");
  test::expect_close(dx1, from_values({1, 1, 2, 2}, {3, 4, 6, 7}), 0, 0, "backward dx1");
}

TEST(Concat, RepeatedAndEmptyParts) {
  // concat([a, empty, a]) of a = [1 | 2] (C=1) with a zero-channel part in between:
  // y = [1 1 | 2 2]; backward adds both slices into a's gradient: da = [1+2 | 3+4].
  const Tensor a = from_values({1, 1, 2, 1}, {1, 2});
  const Tensor none = Tensor::empty({1, 1, 2, 0}, DType::kF32, Device::kCPU);
  Tensor y = Tensor::empty({1, 1, 2, 2}, DType::kF32, Device::kCPU);
  concat_forward({a, none, a}, y);
  test::expect_close(y, from_values({1, 1, 2, 2}, {1, 1, 2, 2}), 0, 0, "forward");
  Tensor da = Tensor::empty({1, 1, 2, 1}, DType::kF32, Device::kCPU);
  concat_backward(from_values({1, 1, 2, 2}, {1, 2, 3, 4}), {da, none, da});
  test::expect_close(da, from_values({1, 1, 2, 1}, {3, 7}), 0, 0, "backward");
}

TEST(Split, HandComputedChannels2And1) {
  // x (1, 1, 2, 3) = [1 2 3 | 4 5 6] split into C=2 and C=1: y0 = [1 2 | 4 5], y1 = [3 | 6].
  const Tensor x = from_values({1, 1, 2, 3}, {1, 2, 3, 4, 5, 6});
  std::vector<Tensor> ys = parts_like(x.shape(), {2, 1}, DType::kF32, Device::kCPU);
  split_forward(x, ys);
  test::expect_close(ys[0], from_values({1, 1, 2, 2}, {1, 2, 4, 5}), 0, 0, "forward y0");
  test::expect_close(ys[1], from_values({1, 1, 2, 1}, {3, 6}), 0, 0, "forward y1");
  // dy0 = [10 20 | 40 50], dy1 = [30 | 60] into dx = 1 everywhere: dx = 1 + [10 20 30 | 40 50 60].
  Tensor dx = from_values({1, 1, 2, 3}, {1, 1, 1, 1, 1, 1});
  split_backward({from_values({1, 1, 2, 2}, {10, 20, 40, 50}), from_values({1, 1, 2, 1}, {30, 60})}, dx);
  test::expect_close(dx, from_values({1, 1, 2, 3}, {11, 21, 31, 41, 51, 61}), 0, 0, "backward");
}

TEST(Concat, GradientCheckDouble) {
  std::vector<Tensor> xs;
  for (int64_t c : {3, 1, 2}) xs.push_back(test::random_tensor({2, 3, 4, c}, DType::kF64, 10 + c));
  test::check_gradients(
      xs, {"xs[0]", "xs[1]", "xs[2]"},
      [&] {
        Tensor y = Tensor::empty({2, 3, 4, 6}, DType::kF64, Device::kCPU);
        concat_forward(xs, y);
        return std::vector<Tensor>{y};
      },
      [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) { concat_backward(dy[0], g); });
}

TEST(Split, GradientCheckDouble) {
  Tensor x = test::random_tensor({2, 3, 4, 6}, DType::kF64, 1);
  test::check_gradients(
      {x}, {"x"},
      [&] {
        std::vector<Tensor> ys = parts_like(x.shape(), {3, 1, 2}, DType::kF64, Device::kCPU);
        split_forward(x, ys);
        return ys;
      },
      [&](const std::vector<Tensor>& dys, std::vector<Tensor>& g) { split_backward(dys, g[0]); });
}

std::vector<Tensor> on_gpu(const std::vector<Tensor>& ts, DType dt) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.to(Device::kCUDA, dt));
  return out;
}

std::vector<Tensor> bf16_rounded(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(test::round_to_bf16(t));
  return out;
}

TEST(ConcatSplit, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  // Channels 7, 1, 3: one element per thread; 16, 8, 24: 16-byte packs (bf16 and f32).
  for (const std::vector<int64_t>& channels :
       {std::vector<int64_t>{7, 1, 3}, std::vector<int64_t>{16, 8, 24}})
    for (DType dt : {DType::kF32, DType::kBF16}) {
      const int64_t c = channels[0] + channels[1] + channels[2];
      for (const Shape& pix : {Shape{1, 13, 17, c}, Shape{3, 13, 17, c}, Shape{2, 1, 1, c}}) {
        SCOPED_TRACE(cat(dtype_name(dt), " ", pix.str()));
        // Concat and split forward copy values: exact. Backward adds one f32 value to another
        // exactly as the CPU does, so f32 is bit-identical (tolerance 0); bf16 then rounds
        // that f32 sum once to 8 significant bits, at most half an ulp = 2^-8 of the value.
        const double rtol = dt == DType::kF32 ? 0 : 1.0 / 256;
        // The CPU reference sees exactly the inputs the GPU sees (bf16-rounded in bf16 runs).
        std::vector<Tensor> parts, dparts0;
        for (size_t i = 0; i < channels.size(); ++i) {
          const Shape s{pix[0], pix[1], pix[2], channels[i]};
          parts.push_back(test::random_tensor(s, DType::kF32, 20 + i));
          dparts0.push_back(test::random_tensor(s, DType::kF32, 30 + i));
        }
        Tensor whole = test::random_tensor(pix, DType::kF32, 2),
               dwhole0 = test::random_tensor(pix, DType::kF32, 3);
        if (dt == DType::kBF16) {
          parts = bf16_rounded(parts), dparts0 = bf16_rounded(dparts0);
          whole = test::round_to_bf16(whole), dwhole0 = test::round_to_bf16(dwhole0);
        }

        // concat: parts -> y; backward: whole (as dy) -> dparts0 + slices.
        const Tensor y = Tensor::empty(pix, DType::kF32, Device::kCPU);
        concat_forward(parts, y);
        std::vector<Tensor> dxs;
        for (const Tensor& t : dparts0) dxs.push_back(t.to(Device::kCPU));
        concat_backward(whole, dxs);
        const Tensor yg = Tensor::empty(pix, dt, Device::kCUDA);
        const std::vector<Tensor> dxsg = on_gpu(dparts0, dt);
        concat_forward(on_gpu(parts, dt), yg);
        concat_backward(whole.to(Device::kCUDA, dt), dxsg);
        // Overwriting parts 0 and 2 (from the starting gradients) on both sides.
        std::vector<Tensor> dxo;
        for (const Tensor& t : dparts0) dxo.push_back(t.to(Device::kCPU));
        const std::vector<Tensor> dxog = on_gpu(dparts0, dt);
        concat_backward(whole, dxo, {}, {true, false, true});
        concat_backward(whole.to(Device::kCUDA, dt), dxog, {}, {true, false, true});

        // split: whole -> ys; backward: parts (as dys) -> dwhole0 + parts.
        const std::vector<Tensor> ys = parts_like(pix, channels, DType::kF32, Device::kCPU);
        split_forward(whole, ys);
        const Tensor dx = dwhole0.to(Device::kCPU);
        split_backward(parts, dx);
        const std::vector<Tensor> ysg = parts_like(pix, channels, dt, Device::kCUDA);
        const Tensor dxg = dwhole0.to(Device::kCUDA, dt);
        split_forward(whole.to(Device::kCUDA, dt), ysg);
        split_backward(on_gpu(parts, dt), dxg);
        const Tensor dxo_split = dwhole0.to(Device::kCPU), dxog_split = dwhole0.to(Device::kCUDA, dt);
        split_backward(parts, dxo_split, {}, true);
        split_backward(on_gpu(parts, dt), dxog_split, {}, true);
        synchronize();
        test::expect_close(dxog_split, dxo_split, 0, 0, "split backward overwritten");
        for (size_t i = 0; i < channels.size(); ++i)
          test::expect_close(dxog[i], dxo[i], 0, rtol, cat("concat backward part ", i, ", 0 and 2 overwritten"));

        test::expect_close(yg, y, 0, 0, "concat forward");
        test::expect_close(dxg, dx, 0, rtol, "split backward");
        for (size_t i = 0; i < channels.size(); ++i) {
          test::expect_close(dxsg[i], dxs[i], 0, rtol, cat("concat backward part ", i));
          test::expect_close(ysg[i], ys[i], 0, 0, cat("split forward part ", i));
        }
      }
    }
}

// Overwriting backward: the parts flagged (concat) or the whole (split) end as the slices
// alone, whatever they held; the others still accumulate.
TEST(ConcatSplit, OverwritingBackward) {
  const std::vector<int64_t> channels = {2, 3, 1};
  const Shape pix{2, 3, 4, 6};
  const Tensor dy = test::random_tensor(pix, DType::kF32, 1);
  std::vector<Tensor> zero_parts = parts_like(pix, channels, DType::kF32, Device::kCPU), dxs;
  concat_backward(dy, zero_parts);  // the slices alone
  for (size_t i = 0; i < channels.size(); ++i)
    dxs.push_back(test::random_tensor({2, 3, 4, channels[i]}, DType::kF32, 10 + i));
  const Tensor kept = dxs[1].to(Device::kCPU);
  concat_backward(dy, dxs, {}, {true, false, true});
  test::expect_close(dxs[0], zero_parts[0], 0, 0, "part 0 overwritten");
  test::expect_close(dxs[2], zero_parts[2], 0, 0, "part 2 overwritten");
  Tensor want1 = kept.to(Device::kCPU);
  concat_backward(dy, {parts_like(pix, {2}, DType::kF32, Device::kCPU)[0], want1,
                       parts_like(pix, {1}, DType::kF32, Device::kCPU)[0]});
  test::expect_close(dxs[1], want1, 0, 0, "part 1 accumulated");
  test::expect_error([&] { concat_backward(dy, dxs, {}, {true}); }, {"concat_backward", "1 overwrite flags for 3"});

  Tensor dx = test::random_tensor(pix, DType::kF32, 5);
  split_backward(zero_parts, dx, {}, true);
  test::expect_close(dx, dy, 0, 0, "split backward overwritten");
}

TEST(ConcatSplit, BadArgumentsNameTheOpAndShapes) {
  const Tensor a = Tensor::empty({1, 4, 4, 2}, DType::kF32, Device::kCPU);
  const Tensor b_bad_h = Tensor::empty({1, 3, 4, 1}, DType::kF32, Device::kCPU);
  const Tensor y = Tensor::empty({1, 4, 4, 3}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        concat_forward({a, b_bad_h}, y);
      },
      {"concat_forward", "xs[1]", "(1, 3, 4, 1)", "(1, 4, 4, 3)"});
  // Channel counts 2 + 2 != 3.
  test::expect_error(
      [&] {
        concat_forward({a, a}, y);
      },
      {"concat_forward", "(1, 4, 4, 2), (1, 4, 4, 2)", "sum to 4", "(1, 4, 4, 3)"});
  test::expect_error([&] { split_forward(y, {a, a}); }, {"split_forward", "sum to 4", "(1, 4, 4, 3)"});
  test::expect_error([&] { split_backward({a, b_bad_h}, y); }, {"split_backward", "dys[1]", "(1, 3, 4, 1)"});
  const Tensor ab = Tensor::empty({1, 4, 4, 2}, DType::kBF16, Device::kCPU);
  const Tensor yb = Tensor::empty({1, 4, 4, 4}, DType::kBF16, Device::kCPU);
  test::expect_error(
      [&] {
        concat_forward({ab, ab}, yb);
      },
      {"concat_forward", "unsupported storage type bf16", "(1, 4, 4, 4)"});
  // Mixed storage types, no parts, an undefined entry, a part overlapping the whole.
  const Tensor y4 = Tensor::empty({1, 4, 4, 4}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        concat_forward({a, ab}, y4);
      },
      {"concat_forward", "different storage types", "xs[1]"});
  test::expect_error([&] { concat_forward({}, y); }, {"concat_forward", "at least one part"});
  test::expect_error(
      [&] {
        concat_backward(y, {a, Tensor()});
      },
      {"concat_backward", "dxs[1] has no storage"});
  const Tensor inside = Tensor::view(y4.raw(), {1, 4, 4, 2}, DType::kF32, Device::kCPU);
  test::expect_error([&] { split_forward(y4, {inside, a}); }, {"split_forward", "ys[0] overlaps x"});
}

}  // namespace
}  // namespace vt
