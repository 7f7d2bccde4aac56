// Batch norm tests: hand values (train, eval, M == 1), double-precision gradient checks in
// both modes with and without the fused SiLU, the fused op against BN then the SiLU op, GPU
// parity in f32 and bf16 (fused too) plus run-to-run determinism, bad arguments.
#include "layers/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "layers/activation.h"
#include "layers/add.h"
#include "layers/check.h"
#include "layers/conv2d.h"
#include "layers/mean_m2.h"
#include "layers/reduce.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;

// The (C) tensors of one batch norm layer.
struct BnState {
  Tensor gamma, beta, running_mean, running_var, save_mean, save_invstd;
};

BnState make_state(const std::vector<double>& gamma, const std::vector<double>& beta,
                   const std::vector<double>& running_mean, const std::vector<double>& running_var,
                   DType dt = DType::kF32) {
  const Shape c{static_cast<int64_t>(gamma.size())};
  return {from_values(c, gamma, dt),          from_values(c, beta, dt),
          from_values(c, running_mean, dt),   from_values(c, running_var, dt),
          Tensor::empty(c, dt, Device::kCPU), Tensor::empty(c, dt, Device::kCPU)};
}

Tensor zeros_like(const Tensor& t) {
  return Tensor::empty(t.shape(), t.dtype(), t.device());
}
Tensor filled(const Shape& s, double v, DType dt = DType::kF32) {
  return from_values(s, std::vector<double>(s.numel(), v), dt);
}

// One batch, C = 2, M = 4. Flat NHWC data, channel fastest:
//   channel 0: x = 1, 2, 3, 4   mean 2.5, biased var (2.25+0.25+0.25+2.25)/4 = 1.25, unbiased 5/3
//   channel 1: x = 0, 4, 4, 4   mean 3,   biased var (9+1+1+1)/4 = 3,               unbiased 4
// With eps = 1 the denominators are exact: sqrt(1.25 + 1) = 1.5, sqrt(3 + 1) = 2, so
// invstd = (2/3, 1/2) and xhat = (-1, -1/3, 1/3, 1) and (-1.5, 0.5, 0.5, 0.5).
const std::vector<double> kX = {1, 0, 2, 4, 3, 4, 4, 4};
const std::vector<double> kDy = {1, 0, 0, 1, 0, -1, 0, 2};  // channel 0: 1, 0, 0, 0; channel 1: 0, 1, -1, 2

// The same 8 values as every NHWC shape with M = 4 and C = 2: the results must not depend on
// how M splits into N, H, W.
const Shape kHandShapes[] = {{1, 1, 4, 2}, {2, 1, 2, 2}, {4, 1, 1, 2}, {1, 2, 2, 2}};

TEST(BatchNorm, HandComputedTrain) {
  const BatchNormParams p{0.03f, 1.0f};
  for (const Shape& s : kHandShapes) {
    SCOPED_TRACE(s.str());
    const Tensor x = from_values(s, kX);
    // gamma = (2, -1), beta = (0.5, 0.25); running stats start at PyTorch's init (0, 1).
    BnState st = make_state({2, -1}, {0.5, 0.25}, {0, 0}, {1, 1});
    Tensor y = zeros_like(x);
    batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                            st.save_invstd, p);
    // y = gamma * xhat + beta:
    //   channel 0: 2 * (-1, -1/3, 1/3, 1) + 0.5 = (-1.5, -1/6, 7/6, 2.5)
    //   channel 1: -(-1.5, 0.5, 0.5, 0.5) + 0.25 = (1.75, -0.25, -0.25, -0.25)
    test::expect_close(y, from_values(s, {-1.5, 1.75, -1.0 / 6, -0.25, 7.0 / 6, -0.25, 2.5, -0.25}), 1e-6,
                       1e-6, "y");
    test::expect_close(st.save_mean, from_values({2}, {2.5, 3}), 1e-6, 1e-6, "save_mean");
    test::expect_close(st.save_invstd, from_values({2}, {2.0 / 3, 0.5}), 1e-6, 1e-6, "save_invstd");
    // running_mean = 0.97 * 0 + 0.03 * (2.5, 3) = (0.075, 0.09)
    // running_var  = 0.97 * 1 + 0.03 * (5/3, 4) = (0.97 + 0.05, 0.97 + 0.12) = (1.02, 1.09)
    test::expect_close(st.running_mean, from_values({2}, {0.075, 0.09}), 1e-6, 1e-6, "running_mean");
    test::expect_close(st.running_var, from_values({2}, {1.02, 1.09}), 1e-6, 1e-6, "running_var");

    // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)):
    //   channel 0: k = 2 * 2/3 = 4/3, mean(dy) = 1/4, mean(dy xhat) = -1/4,
    //              dx = 4/3 * (dy - 1/4 + xhat / 4) = 4/3 * (1/2, -1/3, -1/6, 0) = (2/3, -4/9, -2/9, 0)
    //   channel 1: k = -1 * 1/2 = -1/2, mean(dy) = 2/4, mean(dy xhat) = (0.5 - 0.5 + 1)/4 = 1/4,
    //              dx = -1/2 * (dy - 1/2 - xhat / 4) = -1/2 * (-1/8, 3/8, -13/8, 11/8)
    //                 = (1/16, -3/16, 13/16, -11/16)
    // dgamma = sum(dy xhat) = (-1, 1), dbeta = sum(dy) = (1, 2). Every buffer starts non-zero
    // (dx at 1, dgamma and dbeta at 0.5) to show that the gradients accumulate.
    const Tensor dy = from_values(s, kDy);
    Tensor dx = filled(s, 1), dgamma = filled({2}, 0.5), dbeta = filled({2}, 0.5);
    batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, &dx, &dgamma, &dbeta, p);
    test::expect_close(dx,
                       from_values(s, {1 + 2.0 / 3, 1 + 1.0 / 16, 1 - 4.0 / 9, 1 - 3.0 / 16, 1 - 2.0 / 9,
                                       1 + 13.0 / 16, 1.0, 1 - 11.0 / 16}),
                       1e-6, 1e-6, "dx");
    test::expect_close(dgamma, from_values({2}, {-0.5, 1.5}), 1e-6, 1e-6, "dgamma");
    test::expect_close(dbeta, from_values({2}, {1.5, 2.5}), 1e-6, 1e-6, "dbeta");

    // Each gradient alone (the others null) is the same.
    Tensor dx_only = filled(s, 1), dgamma_only = filled({2}, 0.5), dbeta_only = filled({2}, 0.5);
    batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, &dx_only, nullptr, nullptr, p);
    batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, nullptr, &dgamma_only, nullptr,
                       p);
    batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, nullptr, nullptr, &dbeta_only,
                       p);
    EXPECT_EQ(values(dx_only), values(dx));
    EXPECT_EQ(values(dgamma_only), values(dgamma));
    EXPECT_EQ(values(dbeta_only), values(dbeta));
  }
}

TEST(BatchNorm, HandComputedEval) {
  const BatchNormParams p{0.03f, 1.0f};
  for (const Shape& s : kHandShapes) {
    SCOPED_TRACE(s.str());
    const Tensor x = from_values(s, kX);
    // running_mean = (1, -2), running_var = (3, 0): invstd = (1/sqrt(4), 1/sqrt(1)) = (1/2, 1).
    BnState st = make_state({2, -1}, {0.5, 0.25}, {1, -2}, {3, 0});
    Tensor y = zeros_like(x);
    batchnorm_forward_eval(x, st.gamma, st.beta, st.running_mean, st.running_var, y, p);
    // channel 0: xhat = (x - 1) / 2 = (0, 0.5, 1, 1.5), y = 2 xhat + 0.5 = (0.5, 1.5, 2.5, 3.5)
    // channel 1: xhat = x + 2 = (2, 6, 6, 6),            y = -xhat + 0.25 = (-1.75, -5.75, -5.75, -5.75)
    test::expect_close(y, from_values(s, {0.5, -1.75, 1.5, -5.75, 2.5, -5.75, 3.5, -5.75}), 1e-6, 1e-6, "y");
    // The running statistics are read, never written, in eval.
    EXPECT_EQ(values(st.running_mean), (std::vector<double>{1, -2}));
    EXPECT_EQ(values(st.running_var), (std::vector<double>{3, 0}));

    // dx += dy * gamma * invstd: channel 0 k = 1, dx = (1, 0, 0, 0); channel 1 k = -1, dx = (0, -1, 1, -2).
    // dgamma += sum(dy xhat) = (1 * 0, 1 * 6 - 1 * 6 + 2 * 6) = (0, 12); dbeta += sum(dy) = (1, 2).
    const Tensor dy = from_values(s, kDy);
    Tensor dx = filled(s, 1), dgamma = filled({2}, 0.5), dbeta = filled({2}, 0.5);
    batchnorm_backward_eval(x, dy, st.gamma, st.beta, st.running_mean, st.running_var, &dx, &dgamma, &dbeta,
                            p);
    test::expect_close(dx, from_values(s, {2, 1, 1, 0, 1, 2, 1, -1}), 1e-6, 1e-6, "dx");
    test::expect_close(dgamma, from_values({2}, {0.5, 12.5}), 1e-6, 1e-6, "dgamma");
    test::expect_close(dbeta, from_values({2}, {1.5, 2.5}), 1e-6, 1e-6, "dbeta");

    Tensor dx_only = filled(s, 1), dgamma_only = filled({2}, 0.5);
    batchnorm_backward_eval(x, dy, st.gamma, st.beta, st.running_mean, st.running_var, &dx_only, nullptr,
                            nullptr, p);
    batchnorm_backward_eval(x, dy, st.gamma, st.beta, st.running_mean, st.running_var, nullptr, &dgamma_only,
                            nullptr, p);
    EXPECT_EQ(values(dx_only), values(dx));
    EXPECT_EQ(values(dgamma_only), values(dgamma));
  }
}

// M == 1: the biased variance is 0, so xhat = 0 and y = beta; running_var takes the biased
// variance too (the unbiased one would divide by M - 1 = 0): 0.97 * 2 + 0.03 * 0 = 1.94.
// The backward then passes nothing to x or gamma: dx = k * (dy - dy - 0) = 0, dgamma += 0.
TEST(BatchNorm, SinglePositionUsesBiasedVariance) {
  const BatchNormParams p;
  const Shape s{1, 1, 1, 3};
  const Tensor x = from_values(s, {5, -2, 0.5});
  BnState st = make_state({1.5, 1.5, 1.5}, {0.1, 0.2, 0.3}, {0, 0, 0}, {2, 2, 2});
  Tensor y = zeros_like(x);
  batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                          st.save_invstd, p);
  test::expect_close(y, from_values(s, {0.1, 0.2, 0.3}), 1e-6, 1e-6, "y");
  test::expect_close(st.save_mean, from_values({3}, {5, -2, 0.5}), 1e-6, 1e-6, "save_mean");
  const double inv = 1 / std::sqrt(double(p.eps));
  test::expect_close(st.save_invstd, from_values({3}, {inv, inv, inv}), 1e-6, 1e-6, "save_invstd");
  test::expect_close(st.running_mean, from_values({3}, {0.15, -0.06, 0.015}), 1e-6, 1e-6, "running_mean");
  test::expect_close(st.running_var, from_values({3}, {1.94, 1.94, 1.94}), 1e-6, 1e-6, "running_var");

  Tensor dx = filled(s, 1), dgamma = filled({3}, 0.5), dbeta = filled({3}, 0.5);
  batchnorm_backward(x, from_values(s, {1, -2, 3}), st.gamma, st.beta, st.save_mean, st.save_invstd, &dx,
                     &dgamma, &dbeta, p);
  test::expect_close(dx, filled(s, 1), 1e-6, 1e-6, "dx");
  test::expect_close(dgamma, filled({3}, 0.5), 1e-6, 1e-6, "dgamma");
  test::expect_close(dbeta, from_values({3}, {1.5, -1.5, 3.5}), 1e-6, 1e-6, "dbeta");
}

// f64 tensors for a layer with C channels: gamma around 1, small beta and running_mean, and
// running_var away from 0.
BnState random_state(int64_t c, DType dt, uint64_t seed) {
  const Shape cs{c};
  return {test::random_tensor(cs, dt, seed, 0.5, 1.5),
          test::random_tensor(cs, dt, seed + 1, -0.5, 0.5),
          test::random_tensor(cs, dt, seed + 2, -0.2, 0.2),
          test::random_tensor(cs, dt, seed + 3, 0.5, 1.5),
          Tensor::empty(cs, dt, Device::kCPU),
          Tensor::empty(cs, dt, Device::kCPU)};
}

// Every gradient check runs without and with the fused SiLU.
BatchNormParams params_with_silu(bool silu) {
  BatchNormParams p;
  p.silu = silu;
  return p;
}

// Finite-difference check of the training (batch statistics) or eval (running statistics)
// forward and backward, without and with the fused SiLU; x has a non-zero mean, as after a
// convolution.
void check_bn_gradients(bool train, uint64_t x_seed, uint64_t state_seed) {
  for (const Shape& s : {Shape{2, 3, 5, 4}, Shape{1, 5, 3, 7}})
    for (bool silu : {false, true}) {
      SCOPED_TRACE(s.str() + (silu ? " silu" : ""));
      const BatchNormParams p = params_with_silu(silu);
      Tensor x = test::random_tensor(s, DType::kF64, x_seed, -1, 3);
      BnState st = random_state(s[3], DType::kF64, state_seed);
      // The training forward rewrites save_mean and save_invstd; check_gradients runs it at the
      // unperturbed inputs just before backward, so backward sees the statistics of those inputs.
      test::check_gradients(
          {x, st.gamma, st.beta}, {"x", "gamma", "beta"},
          [&] {
            Tensor y = zeros_like(x);
            if (train)
              batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                                      st.save_invstd, p);
            else
              batchnorm_forward_eval(x, st.gamma, st.beta, st.running_mean, st.running_var, y, p);
            return std::vector<Tensor>{y};
          },
          [&](const std::vector<Tensor>& dy, std::vector<Tensor>& g) {
            if (train)
              batchnorm_backward(x, dy[0], st.gamma, st.beta, st.save_mean, st.save_invstd, &g[0], &g[1],
                                 &g[2], p);
            else
              batchnorm_backward_eval(x, dy[0], st.gamma, st.beta, st.running_mean, st.running_var, &g[0],
                                      &g[1], &g[2], p);
          });
    }
}

TEST(BatchNorm, GradientCheckTrainDouble) {
  check_bn_gradients(true, 11, 20);
}

TEST(BatchNorm, GradientCheckEvalDouble) {
  check_bn_gradients(false, 12, 30);
}

// The fused op is BN followed by the SiLU op, in value and in every gradient, train and eval
// (f64: the two differ only by the rounding of the intermediate u).
TEST(BatchNorm, FusedSiLUEqualsBatchNormThenSiLU) {
  const Shape s{2, 4, 3, 5};
  const DType dt = DType::kF64;
  const Tensor x = test::random_tensor(s, dt, 40, -1, 3), dz = test::random_tensor(s, dt, 41);
  const Activation silu{ActKind::kSiLU};
  for (bool train : {true, false}) {
    SCOPED_TRACE(train ? "train" : "eval");
    // Separate: u = bn(x), z = silu(u); du = silu'(u) dz; then BN's backward of du.
    BnState a = random_state(s[3], dt, 42);
    Tensor u = zeros_like(x), z = zeros_like(x), du = filled(s, 0, dt);
    Tensor dx = test::random_tensor(s, dt, 44), dg = test::random_tensor({s[3]}, dt, 45),
           db = test::random_tensor({s[3]}, dt, 46);
    BatchNormParams plain;
    if (train)
      batchnorm_forward_train(x, a.gamma, a.beta, u, a.running_mean, a.running_var, a.save_mean,
                              a.save_invstd, plain);
    else
      batchnorm_forward_eval(x, a.gamma, a.beta, a.running_mean, a.running_var, u, plain);
    activation_forward(silu, u, z);
    activation_backward(silu, u, dz, du);
    if (train)
      batchnorm_backward(x, du, a.gamma, a.beta, a.save_mean, a.save_invstd, &dx, &dg, &db, plain);
    else
      batchnorm_backward_eval(x, du, a.gamma, a.beta, a.running_mean, a.running_var, &dx, &dg, &db, plain);

    // Fused, from the same state and the same starting gradients.
    BnState b = random_state(s[3], dt, 42);
    Tensor zf = zeros_like(x);
    Tensor dxf = test::random_tensor(s, dt, 44), dgf = test::random_tensor({s[3]}, dt, 45),
           dbf = test::random_tensor({s[3]}, dt, 46);
    const BatchNormParams fused = params_with_silu(true);
    if (train)
      batchnorm_forward_train(x, b.gamma, b.beta, zf, b.running_mean, b.running_var, b.save_mean,
                              b.save_invstd, fused);
    else
      batchnorm_forward_eval(x, b.gamma, b.beta, b.running_mean, b.running_var, zf, fused);
    if (train)
      batchnorm_backward(x, dz, b.gamma, b.beta, b.save_mean, b.save_invstd, &dxf, &dgf, &dbf, fused);
    else
      batchnorm_backward_eval(x, dz, b.gamma, b.beta, b.running_mean, b.running_var, &dxf, &dgf, &dbf, fused);

    test::expect_close(zf, z, 1e-12, 1e-12, "y");
    test::expect_close(b.running_mean, a.running_mean, 0, 0, "running_mean");
    test::expect_close(b.running_var, a.running_var, 0, 0, "running_var");
    test::expect_close(dxf, dx, 1e-12, 1e-12, "dx");
    test::expect_close(dgf, dg, 1e-12, 1e-12, "dgamma");
    test::expect_close(dbf, db, 1e-12, 1e-12, "dbeta");
    // The SiLU changes the result: not a test that passes with the activation ignored.
    double most = 0;
    const std::vector<double> zv = values(zf), uv = values(u);
    for (size_t i = 0; i < zv.size(); ++i) most = std::max(most, std::abs(zv[i] - uv[i]));
    EXPECT_GT(most, 0.1);
  }
}

// Everything one train step and one eval step of a layer produce, on one device.
struct BnRun {
  Tensor y, running_mean, running_var, save_mean, save_invstd, dx, dgamma, dbeta;  // train
  Tensor y_eval, dx_eval, dgamma_eval, dbeta_eval;                                 // eval
  Tensor dr, dr_eval;  // the fused residual's gradient, when there is one
};

// A fused residual for run_layer: r, and dr's starting value (f32 CPU, x's shape).
struct ResidualInputs {
  Tensor r, dr0;
};

// Runs train forward + backward and eval forward + backward on `dev` with activations in
// `dt`, from the (f32 CPU) inputs given; the gradients start at dx0, dg0, db0. `sliced`:
// the training passes get a workspace (on CUDA: the sliced reductions). `res`: with the
// fused residual (p.overwrite_dresidual as given), its gradient starting at res->dr0.
BnRun run_layer(Device dev, DType dt, const Tensor& x, const Tensor& dy, const Tensor& dx0, const BnState& in,
                const Tensor& dg0, const Tensor& db0, BatchNormParams p, bool sliced = false,
                const ResidualInputs* res = nullptr) {
  auto act = [&](const Tensor& t) { return t.to(dev, dt); };
  auto par = [&](const Tensor& t) { return t.to(dev, DType::kF32); };
  const Tensor xd = act(x), dyd = act(dy), gamma = par(in.gamma), beta = par(in.beta);
  BnRun r;
  Tensor rd;
  if (res) {
    rd = act(res->r);
    r.dr = act(res->dr0), r.dr_eval = act(res->dr0);
    p.residual = &rd;
  }
  r.y = Tensor::empty(x.shape(), dt, dev);
  r.running_mean = par(in.running_mean);
  r.running_var = par(in.running_var);
  r.save_mean = Tensor::empty(in.gamma.shape(), DType::kF32, dev);
  r.save_invstd = Tensor::empty(in.gamma.shape(), DType::kF32, dev);
  r.dx = act(dx0);
  r.dgamma = par(dg0);
  r.dbeta = par(db0);
  const size_t ws_bytes = batchnorm_workspace_bytes(x.shape(), dev);
  const Tensor ws = sliced && ws_bytes ? Tensor::empty({int64_t(ws_bytes / 4)}, DType::kF32, dev) : Tensor{};
  batchnorm_forward_train(xd, gamma, beta, r.y, r.running_mean, r.running_var, r.save_mean, r.save_invstd, p,
                          {}, ws);
  if (res) p.dresidual = &r.dr;
  batchnorm_backward(xd, dyd, gamma, beta, r.save_mean, r.save_invstd, &r.dx, &r.dgamma, &r.dbeta, p, {}, ws);

  const Tensor rm = par(in.running_mean), rv = par(in.running_var);
  r.y_eval = Tensor::empty(x.shape(), dt, dev);
  r.dx_eval = act(dx0);
  r.dgamma_eval = par(dg0);
  r.dbeta_eval = par(db0);
  batchnorm_forward_eval(xd, gamma, beta, rm, rv, r.y_eval, p);
  if (res) p.dresidual = &r.dr_eval;
  batchnorm_backward_eval(xd, dyd, gamma, beta, rm, rv, &r.dx_eval, &r.dgamma_eval, &r.dbeta_eval, p);
  synchronize();
  return r;
}

// Awkward shapes: batch 1 and 3, 7 channels, 13x17 images; M = 4800 positions over 37
// channels (two channel groups, the second partial, and many positions per thread; 18
// slices on the sliced path, elementwise passes unpacked); M == 1; and 64 channels over
// M = 4096 (16 slices, elementwise passes in 16-byte packs).
const Shape kGpuShapes[] = {{1, 13, 17, 7}, {3, 13, 17, 7}, {3, 40, 40, 37}, {1, 1, 1, 7}, {4, 32, 32, 64}};

struct GpuInputs {
  Tensor x, dy, dx0, dg0, db0;
  BnState st;
};

GpuInputs gpu_inputs(const Shape& s, DType dt) {
  GpuInputs in;
  // x has a non-zero mean (as after a convolution) so that the two-pass variance matters.
  in.x = test::random_tensor(s, DType::kF32, 2, -1, 3);
  in.dy = test::random_tensor(s, DType::kF32, 3);
  in.dx0 = test::random_tensor(s, DType::kF32, 4);
  in.dg0 = test::random_tensor({s[3]}, DType::kF32, 5);
  in.db0 = test::random_tensor({s[3]}, DType::kF32, 6);
  in.st = random_state(s[3], DType::kF32, 7);
  // The CPU reference sees exactly the activations the GPU sees (bf16-rounded in bf16 runs).
  if (dt == DType::kBF16) {
    in.x = test::round_to_bf16(in.x);
    in.dy = test::round_to_bf16(in.dy);
    in.dx0 = test::round_to_bf16(in.dx0);
  }
  return in;
}

// A fused residual and its gradient's starting value (bf16-rounded in bf16 runs, as above).
ResidualInputs residual_inputs(const Shape& s, DType dt) {
  ResidualInputs r{test::random_tensor(s, DType::kF32, 8), test::random_tensor(s, DType::kF32, 9)};
  if (dt == DType::kBF16) r.r = test::round_to_bf16(r.r), r.dr0 = test::round_to_bf16(r.dr0);
  return r;
}

TEST(BatchNorm, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : kGpuShapes) {
      for (int variant = 0; variant < 16; ++variant) {
        const bool sliced = variant & 1, silu = variant & 2, overwrite = variant & 4, residual = variant & 8;
        BatchNormParams p = params_with_silu(silu);
        p.overwrite_dx = overwrite;  // dx = ... over the garbage dx0 (both sides)
        p.overwrite_dresidual = overwrite;
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + s.str() +
                     (sliced ? " sliced" : " one block per group") + (silu ? " silu" : "") +
                     (overwrite ? " overwriting dx" : "") + (residual ? " residual" : ""));
        const GpuInputs in = gpu_inputs(s, dt);
        const ResidualInputs res = residual_inputs(s, dt);
        const ResidualInputs* rp = residual ? &res : nullptr;
        const BnRun cpu =
            run_layer(Device::kCPU, DType::kF32, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p, false, rp);
        const BnRun gpu =
            run_layer(Device::kCUDA, dt, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p, sliced, rp);

        // Statistics are fp32 on the GPU in both storage types (from identical inputs), against
        // the CPU's double sums rounded once. An fp32 sum of M <= 4800 terms, kRows = 16 serial
        // partials of <= 300 terms each and then a 4-level tree, has a relative error of a few
        // 1e-7 for the positive sums of the variance and of ~1e-7 * sum|x| / |sum| for the mean;
        // with x in [-1, 3] (mean ~1) both stay well below 1e-5. The running update and
        // invstd add a few fp32 roundings. So 1e-5 relative, with 1e-6 absolute for values near 0.
        test::expect_close(gpu.save_mean, cpu.save_mean, 1e-6, 1e-5, "save_mean");
        test::expect_close(gpu.save_invstd, cpu.save_invstd, 1e-6, 1e-5, "save_invstd");
        test::expect_close(gpu.running_mean, cpu.running_mean, 1e-6, 1e-5, "running_mean");
        test::expect_close(gpu.running_var, cpu.running_var, 1e-6, 1e-5, "running_var");

        // dgamma, dbeta: fp32 sums of M terms |dy * xhat| <~ 2 that cancel (random signs), so the
        // result is ~sqrt(M) ~ 70 while a serial partial grows to ~sqrt(300) ~ 17: each of ~300
        // additions rounds by <= 2^-24 * 17 ~ 1e-6, a random walk of ~sqrt(300) * 1e-6 ~ 2e-5 per
        // partial and ~4e-5 over 16 (a host emulation of the kernel's summation order measured
        // 2e-5 on these inputs). atol 3e-4 leaves a 7x margin, while one wrong or missing term
        // (~0.5) cannot pass. Same in bf16 runs: these are fp32 sums of the same inputs.
        test::expect_close(gpu.dgamma, cpu.dgamma, 3e-4, 1e-5, "dgamma");
        test::expect_close(gpu.dbeta, cpu.dbeta, 3e-4, 1e-5, "dbeta");
        test::expect_close(gpu.dgamma_eval, cpu.dgamma_eval, 3e-4, 1e-5, "dgamma eval");
        test::expect_close(gpu.dbeta_eval, cpu.dbeta_eval, 3e-4, 1e-5, "dbeta eval");

        // Activations and dx. f32: y = (x - mean) * invstd * gamma + beta and dx of size ~1-5,
        // with the statistics above (<= 1e-5 relative, fed through factors ~1-3) and a few fp32
        // roundings (~1e-7 each): 3e-5 absolute and relative. bf16: the result is rounded once to
        // 8 significant bits, at most 2^-9 ~ 0.2% relative (one more unit, 0.4%, where the fp32
        // value lies within the differences above of a rounding boundary); 1% relative allows that
        // with margin, and 1e-2 absolute covers results near 0, whose fp32 errors are absolute
        // (e.g. dx = dx0 + g cancelling, with g's error ~1e-5 and dx0's bf16 unit at |dx0| <= 1
        // up to 2^-8 ~ 4e-3 when the sum rounds the other way).
        const double atol = dt == DType::kF32 ? 3e-5 : 1e-2, rtol = dt == DType::kF32 ? 3e-5 : 1e-2;
        test::expect_close(gpu.y, cpu.y, atol, rtol, "y");
        test::expect_close(gpu.dx, cpu.dx, atol, rtol, "dx");
        test::expect_close(gpu.y_eval, cpu.y_eval, atol, rtol, "y eval");
        test::expect_close(gpu.dx_eval, cpu.dx_eval, atol, rtol, "dx eval");
        if (residual) {
          test::expect_close(gpu.dr, cpu.dr, atol, rtol, "dresidual");
          test::expect_close(gpu.dr_eval, cpu.dr_eval, atol, rtol, "dresidual eval");
        }
      }
    }
  }
}

// The fused residual is BN (with or without its SiLU) followed by the add op: the output up
// to the rounding of the intermediate (f32 here), the gradients x, gamma and beta get
// exactly (the BN backward sees the same dy), and dr = dr0 + dy, or dy with
// overwrite_dresidual; train and eval.
TEST(BatchNorm, FusedResidualEqualsBatchNormThenAdd) {
  const Shape s{2, 5, 3, 6};
  const GpuInputs in = gpu_inputs(s, DType::kF32);
  const ResidualInputs res = residual_inputs(s, DType::kF32);
  for (bool silu : {false, true})
    for (bool overwrite : {false, true}) {
      SCOPED_TRACE(std::string(silu ? "silu" : "plain") + (overwrite ? ", overwriting dr" : ""));
      BatchNormParams p = params_with_silu(silu);
      const BnRun plain = run_layer(Device::kCPU, DType::kF32, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p);
      p.overwrite_dresidual = overwrite;
      const BnRun fused =
          run_layer(Device::kCPU, DType::kF32, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p, false, &res);
      for (bool train : {true, false}) {
        const Tensor out = Tensor::empty(s, DType::kF32, Device::kCPU);
        add_forward(res.r, train ? plain.y : plain.y_eval, out);
        test::expect_close(train ? fused.y : fused.y_eval, out, 1e-6, 1e-6, train ? "y" : "y eval");
        Tensor dr = overwrite ? Tensor::empty(s, DType::kF32, Device::kCPU) : res.dr0.to(Device::kCPU);
        add_forward(dr, in.dy, dr);
        test::expect_close(train ? fused.dr : fused.dr_eval, dr, 0, 0, train ? "dr" : "dr eval");
      }
      test::expect_close(fused.dx, plain.dx, 0, 0, "dx");
      test::expect_close(fused.dgamma, plain.dgamma, 0, 0, "dgamma");
      test::expect_close(fused.dx_eval, plain.dx_eval, 0, 0, "dx eval");
      test::expect_close(fused.dbeta_eval, plain.dbeta_eval, 0, 0, "dbeta eval");
      test::expect_close(fused.running_var, plain.running_var, 0, 0, "running_var");
    }
}

// Overwriting dx: a dx holding garbage ends as the accumulation onto zeros, in train and
// eval mode, with and without the SiLU; dgamma and dbeta still accumulate.
TEST(BatchNorm, OverwriteDxReplacesWhatDxHeld) {
  const Shape s{2, 5, 3, 6};
  const GpuInputs in = gpu_inputs(s, DType::kF32);
  for (bool silu : {false, true}) {
    SCOPED_TRACE(silu ? "silu" : "plain");
    BatchNormParams p = params_with_silu(silu);
    const Tensor zeros = Tensor::empty(s, DType::kF32, Device::kCPU);
    const BnRun ref = run_layer(Device::kCPU, DType::kF32, in.x, in.dy, zeros, in.st, in.dg0, in.db0, p);
    p.overwrite_dx = true;
    const BnRun over = run_layer(Device::kCPU, DType::kF32, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p);
    test::expect_close(over.dx, ref.dx, 0, 0, "dx");
    test::expect_close(over.dx_eval, ref.dx_eval, 0, 0, "dx eval");
    test::expect_close(over.dgamma, ref.dgamma, 0, 0, "dgamma");
    test::expect_close(over.dbeta_eval, ref.dbeta_eval, 0, 0, "dbeta eval");
  }
}

// The statistics taken from a tensor-core conv's tiles (conv2d_forward's tile_stats) instead
// of BN's own pass over x: the same normalisation and running statistics up to fp32
// summation order. x = the conv's bf16 output, 2 * 40 * 40 = 3200 positions (25 tiles), 64
// channels; with and without the SiLU.
TEST(BatchNorm, GpuStatisticsFromConvTiles) {
  VT_REQUIRE_GPU();
  const Shape xs{2, 40, 40, 32}, ws{64, 3, 3, 32};
  const Conv2dParams cp{1, 1, 1, 1, 1};
  const int64_t tiles = conv2d_tile_stats_tiles(xs, ws, cp, DType::kBF16, Device::kCUDA);
  ASSERT_EQ(tiles, 25);
  const Tensor in = test::random_tensor(xs, DType::kF32, 1).to(Device::kCUDA, DType::kBF16);
  const Tensor w = test::random_tensor(ws, DType::kF32, 2, -0.2, 0.2).to(Device::kCUDA, DType::kBF16);
  const Shape s = conv2d_output_shape(xs, ws, cp);
  const Tensor x = Tensor::empty(s, DType::kBF16, Device::kCUDA);
  const Tensor stats = Tensor::empty({tiles, 64, 3}, DType::kF32, Device::kCUDA);
  const size_t cws = conv2d_workspace_bytes(xs, ws, cp, DType::kBF16, Device::kCUDA);
  const Tensor conv_ws = cws ? Tensor::empty({int64_t(cws / 4 + 1)}, DType::kF32, Device::kCUDA) : Tensor{};
  conv2d_forward(in, w, nullptr, x, cp, conv_ws, {}, &stats);
  const Tensor bn_ws =
      Tensor::empty({int64_t(batchnorm_workspace_bytes(s, Device::kCUDA) / 4)}, DType::kF32, Device::kCUDA);
  for (bool silu : {false, true}) {
    SCOPED_TRACE(silu ? "silu" : "plain");
    const BatchNormParams p = params_with_silu(silu);
    const BnState st = random_state(64, DType::kF32, 7);
    BnState a = {st.gamma.to(Device::kCUDA),        st.beta.to(Device::kCUDA),
                 st.running_mean.to(Device::kCUDA), st.running_var.to(Device::kCUDA),
                 st.save_mean.to(Device::kCUDA),    st.save_invstd.to(Device::kCUDA)};
    BnState b = {a.gamma,
                 a.beta,
                 st.running_mean.to(Device::kCUDA),
                 st.running_var.to(Device::kCUDA),
                 st.save_mean.to(Device::kCUDA),
                 st.save_invstd.to(Device::kCUDA)};
    const Tensor ya = Tensor::empty(s, DType::kBF16, Device::kCUDA),
                 yb = Tensor::empty(s, DType::kBF16, Device::kCUDA);
    batchnorm_forward_train(x, a.gamma, a.beta, ya, a.running_mean, a.running_var, a.save_mean, a.save_invstd,
                            p, {}, bn_ws);
    batchnorm_forward_train(x, b.gamma, b.beta, yb, b.running_mean, b.running_var, b.save_mean, b.save_invstd,
                            p, {}, bn_ws, &stats);
    synchronize();
    test::expect_close(b.save_mean, a.save_mean, 1e-6, 1e-5, "save_mean");
    test::expect_close(b.save_invstd, a.save_invstd, 1e-6, 1e-5, "save_invstd");
    test::expect_close(b.running_mean, a.running_mean, 1e-6, 1e-5, "running_mean");
    test::expect_close(b.running_var, a.running_var, 1e-6, 1e-5, "running_var");
    // bf16 outputs: one rounding of values that differ by ~1e-5 relative: a unit at most.
    test::expect_close(yb, ya, 1e-2, 1e-2, "y");
  }
}

// The sliced reductions' plan: from the shape alone, on CUDA only.
TEST(BatchNorm, WorkspacePlan) {
  EXPECT_EQ(batchnorm_workspace_bytes({64, 160, 160, 64}, Device::kCPU), 0u);
  EXPECT_EQ(batchnorm_slices({64, 160, 160, 64}), 256);  // 2 channel groups: capped at 256 slices
  EXPECT_EQ(batchnorm_workspace_bytes({64, 160, 160, 64}, Device::kCUDA),
            size_t(3 * 256 + kBatchNormCoefficients) * 64 * 4);
  EXPECT_EQ(batchnorm_slices({3, 40, 40, 37}), 18);     // 4800 positions, at least 256 per slice
  EXPECT_EQ(batchnorm_slices({64, 20, 20, 1024}), 32);  // 32 groups: 1024 blocks
  EXPECT_EQ(batchnorm_slices({1, 1, 1, 7}), 1);
}

// The sliced forward's statistics in the kernels' order, replayed on the host in fp32: per
// slice, 16 rows of Welford updates, the fixed tree over the rows, then the slices combined in
// order (batchnorm.cu: slice_stats_kernel, column_combine, stats_kernel).
MeanM2 replay_sliced_stats(const std::vector<float>& x) {
  const int64_t m_count = static_cast<int64_t>(x.size()), slices = channel_sum_slices(m_count, 1);
  const int64_t len = (m_count + slices - 1) / slices;
  constexpr int kRows = 16;
  MeanM2 total{0, 0, 0};
  for (int64_t z = 0; z < slices; ++z) {
    MeanM2 rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      rows[r] = {0, 0, 0};
      for (int64_t m = z * len + r; m < std::min(m_count, (z + 1) * len); m += kRows) rows[r].add(x[m]);
    }
    for (int half = kRows / 2; half > 0; half /= 2)
      for (int r = 0; r < half; ++r) rows[r] = combine(rows[r], rows[r + half]);
    total = z == 0 ? rows[0] : combine(total, rows[0]);
  }
  return total;
}

// One pass in fp32, and still the double two-pass mean and variance: to 1e-5 relative for
// means up to a few times the spread; with a mean 2e4 times the spread (ulp(1e4) = 1e-3, 2e-3
// of the spread, rounded into every Welford step) to 1e-3 (measured 1.4e-4 at M = 17, 4e-5 at
// M = 4800), where fp32 sum(x^2) - sum(x)^2 / n is off by more than 10x. The count is exact.
TEST(BatchNorm, OnePassStatisticsMatchTwoPass) {
  for (double offset : {0.0, 3.0, 1e4}) {
    for (int64_t m : {int64_t(1), int64_t(17), int64_t(4800), int64_t(409600)}) {
      SCOPED_TRACE("offset " + std::to_string(offset) + ", M " + std::to_string(m));
      const std::vector<double> v = values(test::random_tensor({m}, DType::kF32, 60, offset - 1, offset + 1));
      const std::vector<float> x(v.begin(), v.end());
      double mean = 0, var = 0;
      for (float e : x) mean += e;
      mean /= double(m);
      for (float e : x) var += (e - mean) * (e - mean);
      var /= double(m);
      const MeanM2 s = replay_sliced_stats(x);
      EXPECT_EQ(s.n, float(m));
      EXPECT_NEAR(s.mean, mean, 1e-6 * (1 + std::abs(mean)));
      EXPECT_NEAR(s.m2 / float(m), var, (offset > 100 ? 1e-3 : 1e-5) * var + 1e-12);
      if (offset == 1e4 && m == 409600) {
        float sum = 0, sumsq = 0;
        for (float e : x) sum += e, sumsq += e * e;
        const double naive = (double(sumsq) - double(sum) * double(sum) / double(m)) / double(m);
        EXPECT_GT(std::abs(naive - var), 10 * var) << "the naive fp32 formula should fail here";
      }
    }
  }
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.to(Device::kCPU), cb = b.to(Device::kCPU);
  return ca.nbytes() == cb.nbytes() && std::memcmp(ca.raw(), cb.raw(), ca.nbytes()) == 0;
}

TEST(BatchNorm, GpuIsDeterministic) {
  VT_REQUIRE_GPU();
  const BatchNormParams p;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Shape s{3, 40, 40, 37};
    const GpuInputs in = gpu_inputs(s, dt);
    const BnRun a = run_layer(Device::kCUDA, dt, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p);
    const BnRun b = run_layer(Device::kCUDA, dt, in.x, in.dy, in.dx0, in.st, in.dg0, in.db0, p);
    EXPECT_TRUE(bit_identical(a.y, b.y));
    EXPECT_TRUE(bit_identical(a.save_mean, b.save_mean));
    EXPECT_TRUE(bit_identical(a.save_invstd, b.save_invstd));
    EXPECT_TRUE(bit_identical(a.running_var, b.running_var));
    EXPECT_TRUE(bit_identical(a.dx, b.dx));
    EXPECT_TRUE(bit_identical(a.dgamma, b.dgamma));
    EXPECT_TRUE(bit_identical(a.dbeta, b.dbeta));
    EXPECT_TRUE(bit_identical(a.dgamma_eval, b.dgamma_eval));
  }
}

TEST(BatchNorm, BadArgumentsNameTheOpAndShapes) {
  const BatchNormParams p;
  const Shape s{2, 3, 5, 4};
  const Tensor x = test::random_tensor(s, DType::kF32, 1), dy = test::random_tensor(s, DType::kF32, 2);
  Tensor y = zeros_like(x), dx = zeros_like(x);
  BnState st = random_state(4, DType::kF32, 3);
  const Tensor c5 = Tensor::empty({5}, DType::kF32, Device::kCPU);

  // Statistics from conv tiles: CUDA with a workspace only.
  const Tensor tiles = Tensor::empty({2, 4, 3}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                                st.save_invstd, p, {}, {}, &tiles);
      },
      {"batchnorm_forward_train", "tile_stats needs CUDA tensors and the workspace"});
  // Shape mismatches: a (C) tensor of the wrong length, y or dx not shaped like x, x not NHWC.
  test::expect_error(
      [&] {
        batchnorm_forward_train(x, c5, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                                st.save_invstd, p);
      },
      {"batchnorm_forward_train", "gamma", "(5)", "(2, 3, 5, 4)"});
  test::expect_error(
      [&] {
        batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, c5, st.save_mean, st.save_invstd,
                                p);
      },
      {"batchnorm_forward_train", "running_var", "(5)"});
  const Tensor y_bad = Tensor::empty({2, 3, 4, 5}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] { batchnorm_forward_eval(x, st.gamma, st.beta, st.running_mean, st.running_var, y_bad, p); },
      {"batchnorm_forward_eval", "y", "(2, 3, 4, 5)"});
  const Tensor x3 = Tensor::empty({6, 5, 4}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] { batchnorm_forward_eval(x3, st.gamma, st.beta, st.running_mean, st.running_var, x3, p); },
      {"batchnorm_forward_eval", "NHWC", "(6, 5, 4)"});
  const Tensor dx_bad = Tensor::empty({2, 3, 5, 5}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, &dx_bad, nullptr, nullptr,
                           p);
      },
      {"batchnorm_backward", "dx", "(2, 3, 5, 5)", "(2, 3, 5, 4)"});
  Tensor dg_bad = Tensor::empty({5}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        batchnorm_backward_eval(x, dy, st.gamma, st.beta, st.running_mean, st.running_var, nullptr, &dg_bad,
                                nullptr, p);
      },
      {"batchnorm_backward_eval", "dgamma", "(5)", "(2, 3, 5, 4)"});

  // Storage types: bf16 activations on the CPU; f64 parameters with f32 activations.
  const Tensor xb = Tensor::empty(s, DType::kBF16, Device::kCPU),
               yb = Tensor::empty(s, DType::kBF16, Device::kCPU);
  test::expect_error(
      [&] { batchnorm_forward_eval(xb, st.gamma, st.beta, st.running_mean, st.running_var, yb, p); },
      {"batchnorm_forward_eval", "unsupported storage type bf16", "(2, 3, 5, 4)"});
  const Tensor g64 = Tensor::empty({4}, DType::kF64, Device::kCPU);
  test::expect_error(
      [&] {
        batchnorm_backward(x, dy, g64, st.beta, st.save_mean, st.save_invstd, &dx, nullptr, nullptr, p);
      },
      {"batchnorm_backward", "gamma must be f32", "(4)"});

  // Aliasing and parameters.
  test::expect_error(
      [&] {
        batchnorm_forward_train(x, st.gamma, st.beta, x, st.running_mean, st.running_var, st.save_mean,
                                st.save_invstd, p);
      },
      {"batchnorm_forward_train", "alias"});
  test::expect_error(
      [&] {
        batchnorm_backward(x, dy, st.gamma, st.beta, st.save_mean, st.save_invstd, &dy, nullptr, nullptr, p);
      },
      {"batchnorm_backward", "alias"});
  test::expect_error(
      [&] {
        batchnorm_forward_eval(x, st.gamma, st.beta, st.running_mean, st.running_var, y,
                               BatchNormParams{0.03f, 0.f});
      },
      {"batchnorm_forward_eval", "eps"});
  test::expect_error(
      [&] {
        batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                                st.save_invstd, BatchNormParams{1.5f, 1e-3f});
      },
      {"batchnorm_forward_train", "momentum"});
}

// An empty batch writes nothing, statistics included.
TEST(BatchNorm, EmptyBatchWritesNothing) {
  const BatchNormParams p;
  const Shape s{0, 3, 5, 4};
  const Tensor x = Tensor::empty(s, DType::kF32, Device::kCPU);
  Tensor y = zeros_like(x);
  BnState st = random_state(4, DType::kF32, 3);
  const std::vector<double> rm = values(st.running_mean), rv = values(st.running_var);
  batchnorm_forward_train(x, st.gamma, st.beta, y, st.running_mean, st.running_var, st.save_mean,
                          st.save_invstd, p);
  EXPECT_EQ(values(st.running_mean), rm);
  EXPECT_EQ(values(st.running_var), rv);
  Tensor dgamma = filled({4}, 0.5);
  batchnorm_backward(x, x, st.gamma, st.beta, st.save_mean, st.save_invstd, nullptr, &dgamma, nullptr, p);
  EXPECT_EQ(values(dgamma), std::vector<double>(4, 0.5));
}

}  // namespace
}  // namespace vt
