// Fused update tests on the CPU: hand-computed SGD, AdamW, EMA and clipping steps; ten steps
// against a straightforward double-precision reference written here; non-finite norms skip
// the step; step values reused across steps; bad arguments.
#include "optim/update.h"

#include <cmath>
#include <random>
#include <vector>

#include "layers/check.h"
#include "layers/reduce.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;

Tensor zeros(int64_t n, DType dt = DType::kF32) { return Tensor::empty({n}, dt, Device::kCPU); }

// Three elements, one per group, with exactly representable values.
const std::vector<double> kP0 = {1.0, 2.0, -1.0};
const std::vector<double> kG1 = {0.5, -0.25, 0.125};
const std::vector<double> kG2 = {0.25, 0.5, -0.5};

StepHyper hand_hyper(int64_t step) {
  StepHyper h;
  h.lr[0] = 0.1, h.lr[1] = 0.2, h.lr[2] = 0.4;
  h.momentum = 0.5;
  h.weight_decay = 0.1;
  h.step = step;
  return h;
}

TEST(Sgd, HandComputedTwoSteps) {
  // lr = (0.1, 0.2, 0.4) by group, momentum 0.5, wd 0.1 on group 0 only.
  // Step 1 (buf holds garbage, which the first step must overwrite):
  //   d   = g + wd p         = (0.5 + 0.1, -0.25, 0.125)     = (0.6, -0.25, 0.125)
  //   buf = d                                                 = (0.6, -0.25, 0.125)
  //   plain:    p -= lr buf  = (1 - 0.06, 2 + 0.05, -1 - 0.05) = (0.94, 2.05, -1.05)
  //   Nesterov: d += 0.5 buf = (0.9, -0.375, 0.1875); p = (0.91, 2.075, -1.075)
  // Step 2, g = (0.25, 0.5, -0.5):
  //   plain:    d = (0.25 + 0.094, 0.5, -0.5); buf = 0.5 buf + d = (0.644, 0.375, -0.4375)
  //             p = (0.94 - 0.0644, 2.05 - 0.075, -1.05 + 0.175) = (0.8756, 1.975, -0.875)
  //   Nesterov: d = (0.25 + 0.091, 0.5, -0.5); buf = (0.641, 0.375, -0.4375)
  //             d += 0.5 buf = (0.6615, 0.6875, -0.71875)
  //             p = (0.91 - 0.06615, 2.075 - 0.1375, -1.075 + 0.2875) = (0.84385, 1.9375, -0.7875)
  struct Case {
    bool nesterov;
    std::vector<double> p1, buf1, p2, buf2;
  } cases[] = {
      {false, {0.94, 2.05, -1.05}, {0.6, -0.25, 0.125}, {0.8756, 1.975, -0.875}, {0.644, 0.375, -0.4375}},
      {true, {0.91, 2.075, -1.075}, {0.6, -0.25, 0.125}, {0.84385, 1.9375, -0.7875}, {0.641, 0.375, -0.4375}},
  };
  for (DType dt : {DType::kF32, DType::kF64}) {
    // f32: a handful of roundings of numbers below 4, each <= 2^-23 relative.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-14;
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(c.nesterov ? "nesterov " : "plain ") + dtype_name(dt));
      Tensor p = from_values({3}, kP0, dt), buf = from_values({3}, {7, 7, 7}, dt);
      const Tensor groups = from_values({3}, {0, 1, 2}, DType::kU8);
      StepHyper h = hand_hyper(1);
      h.nesterov = c.nesterov;
      sgd_step(h, {}, p, from_values({3}, kG1, dt), groups, buf);
      test::expect_close(p, from_values({3}, c.p1, dt), tol, tol, "params after step 1");
      test::expect_close(buf, from_values({3}, c.buf1, dt), tol, tol, "buf after step 1");
      h.step = 2;
      sgd_step(h, {}, p, from_values({3}, kG2, dt), groups, buf);
      test::expect_close(p, from_values({3}, c.p2, dt), tol, tol, "params after step 2");
      test::expect_close(buf, from_values({3}, c.buf2, dt), tol, tol, "buf after step 2");
    }
  }
}

TEST(AdamW, HandComputedTwoSteps) {
  // lr = (0.1, 0.2, 0.4), beta1 0.9, beta2 0.999, eps 1e-8, wd 0.1 on group 0 only.
  // Step 1: bias corrections 0.1 and 0.001 make m^ = g and v^ = g^2, so each element moves
  // by lr g / (|g| + 1e-8) = lr sign(g) (1 - 1e-8 / |g|), after group 0 decays by 1 - 0.1 * 0.1:
  //   p = (0.99 - 0.1 (1 - 2e-8), 2 + 0.2 (1 - 4e-8), -1 - 0.4 (1 - 8e-8))
  //     = (0.890000002, 2.199999992, -1.399999968)
  //   m = 0.1 g = (0.05, -0.025, 0.0125); v = 0.001 g^2 = (2.5e-4, 6.25e-5, 1.5625e-5)
  // Step 2, g = (0.25, 0.5, -0.5); bias corrections 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999:
  //   m  = 0.9 m + 0.1 g      = (0.07, 0.0275, -0.03875)
  //   v  = 0.999 v + 0.001 g^2 = (3.1225e-4, 3.124375e-4, 2.65609375e-4)
  //   m^ = m / 0.19 = (0.368421052632, 0.144736842105, -0.203947368421)
  //   sqrt(v^) = sqrt(v / 0.001999) = (0.395225380702, 0.395344025438, 0.364514914731)
  //   p  = (0.890000002 * 0.99 - 0.1 * 0.932179615225, 2.199999992 - 0.2 * 0.366103517775,
  //         -1.399999968 + 0.4 * 0.559503478689)
  //      = (0.787882040457, 2.126779288445, -1.176198576525)
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    // f32: a few roundings of numbers below 3 (2^-23 relative each); f64: the 12 digits above.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-11;
    Tensor p = from_values({3}, kP0, dt), m = zeros(3, dt), v = zeros(3, dt);
    const Tensor groups = from_values({3}, {0, 1, 2}, DType::kU8);
    StepHyper h = hand_hyper(1);
    h.momentum = 0.9;
    adamw_step(h, {}, p, from_values({3}, kG1, dt), groups, m, v);
    test::expect_close(p, from_values({3}, {0.890000002, 2.199999992, -1.399999968}, dt), tol, tol, "p1");
    test::expect_close(m, from_values({3}, {0.05, -0.025, 0.0125}, dt), tol, tol, "m1");
    test::expect_close(v, from_values({3}, {2.5e-4, 6.25e-5, 1.5625e-5}, dt), tol, tol, "v1");
    h.step = 2;
    adamw_step(h, {}, p, from_values({3}, kG2, dt), groups, m, v);
    test::expect_close(p, from_values({3}, {0.787882040457, 2.126779288445, -1.176198576525}, dt), tol, tol, "p2");
    test::expect_close(m, from_values({3}, {0.07, 0.0275, -0.03875}, dt), tol, tol, "m2");
    test::expect_close(v, from_values({3}, {3.1225e-4, 3.124375e-4, 2.65609375e-4}, dt), tol, tol, "v2");
  }
}

TEST(AdamW, DecoupledDecayOnlyOnGroupZero) {
  // With zero gradients m and v stay 0, the Adam term is 0 / (0 + eps) = 0, and only the
  // decoupled decay acts: group 0 shrinks by 1 - lr wd = 1 - 0.1 * 0.1, the others keep.
  Tensor p = from_values({4}, {1, 2, -1, 3}, DType::kF64), m = zeros(4, DType::kF64), v = zeros(4, DType::kF64);
  const Tensor groups = from_values({4}, {0, 1, 2, 0}, DType::kU8);
  adamw_step(hand_hyper(1), {}, p, zeros(4, DType::kF64), groups, m, v);
  test::expect_close(p, from_values({4}, {0.99, 2, -1, 2.97}, DType::kF64), 1e-15, 1e-15, "decayed params");
}

TEST(Ema, HandComputed) {
  // 0.75 * (1, 2, -4) + 0.25 * (3, -2, 4) = (1.5, 1, -2); decay 0 copies, decay 1 keeps.
  for (DType dt : {DType::kF32, DType::kF64}) {
    Tensor ema = from_values({3}, {1, 2, -4}, dt);
    const Tensor model = from_values({3}, {3, -2, 4}, dt);
    ema_update(ema, model, 0.75);
    test::expect_close(ema, from_values({3}, {1.5, 1, -2}, dt), 0, 0, "decay 0.75");
    ema_update(ema, model, 1.0);
    test::expect_close(ema, from_values({3}, {1.5, 1, -2}, dt), 0, 0, "decay 1");
    ema_update(ema, model, 0.0);
    test::expect_close(ema, model, 0, 0, "decay 0");
  }
}

// One plain SGD step with lr 1 and no momentum or decay: p - p_new is the gradient used.
std::vector<double> used_gradient(const std::vector<double>& raw, double sumsq, double max_norm, double grad_scale) {
  const int64_t n = static_cast<int64_t>(raw.size());
  Tensor p = zeros(n), buf = zeros(n), ss = from_values({1}, {sumsq});
  StepHyper h;
  h.lr[0] = h.lr[1] = h.lr[2] = 1.0;
  h.momentum = 0.0;
  h.weight_decay = 0.0;
  h.step = 1;
  h.nesterov = false;
  sgd_step(h, {&ss, max_norm, grad_scale}, p, from_values({n}, raw), from_values({n}, std::vector<double>(n, 1), DType::kU8), buf);
  std::vector<double> used = values(p);
  for (double& u : used) u = -u;
  return used;
}

TEST(GradClip, ScalesAndClipsByTheGlobalNorm) {
  // Norm 20 with max_norm 10: c = 10 / (20 + 1e-6) = 0.49999999975, so (12, 16) -> (6, 8).
  std::vector<double> g = used_gradient({12, 16}, 400, 10.0, 1.0);
  EXPECT_NEAR(g[0], 6, 1e-6);
  EXPECT_NEAR(g[1], 8, 1e-6);
  // Norm 0.5: untouched (c = 10 / 0.500001 > 1 is clamped to 1), exactly.
  g = used_gradient({0.3, 0.4}, 0.25, 10.0, 1.0);
  EXPECT_EQ(g[0], 0.3f);
  EXPECT_EQ(g[1], 0.4f);
  // grad_scale first: raw (24, 32) has norm 40; scaled by 0.5 the norm is 20, clipped to 10.
  g = used_gradient({24, 32}, 1600, 10.0, 0.5);
  EXPECT_NEAR(g[0], 6, 1e-6);
  EXPECT_NEAR(g[1], 8, 1e-6);
  // Without clipping, the scale alone.
  Tensor p = zeros(2), buf = zeros(2);
  StepHyper h = hand_hyper(1);
  h.momentum = 0.0;
  sgd_step(h, {nullptr, 10.0, 0.25}, p, from_values({2}, {8, -4}), from_values({2}, {1, 2}, DType::kU8), buf);
  test::expect_close(p, from_values({2}, {-0.2 * 2, 0.4 * 1}), 1e-7, 1e-7, "scaled only");
}

TEST(GradClip, NonFiniteNormSkipsEveryUpdate) {
  // A NaN or infinite norm leaves params, optimizer state and EMA exactly as they were.
  for (double bad : {std::nan(""), HUGE_VAL}) {
    for (DType dt : {DType::kF32, DType::kF64}) {
      SCOPED_TRACE(cat(bad, " ", dtype_name(dt)));
      const Tensor groups = from_values({3}, {0, 1, 2}, DType::kU8), g = from_values({3}, kG1, dt);
      Tensor p = from_values({3}, kP0, dt), s1 = from_values({3}, {1, 2, 3}, dt), s2 = from_values({3}, {4, 5, 6}, dt);
      Tensor ema = from_values({3}, {7, 8, 9}, dt), ss = from_values({1}, {bad}, dt);
      StepValues k(Device::kCPU, dt);
      k.set(hand_hyper(1), {&ss, 10.0, 1.0}, 0.5);
      sgd_step(k, p, g, groups, s1);
      adamw_step(k, p, g, groups, s1, s2);
      ema_update(k, ema, p);
      test::expect_close(p, from_values({3}, kP0, dt), 0, 0, "params");
      test::expect_close(s1, from_values({3}, {1, 2, 3}, dt), 0, 0, "state 1");
      test::expect_close(s2, from_values({3}, {4, 5, 6}, dt), 0, 0, "state 2");
      test::expect_close(ema, from_values({3}, {7, 8, 9}, dt), 0, 0, "ema");
      // The same values with a finite norm in the same buffer: the step happens.
      copy(from_values({1}, {1.0}), ss);
      sgd_step(k, p, g, groups, s1);
      ema_update(k, ema, p);
      EXPECT_NE(values(p), kP0);
      EXPECT_NE(values(ema), (std::vector<double>{7, 8, 9}));
    }
  }
}

TEST(StepValues, ReusedBufferTakesEachSetsValues) {
  // One StepValues through two steps gives what two one-off steps give: set() replaces every
  // value (the step number, hence the first-step rule, the learning rates, the EMA decay).
  Tensor p1 = from_values({3}, kP0), b1 = zeros(3), p2 = from_values({3}, kP0), b2 = zeros(3);
  Tensor e1 = from_values({3}, {1, 1, 1}), e2 = from_values({3}, {1, 1, 1});
  const Tensor groups = from_values({3}, {0, 1, 2}, DType::kU8);
  StepValues k(Device::kCPU, DType::kF32);
  StepHyper h = hand_hyper(1);
  for (int t = 1; t <= 2; ++t) {
    h.step = t;
    h.lr[1] = 0.2 * t;
    const double decay = t == 1 ? 0.25 : 0.75;
    const Tensor g = from_values({3}, t == 1 ? kG1 : kG2);
    k.set(h, {}, decay);
    sgd_step(k, p1, g, groups, b1);
    ema_update(k, e1, p1);
    sgd_step(h, {}, p2, g, groups, b2);
    ema_update(e2, p2, decay);
  }
  test::expect_close(p1, p2, 0, 0, "params");
  test::expect_close(b1, b2, 0, 0, "momentum");
  test::expect_close(e1, e2, 0, 0, "ema");
  test::expect_error([&] { sgd_step(StepValues(Device::kCPU, DType::kF64), p1, p1, groups, b1); },
                     {"sgd_step", "step values are f64", "params"});
  test::expect_error([&] { StepValues(Device::kCPU, DType::kBF16); }, {"StepValues", "bf16"});
  test::expect_error([&] { k.set(h, {}, 1.5, "train"); }, {"train", "decay 1.5"});
}

// ---- Ten steps against a reference ------------------------------------------------------

// The reference: torch.optim's loops transcribed in double, kept apart from the kernels'
// code; it receives the f32 inputs widened to double.
struct Reference {
  std::vector<double> p, buf, m, v;

  static double clip_factor(const std::vector<double>& raw, const GradClip& c) {
    if (!c.grad_sumsq) return c.grad_scale;
    double ss = 0;
    for (double x : raw) ss += x * x;
    const double norm = c.grad_scale * std::sqrt(ss);
    return c.grad_scale * std::min(1.0, c.max_norm / (norm + 1e-6));
  }
  void sgd(const StepHyper& h, const GradClip& c, const std::vector<double>& raw, const std::vector<double>& groups) {
    const double f = clip_factor(raw, c);
    for (size_t i = 0; i < p.size(); ++i) {
      const int j = static_cast<int>(groups[i]);
      double grad = raw[i] * f;
      if (j == 0) grad += h.weight_decay * p[i];
      buf[i] = h.step == 1 ? grad : h.momentum * buf[i] + grad;
      if (h.nesterov) grad += h.momentum * buf[i];
      else grad = buf[i];
      p[i] -= h.lr[j] * grad;
    }
  }
  void adamw(const StepHyper& h, const GradClip& c, const std::vector<double>& raw, const std::vector<double>& groups) {
    const double f = clip_factor(raw, c);
    const double b1 = h.momentum, b2 = h.beta2, t = static_cast<double>(h.step);
    for (size_t i = 0; i < p.size(); ++i) {
      const int j = static_cast<int>(groups[i]);
      const double grad = raw[i] * f;
      if (j == 0) p[i] *= 1 - h.lr[j] * h.weight_decay;
      m[i] = b1 * m[i] + (1 - b1) * grad;
      v[i] = b2 * v[i] + (1 - b2) * grad * grad;
      const double m_hat = m[i] / (1 - std::pow(b1, t)), v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= h.lr[j] * m_hat / (std::sqrt(v_hat) + h.eps);
    }
  }
};

enum class Algo { kSgd, kNesterov, kAdamW };

// Ten steps over n = 1000 random elements: the learning rates, momentum and grad_scale vary
// per step; every other step clips with grad_scale 0.5 and max_norm 5 (a gradient of 1000
// U(-1, 1) elements has norm ~18, ~9 once scaled, so the factor is ~0.55; the other steps
// only scale by 0.25), and the decay is 0.05 so that a decay applied to the wrong group shows.
void run_ten_steps(Algo algo, DType dt, double tol) {
  const int64_t n = 1000;
  std::mt19937_64 rng(7);
  std::vector<double> groups(n);
  for (double& g : groups) g = static_cast<double>(rng() % 3);
  Tensor groups_t = from_values({n}, groups, DType::kU8);
  Tensor p = test::random_tensor({n}, dt, 11), s1 = zeros(n, dt), s2 = zeros(n, dt);
  Reference ref{values(p), std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)};
  Tensor sumsq = zeros(1, dt);
  for (int t = 0; t < 10; ++t) {
    StepHyper h;
    h.lr[0] = 0.05 * (1 + 0.1 * t), h.lr[1] = 0.03 * (1 + 0.1 * t), h.lr[2] = 0.08 - 0.005 * t;
    h.momentum = algo == Algo::kAdamW ? 0.9 : 0.8 + 0.01 * t;
    h.weight_decay = 0.05;
    h.step = t + 1;
    h.nesterov = algo == Algo::kNesterov;
    const Tensor g = test::random_tensor({n}, dt, 100 + t);
    GradClip clip;
    if (t % 2 == 0) {
      reduce_sum_squares(g, sumsq, Tensor{});
      clip.grad_sumsq = &sumsq;
      clip.max_norm = 5;
      clip.grad_scale = 0.5;
    } else {
      clip.grad_scale = 0.25;
    }
    if (algo == Algo::kAdamW) {
      adamw_step(h, clip, p, g, groups_t, s1, s2);
      ref.adamw(h, clip, values(g), groups);
    } else {
      sgd_step(h, clip, p, g, groups_t, s1);
      ref.sgd(h, clip, values(g), groups);
    }
  }
  const auto as_tensor = [&](const std::vector<double>& v) { return from_values({n}, v, DType::kF64); };
  test::expect_close(p, as_tensor(ref.p), tol, tol, "params");
  if (algo == Algo::kAdamW) {
    // m is a decaying sum of 0.1 g (|m| < 1) and v of 0.001 g^2 (v < 1e-2): their absolute
    // errors are 10x and 1000x smaller than the params', so their atol is too.
    test::expect_close(s1, as_tensor(ref.m), tol * 1e-1, tol, "exp_avg");
    test::expect_close(s2, as_tensor(ref.v), tol * 1e-3, tol, "exp_avg_sq");
  } else {
    test::expect_close(s1, as_tensor(ref.buf), tol, tol, "momentum_buf");
  }
}

TEST(Optimizers, TenStepsMatchADoubleReference) {
  // f64: the kernels and the reference differ only in the order of a few roundings
  // (~1e-16 relative), amplified at most 1 / (1 - momentum) = 10x through the buffer: 1e-12.
  // f32: every step adds a few roundings of 2^-24 relative to values of order 1, ~1e-7 each;
  // ten steps, with the momentum buffer's memory, stay well under 1e-5 (measured: 3e-7 on
  // params, 3e-7 relative on the states), while a missing or misplaced term (decay 0.05 *
  // lr 0.05 = 2.5e-3 per step, momentum, the clip factor ~0.55) is orders of magnitude larger.
  for (Algo algo : {Algo::kSgd, Algo::kNesterov, Algo::kAdamW}) {
    SCOPED_TRACE(algo == Algo::kSgd ? "sgd" : algo == Algo::kNesterov ? "nesterov" : "adamw");
    run_ten_steps(algo, DType::kF64, 1e-12);
    run_ten_steps(algo, DType::kF32, 1e-5);
  }
}

// ---- Bad arguments -------------------------------------------------------------------------

TEST(Optimizers, BadArgumentsNameTheOpAndShapes) {
  const Tensor p = zeros(5), g = zeros(5), b = zeros(5), groups = Tensor::empty({5}, DType::kU8, Device::kCPU);
  StepHyper h = hand_hyper(1);
  test::expect_error([&] { sgd_step(h, {}, p, zeros(4), groups, b); }, {"sgd_step", "grads", "(5)", "(4)"});
  test::expect_error([&] { adamw_step(h, {}, p, g, groups, b, zeros(6)); }, {"adamw_step", "exp_avg_sq", "(6)"});
  test::expect_error([&] { sgd_step(h, {}, p, zeros(5, DType::kF64), groups, b); },
                     {"sgd_step", "storage type", "f64", "(5) f32 cpu"});
  test::expect_error([&] { sgd_step(h, {}, p, g, zeros(5), b); }, {"sgd_step", "groups must be u8", "(5) f32"});
  test::expect_error([&] { sgd_step(h, {}, p, g, Tensor::empty({4}, DType::kU8, Device::kCPU), b); },
                     {"sgd_step", "groups", "(4) u8"});
  const Tensor pb = Tensor::empty({5}, DType::kBF16, Device::kCPU);
  test::expect_error([&] { sgd_step(h, {}, pb, pb, groups, pb); }, {"sgd_step", "params must be f32", "bf16"});
  test::expect_error([&] { ema_update(zeros(3), zeros(2), 0.5); }, {"ema_update", "model", "(3)", "(2)"});
  test::expect_error([&] { ema_update(zeros(3), zeros(3), 1.5); }, {"ema_update", "decay"});

  Tensor bad_sumsq = zeros(2);
  test::expect_error([&] { sgd_step(h, {&bad_sumsq}, p, g, groups, b); }, {"sgd_step", "grad_sumsq", "(2)"});
  h.eps = 0;
  test::expect_error([&] { adamw_step(h, {}, p, g, groups, b, b); }, {"adamw_step", "eps"});
  h = hand_hyper(1);
  h.step = 0;
  test::expect_error([&] { adamw_step(h, {}, p, g, groups, b, b); }, {"adamw_step", "step is 0"});
  h = hand_hyper(1);
  h.momentum = 1.0;
  test::expect_error([&] { sgd_step(h, {}, p, g, groups, b); }, {"sgd_step", "momentum"});
  test::expect_error([&] { sgd_step(hand_hyper(1), {nullptr, 10.0, 0.0}, p, g, groups, b); },
                     {"sgd_step", "grad_scale"});
}

TEST(Optimizers, CpuRejectsUnknownGroupsBeforeWriting) {
  Tensor p = from_values({3}, {1, 2, 3}), buf = zeros(3);
  const Tensor groups = from_values({3}, {0, 3, 1}, DType::kU8);
  test::expect_error([&] { sgd_step(hand_hyper(1), {}, p, from_values({3}, {1, 1, 1}), groups, buf); },
                     {"sgd_step", "groups[1] = 3", "(3) u8 cpu"});
  test::expect_close(p, from_values({3}, {1, 2, 3}), 0, 0, "params untouched");
}

TEST(Optimizers, EmptyBuffersAreANoOp) {
  const Tensor e = zeros(0), groups = Tensor::empty({0}, DType::kU8, Device::kCPU);
  sgd_step(hand_hyper(1), {}, e, e, groups, e);
  adamw_step(hand_hyper(1), {}, e, e, groups, e, e);
  ema_update(e, e, 0.5);
}

}  // namespace
}  // namespace vt
