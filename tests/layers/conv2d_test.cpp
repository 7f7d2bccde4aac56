// Conv2d tests: hand values, double-precision gradient check, a naive direct-loop oracle
// over many configurations (the library's im2col + BLAS and grouped paths, f64 and f32),
// GPU parity (f32, bf16), and bad arguments.
#include "layers/conv2d.h"

#include <cstring>
#include <string>
#include <vector>

#include "layers/check.h"
#include "tests/test_util.h"

#ifdef VT_WITH_CUDA
#include "layers/conv2d_igemm.cuh"
#endif

namespace vt {
namespace {

using test::from_values;
using test::values;

// Scratch for one call, sized and typed the way the trainer plans it: f32 words covering
// conv2d_workspace_bytes.
Tensor make_workspace(const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  const size_t bytes = conv2d_workspace_bytes(x.shape(), w.shape(), p, x.dtype(), x.device());
  if (bytes == 0) return Tensor{};
  return Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::kF32, x.device());
}

Tensor run_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dParams& p) {
  Tensor y = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), p), x.dtype(), x.device());
  conv2d_forward(x, w, b, y, p, make_workspace(x, w, p));
  return y;
}

void run_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                  const Tensor* db, const Conv2dParams& p) {
  conv2d_backward(x, w, dy, dx, dw, db, p, make_workspace(x, w, p));
}

// ---------------------------------------------------------------------------------------
// The oracle: the definition, written as directly as possible, in double.
//   y[n, ho, wo, co] = b[co] + sum_{kh, kw, ci} x[n, ho sh - ph + kh, wo sw - pw + kw, g cin_g + ci]
//                                              w[co, kh, kw, ci],    g = co / cout_g
// and, for L = <dy, y>, its derivatives read off the same seven loops.
struct Naive {
  std::vector<double> y, dx, dw, db;
};

Naive naive_conv(const Tensor& xt, const Tensor& wt, const Tensor* bt, const Tensor& dyt,
                 const Conv2dParams& p) {
  const std::vector<double> x = values(xt), w = values(wt), dy = values(dyt);
  const std::vector<double> b = bt ? values(*bt) : std::vector<double>(wt.dim(0), 0.0);
  const int64_t N = xt.dim(0), H = xt.dim(1), W = xt.dim(2), Cin = xt.dim(3);
  const int64_t Cout = wt.dim(0), KH = wt.dim(1), KW = wt.dim(2), Cig = wt.dim(3);
  const int64_t Ho = (H + 2 * p.pad_h - KH) / p.stride_h + 1, Wo = (W + 2 * p.pad_w - KW) / p.stride_w + 1;
  const int64_t Cog = Cout / p.groups;
  Naive r;
  r.y.assign(N * Ho * Wo * Cout, 0.0);
  r.dx.assign(x.size(), 0.0);
  r.dw.assign(w.size(), 0.0);
  r.db.assign(Cout, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ho = 0; ho < Ho; ++ho)
      for (int64_t wo = 0; wo < Wo; ++wo)
        for (int64_t co = 0; co < Cout; ++co) {
          const int64_t yi = ((n * Ho + ho) * Wo + wo) * Cout + co;
          r.y[yi] = b[co];
          r.db[co] += dy[yi];
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw)
              for (int64_t ci = 0; ci < Cig; ++ci) {
                const int64_t hi = ho * p.stride_h - p.pad_h + kh, wi = wo * p.stride_w - p.pad_w + kw;
                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;  // zero padding
                const int64_t xi = ((n * H + hi) * W + wi) * Cin + (co / Cog) * Cig + ci;
                const int64_t wj = ((co * KH + kh) * KW + kw) * Cig + ci;
                r.y[yi] += x[xi] * w[wj];
                r.dx[xi] += dy[yi] * w[wj];
                r.dw[wj] += dy[yi] * x[xi];
              }
        }
  return r;
}

// start + delta, as a tensor shaped like `like` (f64): what an accumulating gradient holds.
Tensor plus(const Tensor& like, const std::vector<double>& start, const std::vector<double>& delta) {
  std::vector<double> v(start.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = start[i] + delta[i];
  return from_values(like.shape(), v, DType::kF64);
}

// ---------------------------------------------------------------------------------------

TEST(Conv2d, OutputShapeAndWorkspaceBytes) {
  const Conv2dParams s2p1{2, 2, 1, 1, 1};
  EXPECT_EQ(conv2d_output_shape({3, 13, 17, 7}, {5, 3, 3, 7}, s2p1), Shape({3, 7, 9, 5}));
  EXPECT_EQ(conv2d_output_shape({1, 3, 3, 1}, {1, 2, 2, 1}, s2p1), Shape({1, 2, 2, 1}));  // floor(3/2)+1
  EXPECT_EQ(conv2d_output_shape({1, 13, 17, 7}, {4, 1, 3, 7}, {}), Shape({1, 13, 15, 4}));
  // CPU im2col: one image, (Ho Wo, KH KW Cin) = (63, 63) elements.
  EXPECT_EQ(conv2d_workspace_bytes({3, 13, 17, 7}, {5, 3, 3, 7}, s2p1, DType::kF32, Device::kCPU),
            63u * 63u * 4u);
  EXPECT_EQ(conv2d_workspace_bytes({3, 13, 17, 7}, {5, 3, 3, 7}, s2p1, DType::kF64, Device::kCPU),
            63u * 63u * 8u);
  // 1x1 / stride 1 / pad 0 reads x directly; grouped convs are direct loops; on CUDA only the
  // bias gradient's slices need room, and 189 positions are one slice.
  EXPECT_EQ(conv2d_workspace_bytes({3, 13, 17, 7}, {5, 1, 1, 7}, {}, DType::kF32, Device::kCPU), 0u);
  EXPECT_EQ(conv2d_workspace_bytes({3, 13, 17, 7}, {7, 3, 3, 1}, {1, 1, 1, 1, 7}, DType::kF32, Device::kCPU),
            0u);
  EXPECT_EQ(conv2d_workspace_bytes({3, 13, 17, 7}, {5, 3, 3, 7}, s2p1, DType::kBF16, Device::kCUDA), 0u);
  // A strided 1x1 conv still needs im2col.
  EXPECT_EQ(conv2d_workspace_bytes({1, 4, 4, 3}, {2, 1, 1, 3}, {2, 2, 0, 0, 1}, DType::kF32, Device::kCPU),
            4u * 3u * 4u);
}

// x = [1 2 3; 4 5 6; 7 8 9] (1x3x3x1), w = [1 2; 3 4] (1x2x2x1), b = 0.5, dy = [1 2; 3 -1].
// Gradients start at 1 everywhere to show that they accumulate.
TEST(Conv2d, HandComputedStride1) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = from_values({1, 3, 3, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, dt);
    const Tensor w = from_values({1, 2, 2, 1}, {1, 2, 3, 4}, dt);
    const Tensor b = from_values({1}, {0.5}, dt);
    const Conv2dParams p;
    // y00 = 1*1 + 2*2 + 4*3 + 5*4 = 37, y01 = 2 + 6 + 15 + 24 = 47,
    // y10 = 4 + 10 + 21 + 32 = 67,     y11 = 5 + 12 + 24 + 36 = 77; each + 0.5.
    test::expect_close(run_forward(x, w, &b, p), from_values({1, 2, 2, 1}, {37.5, 47.5, 67.5, 77.5}), 0, 0,
                       "y");

    const Tensor dy = from_values({1, 2, 2, 1}, {1, 2, 3, -1}, dt);
    Tensor dx = from_values({1, 3, 3, 1}, std::vector<double>(9, 1.0), dt);
    Tensor dw = from_values({1, 2, 2, 1}, {1, 1, 1, 1}, dt), db = from_values({1}, {1}, dt);
    run_backward(x, w, dy, &dx, &dw, &db, p);
    // dx[h, w] = sum dy[ho, wo] w[h - ho, w - wo] (a full correlation):
    //   dx00 = 1*1 = 1, dx01 = 1*2 + 2*1 = 4, dx02 = 2*2 = 4,
    //   dx10 = 1*3 + 3*1 = 6, dx11 = 1*4 + 2*3 + 3*2 - 1*1 = 15, dx12 = 2*4 - 1*2 = 6,
    //   dx20 = 3*3 = 9, dx21 = 3*4 - 1*3 = 9, dx22 = -1*4 = -4;       then + 1.
    test::expect_close(dx, from_values({1, 3, 3, 1}, {2, 5, 5, 7, 16, 7, 10, 10, -3}), 0, 0, "dx");
    // dw[kh, kw] = sum dy[ho, wo] x[ho + kh, wo + kw]:
    //   dw00 = 1*1 + 2*2 + 3*4 - 1*5 = 12, dw01 = 2 + 6 + 15 - 6 = 17,
    //   dw10 = 4 + 10 + 21 - 8 = 27,       dw11 = 5 + 12 + 24 - 9 = 32;  then + 1.
    // (Check: <dw, w> = 12 + 34 + 81 + 128 = 255 = <dy, y - b> = 37 + 94 + 201 - 77.)
    test::expect_close(dw, from_values({1, 2, 2, 1}, {13, 18, 28, 33}), 0, 0, "dw");
    test::expect_close(db, from_values({1}, {1 + 5}), 0, 0, "db");  // 1 + 2 + 3 - 1 = 5
  }
}

// The same x, w, b, dy with stride 2 and pad 1: Ho = (3 + 2 - 2) / 2 + 1 = 2, output ho
// reads input rows 2 ho - 1 + {0, 1}, i.e. {-1, 0} and {1, 2}; same for columns.
TEST(Conv2d, HandComputedStride2Padded) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = from_values({1, 3, 3, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, dt);
    const Tensor w = from_values({1, 2, 2, 1}, {1, 2, 3, 4}, dt);
    const Tensor b = from_values({1}, {0.5}, dt);
    const Conv2dParams p{2, 2, 1, 1, 1};
    // y00 = w11 x00 = 4, y01 = w10 x01 + w11 x02 = 6 + 12 = 18,
    // y10 = w01 x10 + w11 x20 = 8 + 28 = 36, y11 = 1*5 + 2*6 + 3*8 + 4*9 = 77; each + 0.5.
    test::expect_close(run_forward(x, w, &b, p), from_values({1, 2, 2, 1}, {4.5, 18.5, 36.5, 77.5}), 0, 0,
                       "y");

    const Tensor dy = from_values({1, 2, 2, 1}, {1, 2, 3, -1}, dt);
    Tensor dx = from_values({1, 3, 3, 1}, std::vector<double>(9, 1.0), dt);
    Tensor dw = from_values({1, 2, 2, 1}, {1, 1, 1, 1}, dt), db = from_values({1}, {1}, dt);
    run_backward(x, w, dy, &dx, &dw, &db, p);
    // Each input is read exactly once, by output ho = (h + 1) / 2 through kh = h + 1 - 2 ho:
    //   dx00 = dy00 w11 = 4, dx01 = dy01 w10 = 6, dx02 = dy01 w11 = 8,
    //   dx10 = dy10 w01 = 6, dx11 = dy11 w00 = -1, dx12 = dy11 w01 = -2,
    //   dx20 = dy10 w11 = 12, dx21 = dy11 w10 = -3, dx22 = dy11 w11 = -4;   then + 1.
    test::expect_close(dx, from_values({1, 3, 3, 1}, {5, 7, 9, 7, 0, -1, 13, -2, -3}), 0, 0, "dx");
    // dw[kh, kw] = sum dy[ho, wo] x[2 ho - 1 + kh, 2 wo - 1 + kw] (padding reads 0):
    //   dw00 = -1*5 = -5, dw01 = 3*4 - 1*6 = 6, dw10 = 2*2 - 1*8 = -4,
    //   dw11 = 1*1 + 2*3 + 3*7 - 1*9 = 19;                                  then + 1.
    // (Check: <dw, w> = -5 + 12 - 12 + 76 = 71 = <dy, y - b> = 4 + 36 + 108 - 77.)
    test::expect_close(dw, from_values({1, 2, 2, 1}, {-4, 7, -3, 20}), 0, 0, "dw");
    test::expect_close(db, from_values({1}, {6}), 0, 0, "db");
  }
}

// Depthwise, 1x1 image, 2 channels: x = [3, 5], w = [2, -1], b = [0.25, 0.5], dy = [1, 2].
TEST(Conv2d, HandComputedDepthwise) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = from_values({1, 1, 1, 2}, {3, 5}, dt);
    const Tensor w = from_values({2, 1, 1, 1}, {2, -1}, dt);
    const Tensor b = from_values({2}, {0.25, 0.5}, dt);
    const Conv2dParams p{1, 1, 0, 0, 2};
    // y = [3*2 + 0.25, 5*(-1) + 0.5]: each channel sees only its own filter.
    test::expect_close(run_forward(x, w, &b, p), from_values({1, 1, 1, 2}, {6.25, -4.5}), 0, 0, "y");
    const Tensor dy = from_values({1, 1, 1, 2}, {1, 2}, dt);
    Tensor dx = from_values({1, 1, 1, 2}, {1, 1}, dt), dw = from_values({2, 1, 1, 1}, {1, 1}, dt);
    Tensor db = from_values({2}, {1, 1}, dt);
    run_backward(x, w, dy, &dx, &dw, &db, p);
    test::expect_close(dx, from_values({1, 1, 1, 2}, {1 + 1 * 2, 1 + 2 * -1}), 0, 0, "dx");
    test::expect_close(dw, from_values({2, 1, 1, 1}, {1 + 1 * 3, 1 + 2 * 5}), 0, 0, "dw");
    test::expect_close(db, from_values({2}, {1 + 1, 1 + 2}), 0, 0, "db");
  }
}

// ---------------------------------------------------------------------------------------

struct GradCase {
  const char* name;
  Shape x, w;
  Conv2dParams p;
};

TEST(Conv2d, GradientCheckDouble) {
  const GradCase cases[] = {
      {"dense k3 s2 p1", {2, 7, 6, 4}, {5, 3, 3, 4}, {2, 2, 1, 1, 1}},
      {"dense k2 s1 p0 (even kernel)", {2, 5, 6, 3}, {4, 2, 2, 3}, {1, 1, 0, 0, 1}},
      {"pointwise", {2, 4, 5, 6}, {3, 1, 1, 6}, {1, 1, 0, 0, 1}},
      {"grouped k3 s2 p1", {2, 7, 6, 4}, {6, 3, 3, 2}, {2, 2, 1, 1, 2}},
      {"depthwise k3 s2 p1", {2, 7, 6, 4}, {4, 3, 3, 1}, {2, 2, 1, 1, 4}},
  };
  for (const GradCase& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor x = test::random_tensor(c.x, DType::kF64, 1);
    Tensor w = test::random_tensor(c.w, DType::kF64, 2);
    Tensor b = test::random_tensor({c.w[0]}, DType::kF64, 3);
    test::check_gradients(
        {x, w, b}, {"x", "w", "b"}, [&] { return std::vector<Tensor>{run_forward(x, w, &b, c.p)}; },
        [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) {
          run_backward(x, w, dy[0], &g[0], &g[1], &g[2], c.p);
        });
  }
}

// ---------------------------------------------------------------------------------------

struct Channels {
  int64_t cin, cout, groups;
};

// The library's CPU conv (im2col + BLAS for groups 1, direct loops otherwise) against the
// seven-loop oracle, over every combination of kernel, stride, padding and grouping, in
// f64 and f32, with and without bias, batch 1 and 3, and with each of dx, dw, db sometimes
// absent.
TEST(Conv2d, CpuMatchesNaiveOracle) {
  const std::pair<int, int> kernels[] = {{1, 1}, {2, 2}, {3, 3}, {5, 5}, {1, 3}};
  const std::pair<int, int> strides[] = {{1, 1}, {2, 2}, {3, 3}, {2, 1}};
  const std::pair<int, int> pads[] = {{0, 0}, {1, 1}, {2, 2}, {1, 0}};
  const Channels channels[] = {{7, 5, 1}, {6, 4, 2}, {7, 7, 7}, {3, 6, 3}};  // dense, grouped, depthwise, x2
  int config = 0;
  for (auto [kh, kw] : kernels)
    for (auto [sh, sw] : strides)
      for (auto [ph, pw] : pads)
        for (const Channels& ch : channels) {
          ++config;
          const Conv2dParams p{sh, sw, ph, pw, static_cast<int>(ch.groups)};
          const int64_t n = config % 2 ? 3 : 1;
          const bool small = config % 3 == 0;  // a 6x5 image now and then: kernel covers most of it
          const Shape xs{n, small ? 6 : 13, small ? 5 : 17, ch.cin}, ws{ch.cout, kh, kw, ch.cin / ch.groups};
          if (xs[1] + 2 * ph < kh || xs[2] + 2 * pw < kw) continue;
          const bool with_bias = (config / 2) % 2 == 0, with_dx = config % 5 != 0, with_dw = config % 7 != 0;
          const std::string what = "kernel " + std::to_string(kh) + "x" + std::to_string(kw) + " stride " +
                                   std::to_string(sh) + "x" + std::to_string(sw) + " pad " +
                                   std::to_string(ph) + "x" + std::to_string(pw) + " groups " +
                                   std::to_string(ch.groups) + " x " + xs.str() + " w " + ws.str() +
                                   (with_bias ? " bias" : "");
          SCOPED_TRACE(what);

          // f32-representable values, so the f32 and f64 runs and the oracle see the same inputs.
          const Tensor x = test::random_tensor(xs, DType::kF32, 10 + config).to(Device::kCPU, DType::kF64);
          const Tensor w = test::random_tensor(ws, DType::kF32, 20 + config).to(Device::kCPU, DType::kF64);
          const Tensor b =
              test::random_tensor({ch.cout}, DType::kF32, 30 + config).to(Device::kCPU, DType::kF64);
          const Shape ys = conv2d_output_shape(xs, ws, p);
          const Tensor dy = test::random_tensor(ys, DType::kF32, 40 + config).to(Device::kCPU, DType::kF64);
          const Naive ref = naive_conv(x, w, with_bias ? &b : nullptr, dy, p);
          // Gradients start non-zero: the op must add to them.
          const Tensor dx0 = test::random_tensor(xs, DType::kF32, 50 + config).to(Device::kCPU, DType::kF64);
          const Tensor dw0 = test::random_tensor(ws, DType::kF32, 60 + config).to(Device::kCPU, DType::kF64);
          const Tensor db0 =
              test::random_tensor({ch.cout}, DType::kF32, 70 + config).to(Device::kCPU, DType::kF64);

          for (DType dt : {DType::kF64, DType::kF32}) {
            SCOPED_TRACE(dtype_name(dt));
            const Tensor xt = x.to(Device::kCPU, dt), wt = w.to(Device::kCPU, dt),
                         bt = b.to(Device::kCPU, dt);
            const Tensor dyt = dy.to(Device::kCPU, dt);
            Tensor dx = dx0.to(Device::kCPU, dt), dw = dw0.to(Device::kCPU, dt),
                   db = db0.to(Device::kCPU, dt);
            const Tensor y = run_forward(xt, wt, with_bias ? &bt : nullptr, p);
            run_backward(xt, wt, dyt, with_dx ? &dx : nullptr, with_dw ? &dw : nullptr,
                         with_bias ? &db : nullptr, p);
            // f64: only summation order differs from the oracle (sums of at most 663 terms of
            // size <= 1, so ~1e-13). f32: each output sums at most 175 products (5*5*7) and each
            // dw element at most 663 (3*13*17) of size <= 1; f32 rounding of such sums stays
            // well under 1e-4 absolute (random-walk error ~ sqrt(n) * 6e-8 * |partial sums|),
            // while an indexing error is of order 0.1 and up.
            const double atol = dt == DType::kF64 ? 1e-10 : 2e-4, rtol = dt == DType::kF64 ? 1e-10 : 1e-4;
            test::expect_close(y, from_values(ys, ref.y, DType::kF64), atol, rtol, "y");
            const Tensor zero_x = from_values(xs, std::vector<double>(xs.numel(), 0.0), DType::kF64);
            const Tensor zero_w = from_values(ws, std::vector<double>(ws.numel(), 0.0), DType::kF64);
            const Tensor zero_b = from_values({ch.cout}, std::vector<double>(ch.cout, 0.0), DType::kF64);
            // An absent gradient leaves its buffer untouched.
            test::expect_close(dx, plus(dx0, values(dx0), with_dx ? ref.dx : values(zero_x)), atol, rtol,
                               "dx");
            test::expect_close(dw, plus(dw0, values(dw0), with_dw ? ref.dw : values(zero_w)), atol, rtol,
                               "dw");
            test::expect_close(db, plus(db0, values(db0), with_bias ? ref.db : values(zero_b)), atol, rtol,
                               "db");
          }
        }
}

// ---------------------------------------------------------------------------------------

struct ParityCase {
  const char* name;
  Shape x, w;
  Conv2dParams p;
};

TEST(Conv2d, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  const ParityCase cases[] = {
      {"k3 s2 p1 batch 1", {1, 13, 17, 7}, {5, 3, 3, 7}, {2, 2, 1, 1, 1}},
      {"k3 s2 p1 batch 3", {3, 13, 17, 7}, {5, 3, 3, 7}, {2, 2, 1, 1, 1}},
      {"k3 s1 p1", {3, 13, 17, 7}, {9, 3, 3, 7}, {1, 1, 1, 1, 1}},
      {"k1", {3, 13, 17, 7}, {9, 1, 1, 7}, {}},
      {"k2 s2 (even)", {3, 13, 17, 7}, {4, 2, 2, 7}, {2, 2, 0, 0, 1}},
      {"k1x3 s(2,1) p(0,1)", {1, 13, 17, 7}, {5, 1, 3, 7}, {2, 1, 0, 1, 1}},
      {"k5 s3 p2 groups 2", {3, 13, 17, 6}, {4, 5, 5, 3}, {3, 3, 2, 2, 2}},
      {"depthwise k3 s2 p1", {3, 13, 17, 7}, {7, 3, 3, 1}, {2, 2, 1, 1, 7}},
      {"depthwise k3 s1 p1 batch 1", {1, 13, 17, 7}, {7, 3, 3, 1}, {1, 1, 1, 1, 7}},
      // 16 x 40 x 40 = 25600 positions per dw block: many strides of the 256 threads.
      {"k3 s1 p1 wide", {16, 40, 40, 16}, {32, 3, 3, 16}, {1, 1, 1, 1, 1}},
      // bf16 runs take the tensor-core implicit GEMM for groups 1 (conv2d_igemm.h): 16-byte
      // loads (channels % 8 == 0), 13 M tiles, the weight gradient transposed (288 x 64) in 6
      // slices, the input gradient (N = 32) on the 128 x 32 tile; the wide case above takes
      // that tile for all three products (N = 32, 16 and a transposed 144 x 32 weight
      // gradient in 100 slices); three N tiles for a 1x1; the stem's scalar loads. Vector
      // problems run the cp.async walks: 36 K steps through the 3-stage ring (deep), 8
      // channels a tap (every step crosses 4 taps) with padding on both sides.
      {"igemm k3 s2 p1 vector", {4, 40, 40, 32}, {64, 3, 3, 32}, {2, 2, 1, 1, 1}},
      {"igemm k3 s1 p1 deep", {2, 10, 10, 128}, {64, 3, 3, 128}, {1, 1, 1, 1, 1}},
      {"igemm k5 s1 p2 Cin 8", {2, 11, 9, 8}, {16, 5, 5, 8}, {1, 1, 2, 2, 1}},
      // 36864 pixels: enough 128-row tiles that the plan takes the 128 x 128 tile for 128
      // columns (igemm::tile_n), in the forward of both and the input gradient of the 1x1.
      {"igemm 128 x 128 tile k1", {4, 96, 96, 128}, {128, 1, 1, 128}, {}},
      {"igemm 128 x 128 tile k3", {4, 96, 96, 16}, {128, 3, 3, 16}, {1, 1, 1, 1, 1}},
      {"igemm k1 136 outputs", {2, 24, 24, 48}, {136, 1, 1, 48}, {}},
      {"igemm stem Cin 3", {2, 64, 64, 3}, {16, 3, 3, 3}, {2, 2, 1, 1, 1}},
      {"igemm k1 s2 (pixels no tap reaches)", {2, 12, 12, 16}, {32, 1, 1, 16}, {2, 2, 0, 0, 1}},
  };
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const ParityCase& c : cases) {
      // Under the CUDA emulator (minutes a case at these sizes): not the f32 runs of the
      // tensor-core cases (the direct kernels of the cases above, larger), nor the 128 x 128
      // tile with 9 taps (that tile is the k1 case's; 9 taps, the k3 cases').
      const std::string name = c.name;
      if (test::kCudaEmulated && ((dt == DType::kF32 && name.rfind("igemm", 0) == 0) ||
                                  name == "igemm 128 x 128 tile k3"))
        continue;
      SCOPED_TRACE(std::string(c.name) + " " + dtype_name(dt) + " x " + c.x.str() + " w " + c.w.str());
      const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
      // The CPU reference sees exactly the inputs the GPU sees (bf16-rounded in bf16 runs:
      // x, w, dy and the starting dx, which the GPU keeps in bf16).
      Tensor x = test::random_tensor(c.x, DType::kF32, 1), w = test::random_tensor(c.w, DType::kF32, 2);
      Tensor dy = test::random_tensor(ys, DType::kF32, 3), dx0 = test::random_tensor(c.x, DType::kF32, 4);
      const Tensor b = test::random_tensor({c.w[0]}, DType::kF32, 5);
      const Tensor dw0 = test::random_tensor(c.w, DType::kF32, 6),
                   db0 = test::random_tensor({c.w[0]}, DType::kF32, 7);
      if (dt == DType::kBF16) {
        x = test::round_to_bf16(x), w = test::round_to_bf16(w);
        dy = test::round_to_bf16(dy), dx0 = test::round_to_bf16(dx0);
      }
      const Tensor y = run_forward(x, w, &b, c.p);
      Tensor dx = dx0.to(Device::kCPU), dw = dw0.to(Device::kCPU), db = db0.to(Device::kCPU);
      run_backward(x, w, dy, &dx, &dw, &db, c.p);

      const Tensor xg = x.to(Device::kCUDA, dt), wg = w.to(Device::kCUDA, dt), dyg = dy.to(Device::kCUDA, dt);
      const Tensor bg = b.to(Device::kCUDA);  // parameters and their grads stay f32
      Tensor dxg = dx0.to(Device::kCUDA, dt), dwg = dw0.to(Device::kCUDA), dbg = db0.to(Device::kCUDA);
      const Tensor yg = run_forward(xg, wg, &bg, c.p);
      run_backward(xg, wg, dyg, &dxg, &dwg, &dbg, c.p);
      synchronize();

      // Both sides accumulate in f32, in different orders. y and dx sum up to
      // 3*3*64 = 576 products of size <= 1, dw and db up to 25600: the order-dependent
      // f32 error is ~ sqrt(n) * 6e-8 * |partial sums|, below 1e-4 for y and dx and below
      // 1e-3 for the long dw sums (whose values reach ~100, so rtol carries most of it).
      // bf16 adds one final rounding of y and dx to 8 significant bits: at most 2^-9 = 0.2%
      // relative, so 1% with an atol for results near zero. dw and db are f32 in both runs.
      const bool bf = dt == DType::kBF16;
      test::expect_close(yg, y, bf ? 1e-2 : 1e-4, bf ? 1e-2 : 1e-4, "y");
      test::expect_close(dxg, dx, bf ? 1e-2 : 1e-4, bf ? 1e-2 : 1e-4, "dx");
      test::expect_close(dwg, dw, 1e-3, 1e-4, "dw");
      test::expect_close(dbg, db, 1e-3, 1e-4, "db");

      // Overwriting dx (a dx that only this conv writes): the garbage it held is gone.
      Conv2dParams over = c.p;
      over.overwrite_dx = true;
      Tensor dxo = dx0.to(Device::kCPU), dxog = dx0.to(Device::kCUDA, dt);
      run_backward(x, w, dy, &dxo, nullptr, nullptr, over);
      run_backward(xg, wg, dyg, &dxog, nullptr, nullptr, over);
      synchronize();
      test::expect_close(dxog, dxo, bf ? 1e-2 : 1e-4, bf ? 1e-2 : 1e-4, "dx overwritten");

      // Deterministic: a second identical backward adds bit-identical amounts (no atomics).
      Tensor dw1 = Tensor::empty(c.w, DType::kF32, Device::kCUDA),
             dw2 = Tensor::empty(c.w, DType::kF32, Device::kCUDA);
      Tensor dx1 = Tensor::empty(c.x, dt, Device::kCUDA), dx2 = Tensor::empty(c.x, dt, Device::kCUDA);
      run_backward(xg, wg, dyg, &dx1, &dw1, nullptr, c.p);
      run_backward(xg, wg, dyg, &dx2, &dw2, nullptr, c.p);
      synchronize();
      const Tensor h1 = dw1.to(Device::kCPU), h2 = dw2.to(Device::kCPU);
      EXPECT_EQ(std::memcmp(h1.raw(), h2.raw(), h1.nbytes()), 0) << "dw differs between identical runs";
      const Tensor g1 = dx1.to(Device::kCPU), g2 = dx2.to(Device::kCPU);
      EXPECT_EQ(std::memcmp(g1.raw(), g2.raw(), g1.nbytes()), 0) << "dx differs between identical runs";
    }
  }
}

#ifdef VT_WITH_CUDA
// The choices kernel_bench forces on the tensor-core forward (the tile width, the register
// path instead of the cp.async walks) change which warp and lane computes an output, not how:
// each output is the same MMAs over the same K order, so every choice gives the plan's bits.
TEST(Conv2d, GpuTilesAndLoadPathsAgree) {
  VT_REQUIRE_GPU();
  const ParityCase cases[] = {
      {"k3 s1 p1, 128 outputs", {2, 24, 24, 32}, {128, 3, 3, 32}, {1, 1, 1, 1, 1}},
      {"k1, 80 outputs", {2, 20, 20, 64}, {80, 1, 1, 64}, {}},
      {"k3 s2 p1, Cin 16", {2, 33, 31, 16}, {32, 3, 3, 16}, {2, 2, 1, 1, 1}},
  };
  for (const ParityCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Conv2dDims d = conv2d_dims(c.x, c.w, c.p);
    if (!cuda::conv2d_igemm_available(d)) GTEST_SKIP() << "no bf16 tensor cores on this GPU";
    const Tensor x = test::random_tensor(c.x, DType::kF32, 1).to(Device::kCUDA, DType::kBF16);
    const Tensor w = test::random_tensor(c.w, DType::kF32, 2).to(Device::kCUDA, DType::kBF16);
    const Tensor b = test::random_tensor({c.w[0]}, DType::kF32, 3).to(Device::kCUDA);
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    auto run = [&](cuda::IgemmChoice choice) {
      const Tensor y = Tensor::empty(ys, DType::kBF16, Device::kCUDA);
      cuda::conv2d_igemm_forward(d, x.data<__nv_bfloat16>(), w.data<__nv_bfloat16>(), b.data<float>(),
                                 y.data<__nv_bfloat16>(), nullptr, nullptr, choice);
      synchronize();
      return y.to(Device::kCPU);
    };
    const Tensor plan = run({});
    for (int width : {32, 64, 128})
      for (bool registers : {false, true}) {
        const Tensor y = run({width, registers});
        EXPECT_EQ(std::memcmp(y.raw(), plan.raw(), y.nbytes()), 0)
            << "128 x " << width << (registers ? ", register path" : ", cp.async walks");
      }
  }
}
#endif

// The tensor-core forward's per-tile column statistics (for the batch norm after it): each
// tile of kBM rows and each channel, (count, mean, M2) of y as stored, against double sums
// over the same bf16 values; y itself unchanged by asking for them. Rows: a partial last
// tile (M = 2 * 13 * 17 = 442), channels 24 (narrow tile), 136 (three wide N tiles).
TEST(Conv2d, GpuTileStatsDescribeTheOutput) {
  VT_REQUIRE_GPU();
  const ParityCase cases[] = {
      {"k3 s1 p1, 24 channels", {2, 13, 17, 16}, {24, 3, 3, 16}, {1, 1, 1, 1, 1}},
      {"k1, 136 channels", {2, 13, 17, 48}, {136, 1, 1, 48}, {}},
  };
  for (const ParityCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const int64_t tiles = conv2d_tile_stats_tiles(c.x, c.w, c.p, DType::kBF16, Device::kCUDA);
    const int64_t m = ys[0] * ys[1] * ys[2], cout = c.w[0];
    ASSERT_EQ(tiles, (m + 127) / 128) << "the tensor-core path should run here";
    const Tensor x = test::random_tensor(c.x, DType::kF32, 1).to(Device::kCUDA, DType::kBF16);
    const Tensor w = test::random_tensor(c.w, DType::kF32, 2).to(Device::kCUDA, DType::kBF16);
    const Tensor b = test::random_tensor({cout}, DType::kF32, 3, 1, 2).to(Device::kCUDA);
    const Tensor y1 = run_forward(x, w, &b, c.p);
    const Tensor y = Tensor::empty(ys, DType::kBF16, Device::kCUDA);
    const Tensor stats = Tensor::empty({tiles, cout, 3}, DType::kF32, Device::kCUDA);
    conv2d_forward(x, w, &b, y, c.p, make_workspace(x, w, c.p), {}, &stats);
    synchronize();
    const std::vector<double> yv = values(y), sv = values(stats);
    EXPECT_EQ(yv, values(y1)) << "y changed by the statistics";
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t n = 0; n < cout; ++n) {
        double count = 0, sum = 0, sq = 0;
        const int64_t r0 = t * 128, r1 = std::min(m, (t + 1) * 128);
        for (int64_t r = r0; r < r1; ++r) ++count, sum += yv[r * cout + n];
        const double mean = sum / count;
        for (int64_t r = r0; r < r1; ++r) sq += (yv[r * cout + n] - mean) * (yv[r * cout + n] - mean);
        const double* got = &sv[(t * cout + n) * 3];
        ASSERT_EQ(got[0], count) << "tile " << t << " channel " << n;
        // fp32 Welford over <= 128 values of size ~3 against double sums: ~1e-6 relative.
        ASSERT_NEAR(got[1], mean, 1e-5 * (1 + std::abs(mean))) << "tile " << t << " channel " << n;
        ASSERT_NEAR(got[2], sq, 1e-4 * (1 + sq)) << "tile " << t << " channel " << n;
      }
  }
}

// An empty batch is legal and does nothing.
TEST(Conv2d, EmptyBatch) {
  const Tensor x = Tensor::empty({0, 5, 5, 3}, DType::kF32, Device::kCPU);
  const Tensor w = test::random_tensor({2, 3, 3, 3}, DType::kF32, 1);
  const Conv2dParams p{1, 1, 1, 1, 1};
  const Tensor y = run_forward(x, w, nullptr, p);
  EXPECT_EQ(y.shape(), Shape({0, 5, 5, 2}));
  Tensor dw = Tensor::empty(w.shape(), DType::kF32, Device::kCPU);
  run_backward(x, w, y, nullptr, &dw, nullptr, p);
  for (double v : values(dw)) EXPECT_EQ(v, 0.0);
}

// ---------------------------------------------------------------------------------------

TEST(Conv2d, BadArgumentsNameTheOpAndShapes) {
  const DType f32 = DType::kF32;
  const Device cpu = Device::kCPU;
  const Tensor x = Tensor::empty({2, 8, 8, 4}, f32, cpu);
  const Tensor w = Tensor::empty({6, 3, 3, 4}, f32, cpu);
  const Tensor b = Tensor::empty({6}, f32, cpu);
  const Conv2dParams p{1, 1, 1, 1, 1};
  const Tensor ws = make_workspace(x, w, p);
  const Tensor y = Tensor::empty({2, 8, 8, 6}, f32, cpu);

  // Tile statistics: the CUDA tensor-core path only.
  EXPECT_EQ(conv2d_tile_stats_tiles(x.shape(), w.shape(), p, f32, cpu), 0);
  const Tensor stats = Tensor::empty({1, 6, 3}, f32, cpu);
  test::expect_error([&] { conv2d_forward(x, w, &b, y, p, ws, {}, &stats); },
                     {"conv2d_forward", "tile_stats needs the CUDA tensor-core path"});
  // Output shape mismatch.
  const Tensor y_bad = Tensor::empty({2, 7, 7, 6}, f32, cpu);
  test::expect_error(
      [&] { conv2d_forward(x, w, &b, y_bad, p, ws); },
      {"conv2d_forward", "y must have shape (2, 8, 8, 6)", "y: (2, 7, 7, 6)", "x: (2, 8, 8, 4)"});
  // Weight channels do not match Cin / groups.
  const Tensor w_bad = Tensor::empty({6, 3, 3, 3}, f32, cpu);
  test::expect_error([&] { conv2d_forward(x, w_bad, &b, y, p, ws); },
                     {"conv2d_forward", "Cin / groups", "w: (6, 3, 3, 3)", "x: (2, 8, 8, 4)"});
  // groups must divide Cin and Cout.
  test::expect_error(
      [&] {
        conv2d_forward(x, Tensor::empty({6, 3, 3, 1}, f32, cpu), &b, y, {1, 1, 1, 1, 3}, ws);
      },
      {"conv2d_forward", "Cin 4 is not divisible by groups 3"});
  test::expect_error(
      [&] {
        conv2d_forward(x, Tensor::empty({6, 3, 3, 1}, f32, cpu), &b, y, {1, 1, 1, 1, 4}, ws);
      },
      {"conv2d_forward", "Cout 6 is not divisible by groups 4"});
  // Stride and padding.
  test::expect_error(
      [&] {
        conv2d_forward(x, w, &b, y, {0, 1, 1, 1, 1}, ws);
      },
      {"conv2d_forward", "stride 0x1"});
  test::expect_error(
      [&] {
        conv2d_forward(x, w, &b, y, {1, 1, -1, 1, 1}, ws);
      },
      {"conv2d_forward", "padding -1x1"});
  // A kernel larger than the padded input.
  test::expect_error(
      [&] {
        conv2d_forward(x, Tensor::empty({6, 11, 3, 4}, f32, cpu), &b, y, p, ws);
      },
      {"conv2d_forward", "does not fit the padded input 10x10", "w: (6, 11, 3, 4)"});
  // Rank.
  test::expect_error(
      [&] {
        conv2d_forward(Tensor::empty({8, 8, 4}, f32, cpu), w, &b, y, p, ws);
      },
      {"conv2d_forward", "rank 4", "x: (8, 8, 4)"});
  // Bias shape and type.
  test::expect_error([&] { conv2d_forward(x, w, &w, y, p, ws); },
                     {"conv2d_forward", "b must have shape (6)", "b: (6, 3, 3, 4)"});
  const Tensor b64 = Tensor::empty({6}, DType::kF64, cpu);
  test::expect_error([&] { conv2d_forward(x, w, &b64, y, p, ws); }, {"conv2d_forward", "b must be f32"});
  // Workspace missing or too small.
  test::expect_error(
      [&] { conv2d_forward(x, w, &b, y, p, Tensor{}); },
      {"conv2d_forward", "workspace must be at least 9216 bytes", "x: (2, 8, 8, 4)"});  // (8*8) * (3*3*4) * 4
  // Unsupported storage type: bf16 on the CPU.
  const Tensor xb = Tensor::empty({2, 8, 8, 4}, DType::kBF16, cpu),
               wb = Tensor::empty({6, 3, 3, 4}, DType::kBF16, cpu);
  const Tensor yb = Tensor::empty({2, 8, 8, 6}, DType::kBF16, cpu);
  test::expect_error([&] { conv2d_forward(xb, wb, nullptr, yb, p, ws); },
                     {"conv2d_forward", "unsupported storage type bf16", "x: (2, 8, 8, 4) bf16 cpu"});
  // Weights in another type than the activations.
  test::expect_error(
      [&] {
        conv2d_forward(x, Tensor::empty({6, 3, 3, 4}, DType::kF64, cpu), &b, y, p, ws);
      },
      {"conv2d_forward", "activations of different storage types", "w: (6, 3, 3, 4) f64"});

  // Backward: dy, dx, dw, db shapes.
  Tensor dx = Tensor::empty(x.shape(), f32, cpu), dw = Tensor::empty(w.shape(), f32, cpu);
  Tensor db = Tensor::empty({6}, f32, cpu);
  test::expect_error([&] { conv2d_backward(x, w, y_bad, &dx, &dw, &db, p, ws); },
                     {"conv2d_backward", "dy must have shape (2, 8, 8, 6)", "dy: (2, 7, 7, 6)"});
  test::expect_error([&] { conv2d_backward(x, w, y, &dw, nullptr, nullptr, p, ws); },
                     {"conv2d_backward", "dx must have shape (2, 8, 8, 4)", "dx: (6, 3, 3, 4)"});
  test::expect_error([&] { conv2d_backward(x, w, y, nullptr, &dx, nullptr, p, ws); },
                     {"conv2d_backward", "dw must have shape (6, 3, 3, 4)", "dw: (2, 8, 8, 4)"});
  const Tensor db_bad = Tensor::empty({5}, f32, cpu);
  test::expect_error([&] { conv2d_backward(x, w, y, nullptr, nullptr, &db_bad, p, ws); },
                     {"conv2d_backward", "db must have shape (6)", "db: (5)"});
  const Tensor dw64 = Tensor::empty(w.shape(), DType::kF64, cpu);
  test::expect_error([&] { conv2d_backward(x, w, y, nullptr, &dw64, nullptr, p, ws); },
                     {"conv2d_backward", "dw must be f32"});
  test::expect_error([&] { conv2d_backward(xb, wb, yb, nullptr, nullptr, nullptr, p, ws); },
                     {"conv2d_backward", "unsupported storage type bf16"});
  test::expect_error([&] { conv2d_backward(x, w, y, &dx, &dw, &db, p, Tensor::empty({10}, f32, cpu)); },
                     {"conv2d_backward", "workspace must be at least 9216 bytes", "workspace: (10) f32 cpu"});

  // The shape helpers name themselves.
  test::expect_error(
      [&] {
        conv2d_output_shape({2, 8, 8, 4}, {6, 3, 3, 5}, p);
      },
      {"conv2d_output_shape", "x: (2, 8, 8, 4)", "w: (6, 3, 3, 5)"});
  // y aliasing x.
  const Tensor same = Tensor::empty({1, 4, 4, 2}, f32, cpu);
  test::expect_error(
      [&] {
        conv2d_forward(same, Tensor::empty({2, 1, 1, 2}, f32, cpu), nullptr, same, {}, Tensor{});
      },
      {"conv2d_forward", "alias"});
}

}  // namespace
}  // namespace vt
