// Channel views (Tensor::channels): the tensor itself, and the ops that read or write them in
// place (conv x, y, dx and dy, batch norm y, dy and the fused residual's r and dr, upsample all four),
// each compared
// with the same op on contiguous copies, on the CPU and against it on the GPU; the channels
// around a view must keep their values. Ops that do not opt in refuse views.
#include <cmath>
#include <vector>

#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/check.h"
#include "layers/conv2d.h"
#include "layers/upsample.h"
#include "tests/test_util.h"

namespace vt {
namespace {

// A (N, H, W, total) tensor of random values on `dev` in `dt`, and its view of `c` channels
// at `off`.
struct Wide {
  Tensor all, view;
  Wide(const Shape& narrow, int64_t total, int64_t off, uint64_t seed, DType dt, Device dev) {
    Shape s = narrow;
    s[3] = total;
    all = test::random_tensor(s, dt == DType::kF64 ? DType::kF64 : DType::kF32, seed).to(dev, dt);
    view = all.channels(off, narrow[3]);
  }
};

// The view's channels of a wide CPU copy, as a contiguous CPU tensor, and the other channels.
struct Split {
  std::vector<double> inside, outside;
};
Split split(const Tensor& wide, int64_t off, int64_t c) {
  const std::vector<double> v = test::values(wide);
  const int64_t total = wide.dim(3);
  Split s;
  for (size_t i = 0; i < v.size(); ++i) {
    const int64_t ch = static_cast<int64_t>(i) % total;
    (ch >= off && ch < off + c ? s.inside : s.outside).push_back(v[i]);
  }
  return s;
}

// Expects the view's channels of `wide` to equal `narrow` within tol (absolute and relative,
// as test::expect_close), and the channels around it to equal those of `before`.
void expect_view(const Tensor& wide, const Tensor& before, int64_t off, const Tensor& narrow, double tol,
                 const char* what) {
  const Split got = split(wide, off, narrow.dim(3)), old = split(before, off, narrow.dim(3));
  const std::vector<double> want = test::values(narrow);
  ASSERT_EQ(got.inside.size(), want.size()) << what;
  double worst = 0;  // the largest error in units of the allowed one
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(got.inside[i] - want[i]), allowed = tol * (1 + std::abs(want[i]));
    worst = std::max(worst, allowed > 0 ? err / allowed : err > 0 ? INFINITY : 0.0);
  }
  EXPECT_LE(worst, 1.0) << what << ": inside the view (error / allowed error)";
  EXPECT_EQ(got.outside, old.outside) << what << ": the channels around the view changed";
}

TEST(ChannelView, ShapePitchAndZero) {
  const Tensor t = test::random_tensor({2, 3, 4, 10}, DType::kF32, 1);
  const Tensor v = t.channels(2, 5);
  EXPECT_EQ(v.shape(), Shape({2, 3, 4, 5}));
  EXPECT_EQ(v.pitch(), 10);
  EXPECT_FALSE(v.contiguous());
  EXPECT_EQ(v.data<float>(), t.data<float>() + 2);
  EXPECT_NE(v.str("v").find("pitch 10"), std::string::npos);
  const Tensor vv = v.channels(1, 3);  // a view of a view keeps the buffer's pitch
  EXPECT_EQ(vv.pitch(), 10);
  EXPECT_EQ(vv.data<float>(), t.data<float>() + 3);
  EXPECT_TRUE(t.channels(0, 10).contiguous());

  const Tensor before = t.to(Device::kCPU);
  zero(v);
  const Split s = split(t, 2, 5), old = split(before, 2, 5);
  for (double x : s.inside) EXPECT_EQ(x, 0.0);
  EXPECT_EQ(s.outside, old.outside);

  test::expect_error([&] { copy(v, Tensor::empty(v.shape(), DType::kF32, Device::kCPU)); }, {"channel view"});
  test::expect_error([&] { (void)v.reshape({120}); }, {"channel view"});
  test::expect_error([&] { (void)t.channels(8, 3); }, {"channels", "[8, +3)"});
}

TEST(ChannelView, OpsThatDoNotOptInRefuseViews) {
  const Tensor t = test::random_tensor({1, 2, 2, 8}, DType::kF32, 2);
  const Tensor y = Tensor::empty({1, 2, 2, 4}, DType::kF32, Device::kCPU);
  test::expect_error([&] { activation_forward(Activation{ActKind::kSiLU}, t.channels(0, 4), y); },
                     {"activation", "x must be contiguous, not a channel view", "pitch 8"});
  // Conv's w is not a view; dx must have x's pitch.
  const Tensor w = test::random_tensor({4, 1, 1, 8}, DType::kF32, 3);
  const Tensor wide_w = test::random_tensor({4, 1, 1, 16}, DType::kF32, 3);
  test::expect_error([&] { conv2d_forward(t, wide_w.channels(0, 8), nullptr, y, {}, {}); },
                     {"conv2d_forward", "w must be contiguous"});
  const Tensor dy = test::random_tensor({1, 2, 2, 4}, DType::kF32, 4);
  const Tensor dx = Tensor::empty({1, 2, 2, 16}, DType::kF32, Device::kCPU).channels(0, 8);
  test::expect_error([&] { conv2d_backward(t, w, dy, &dx, nullptr, nullptr, {}, {}); },
                     {"conv2d_backward", "dx must have x's pitch"});
}

struct ConvCase {
  Shape x, w;
  Conv2dParams p;
  int64_t total, off;      // x and dx: channels [off, off + Cin) of total
  int64_t y_total, y_off;  // y and dy: channels [y_off, y_off + Cout) of y_total
};

const ConvCase kConvCases[] = {
    {{2, 7, 9, 16}, {24, 3, 3, 16}, {1, 1, 1, 1, 1}, 48, 16, 40, 8},  // im2col / the tensor cores' walks
    {{2, 6, 6, 8}, {16, 1, 1, 8}, {}, 24, 8, 24, 8},                  // pointwise: x and y as GEMM operands
    {{2, 9, 8, 16}, {8, 3, 3, 16}, {2, 2, 1, 1, 1}, 40, 24, 8, 0},    // stride 2: dgrad phases; y whole
    {{2, 5, 5, 8}, {8, 3, 3, 4}, {1, 1, 1, 1, 2}, 20, 6, 11, 3},      // grouped; unaligned on the GPU
    {{1, 6, 7, 12}, {8, 3, 3, 12}, {1, 1, 1, 1, 1}, 30, 3, 20, 5},    // the register path on the GPU
};

// conv2d forward and backward (dx accumulated and overwritten) with x, y, dx and dy as views
// on `dev`, against contiguous copies on the CPU.
void check_conv_views(Device dev, DType dt, double tol) {
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(cat(c.x.str(), " w ", c.w.str(), " in ", c.total, " at ", c.off, ", ", dtype_name(dt)));
    const Wide x(c.x, c.total, c.off, 1, dt, dev), dx(c.x, c.total, c.off, 2, dt, dev);
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const Tensor w = test::random_tensor(c.w, DType::kF32, 3).to(dev, dt);
    const Tensor b =
        test::random_tensor({c.w[0]}, DType::kF32, 4).to(dev, dt == DType::kF64 ? dt : DType::kF32);
    const Wide y(ys, c.y_total, c.y_off, 6, dt, dev), dy(ys, c.y_total, c.y_off, 5, dt, dev);
    auto workspace = [&](Device d, DType t) {
      const size_t bytes = conv2d_workspace_bytes(c.x, c.w, c.p, t, d);
      return bytes ? Tensor::empty({int64_t(bytes / 4 + 1)}, DType::kF32, d) : Tensor{};
    };
    // The reference: contiguous tensors holding the views' values, on the CPU (f64 when dt is).
    const DType rt = dt == DType::kF64 ? DType::kF64 : DType::kF32;
    auto contiguous = [&](const Tensor& wide, const Shape& s, int64_t off) {
      return test::from_values(s, split(wide.to(Device::kCPU, rt), off, s[3]).inside, rt);
    };
    const Tensor xr = contiguous(x.all, c.x, c.off), wr = w.to(Device::kCPU, rt), br = b.to(Device::kCPU, rt),
                 dyr = contiguous(dy.all, ys, c.y_off), wsr = workspace(Device::kCPU, rt);
    Tensor yr = Tensor::empty(ys, rt, Device::kCPU), dxr = contiguous(dx.all, c.x, c.off);
    conv2d_forward(xr, wr, &br, yr, c.p, wsr);
    conv2d_backward(xr, wr, dyr, &dxr, nullptr, nullptr, c.p, wsr);
    Tensor dxr_over = contiguous(dx.all, c.x, c.off);
    Conv2dParams over = c.p;
    over.overwrite_dx = true;
    conv2d_backward(xr, wr, dyr, &dxr_over, nullptr, nullptr, over, wsr);
    Tensor dwr = Tensor::empty(c.w, rt, Device::kCPU), dbr = Tensor::empty({c.w[0]}, rt, Device::kCPU);
    conv2d_backward(xr, wr, dyr, nullptr, &dwr, &dbr, c.p, wsr);

    const Tensor ws = workspace(dev, dt);
    const Tensor y_before = y.all.to(Device::kCPU);
    conv2d_forward(x.view, w, &b, y.view, c.p, ws);
    expect_view(y.all.to(Device::kCPU), y_before, c.y_off, yr, tol, "y");
    const Tensor dx_before = dx.all.to(Device::kCPU);
    conv2d_backward(x.view, w, dy.view, &dx.view, nullptr, nullptr, c.p, ws);
    expect_view(dx.all.to(Device::kCPU), dx_before, c.off, dxr, tol, "dx accumulated");
    const Wide dxo(c.x, c.total, c.off, 2, dt, dev);
    conv2d_backward(x.view, w, dy.view, &dxo.view, nullptr, nullptr, over, ws);
    expect_view(dxo.all.to(Device::kCPU), dx_before, c.off, dxr_over, tol, "dx overwritten");
    const DType pt = dt == DType::kF64 ? dt : DType::kF32;
    const Tensor dw = Tensor::empty(c.w, pt, dev), db = Tensor::empty({c.w[0]}, pt, dev);
    conv2d_backward(x.view, w, dy.view, nullptr, &dw, &db, c.p, ws);
    test::expect_close(dw, dwr, tol * 10, tol, "dw");
    test::expect_close(db, dbr, tol * 10, tol, "db");
  }
}

TEST(ChannelView, ConvOnTheCpu) {
  check_conv_views(Device::kCPU, DType::kF64, 1e-12);
  check_conv_views(Device::kCPU, DType::kF32, 1e-5);
}

TEST(ChannelView, GpuConvMatchesCpu) {
  VT_REQUIRE_GPU();
  check_conv_views(Device::kCUDA, DType::kF32, 1e-4);
  // bf16 storage: the inputs are exact in bf16 only after rounding, so the reference sees
  // bf16-rounded copies (to(dev, bf16) then back), and the outputs are rounded once more.
  check_conv_views(Device::kCUDA, DType::kBF16, 5e-2);
}

// Batch norm with its SiLU and residual fused, y and r views (forward, train and eval), dy
// and dr views (backward, train and eval, dx and dr accumulated or overwritten), against the
// contiguous op on the CPU.
void check_bn_views(Device dev, DType dt, double tol, bool workspace) {
  const Shape xs{2, 5, 6, 16};
  const int64_t c = xs[3], total = 48, y_off = 32, r_off = 16;
  const DType pt = dt == DType::kF64 ? DType::kF64 : DType::kF32, rt = pt;
  auto vec = [&](uint64_t seed, double lo, double hi) {
    return test::random_tensor({c}, pt, seed, lo, hi).to(dev, pt);
  };
  const Tensor x = test::random_tensor(xs, DType::kF32, 1).to(dev, dt);
  const Tensor gamma = vec(2, 0.5, 1.5), beta = vec(3, -0.5, 0.5);
  const Tensor ws =
      workspace ? Tensor::empty({int64_t(batchnorm_workspace_bytes(xs, dev) / 4 + 1)}, DType::kF32, dev)
                : Tensor{};
  auto contiguous = [&](const Tensor& wide, int64_t off) {
    return test::from_values(xs, split(wide.to(Device::kCPU, rt), off, c).inside, rt);
  };
  auto cpu = [&](const Tensor& t) { return t.to(Device::kCPU, rt); };
  for (bool train : {true, false}) {
    for (bool overwrite : {false, true}) {
      SCOPED_TRACE(cat(train ? "train" : "eval", overwrite ? ", overwriting" : ", accumulating", ", ",
                       dtype_name(dt), workspace ? ", sliced" : ""));
      // One buffer holds y at y_off and r at r_off, as a concatenation written in place does;
      // its gradient buffer dy and dr.
      const Wide act(xs, total, y_off, 4, dt, dev), grad(xs, total, y_off, 5, dt, dev);
      const Tensor r = act.all.channels(r_off, c), dr = grad.all.channels(r_off, c);
      const Tensor act_before = act.all.to(Device::kCPU), grad_before = grad.all.to(Device::kCPU);
      BatchNormParams p;
      p.silu = true;
      p.overwrite_dx = p.overwrite_dresidual = overwrite;
      const Tensor run_mean = vec(6, -0.2, 0.2), run_var = vec(7, 0.5, 1.5);
      const Tensor save_mean = Tensor::empty({c}, pt, dev), save_invstd = Tensor::empty({c}, pt, dev);
      const Tensor dx = test::random_tensor(xs, DType::kF32, 8).to(dev, dt);
      const Tensor dgamma = Tensor::empty({c}, pt, dev), dbeta = Tensor::empty({c}, pt, dev);

      // The reference, on contiguous CPU copies.
      const Tensor xr = cpu(x), gr = cpu(gamma), br = cpu(beta), rmr = cpu(run_mean), rvr = cpu(run_var);
      const Tensor smr = Tensor::empty({c}, rt, Device::kCPU), sir = Tensor::empty({c}, rt, Device::kCPU);
      const Tensor rr = contiguous(act.all, r_off), yr = Tensor::empty(xs, rt, Device::kCPU);
      const Tensor dyr = contiguous(grad.all, y_off), drr = contiguous(grad.all, r_off), dxr = cpu(dx);
      const Tensor dgr = Tensor::empty({c}, rt, Device::kCPU), dbr = Tensor::empty({c}, rt, Device::kCPU);
      BatchNormParams pr = p;
      pr.residual = &rr, pr.dresidual = &drr;
      if (train) {
        batchnorm_forward_train(xr, gr, br, yr, rmr, rvr, smr, sir, pr);
        batchnorm_backward(xr, dyr, gr, br, smr, sir, &dxr, &dgr, &dbr, pr);
      } else {
        batchnorm_forward_eval(xr, gr, br, rmr, rvr, yr, pr);
        batchnorm_backward_eval(xr, dyr, gr, br, rmr, rvr, &dxr, &dgr, &dbr, pr);
      }

      p.residual = &r, p.dresidual = &dr;
      if (train) {
        batchnorm_forward_train(x, gamma, beta, act.view, run_mean, run_var, save_mean, save_invstd, p, {},
                                ws);
        batchnorm_backward(x, grad.view, gamma, beta, save_mean, save_invstd, &dx, &dgamma, &dbeta, p, {},
                           ws);
      } else {
        batchnorm_forward_eval(x, gamma, beta, run_mean, run_var, act.view, p);
        batchnorm_backward_eval(x, grad.view, gamma, beta, run_mean, run_var, &dx, &dgamma, &dbeta, p);
      }
      // y written into its channels only (r's and the rest unchanged); dr in its channels.
      expect_view(act.all.to(Device::kCPU), act_before, y_off, yr, tol, "y");
      expect_view(grad.all.to(Device::kCPU), grad_before, r_off, drr, tol, "dr");
      test::expect_close(dx, dxr, tol, tol, "dx");
      test::expect_close(dgamma, dgr, tol * 10, tol, "dgamma");
      test::expect_close(dbeta, dbr, tol * 10, tol, "dbeta");
    }
  }
}

TEST(ChannelView, BatchNormOnTheCpu) {
  check_bn_views(Device::kCPU, DType::kF64, 1e-12, false);
  check_bn_views(Device::kCPU, DType::kF32, 1e-5, false);
}

TEST(ChannelView, GpuBatchNormMatchesCpu) {
  VT_REQUIRE_GPU();
  for (bool workspace : {false, true}) {
    check_bn_views(Device::kCUDA, DType::kF32, 1e-4, workspace);
    check_bn_views(Device::kCUDA, DType::kBF16, 5e-2, workspace);
  }
}

// Upsample forward (x and y views) and backward (dy and dx views, dx accumulated) against
// the contiguous op on the CPU; packs where the views allow them (C 16 at offsets 0 and 16 of
// 48) and single elements where not (offset 4).
void check_upsample_views(Device dev, DType dt, double tol) {
  const Shape xs{2, 3, 5, 16}, ys{2, 6, 10, 16};
  const DType rt = dt == DType::kF64 ? DType::kF64 : DType::kF32;
  for (int64_t off : {16, 4}) {
    SCOPED_TRACE(cat("views at ", off, ", ", dtype_name(dt)));
    const Wide x(xs, 48, off, 1, dt, dev), y(ys, 48, 0, 2, dt, dev), dy(ys, 48, off, 3, dt, dev),
        dx(xs, 48, 32, 4, dt, dev);
    const Tensor y_before = y.all.to(Device::kCPU), dx_before = dx.all.to(Device::kCPU);
    auto contiguous = [&](const Tensor& wide, const Shape& s, int64_t o) {
      return test::from_values(s, split(wide.to(Device::kCPU, rt), o, s[3]).inside, rt);
    };
    const Tensor yr = Tensor::empty(ys, rt, Device::kCPU), dxr = contiguous(dx.all, xs, 32);
    upsample_nearest_forward(contiguous(x.all, xs, off), yr);
    upsample_nearest_backward(contiguous(dy.all, ys, off), dxr);
    upsample_nearest_forward(x.view, y.view);
    upsample_nearest_backward(dy.view, dx.view);
    expect_view(y.all.to(Device::kCPU), y_before, 0, yr, 0, "y");
    expect_view(dx.all.to(Device::kCPU), dx_before, 32, dxr, tol, "dx");
  }
}

TEST(ChannelView, UpsampleOnTheCpu) {
  check_upsample_views(Device::kCPU, DType::kF64, 0);
  check_upsample_views(Device::kCPU, DType::kF32, 0);
}

TEST(ChannelView, GpuUpsampleMatchesCpu) {
  VT_REQUIRE_GPU();
  check_upsample_views(Device::kCUDA, DType::kF32, 0);      // the same additions in the same order
  check_upsample_views(Device::kCUDA, DType::kBF16, 2e-2);  // fp32 sums of bf16, rounded once to bf16
}

}  // namespace
}  // namespace vt
