// Schedule tests: learning rates and momentum through warmup and decay (linear and cosine),
// the warmup length, accumulation and weight-decay scaling, Ultralytics' auto optimizer, and
// the EMA decay ramp; every expected value is worked out by hand in the comments.
#include "optim/schedule.h"

#include <cmath>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

// The expected values below carry 11 or more significant digits; schedule steps are 1e-6
// and up, so 1e-12 absolute tells every wrong value from rounding.
void expect_hyper(const StepHyper& h, double lr_w, double lr_bias, double momentum) {
  EXPECT_NEAR(h.lr[0], lr_w, 1e-12);
  EXPECT_NEAR(h.lr[1], lr_w, 1e-12);
  EXPECT_NEAR(h.lr[2], lr_bias, 1e-12);
  EXPECT_NEAR(h.momentum, momentum, 1e-12);
}

TEST(Schedule, LinearWithWarmup) {
  // Defaults: lr0 0.01, lrf 0.01, momentum 0.937, warmup 3 epochs from momentum 0.8 and bias
  // lr 0.1. 100 epochs of 50 iterations: nw = max(round(3 * 50), 100) = 150.
  // lf(e) = (1 - e / 100) * 0.99 + 0.01.
  const ScheduleConfig cfg;
  const int64_t nb = 50, epochs = 100;
  ASSERT_EQ(warmup_iterations(cfg, nb), 150);
  // Start of warmup: weights from 0, biases from warmup_bias_lr, momentum from 0.8.
  expect_hyper(schedule_at(cfg, 0, 0, nb, epochs), 0.0, 0.1, 0.8);
  // Middle (iteration 75, epoch 1): target lr0 lf(1) = 0.01 * (0.99 * 0.99 + 0.01) = 0.009901;
  // half way: weights 0.0049505, biases 0.1 + (0.009901 - 0.1) / 2 = 0.0549505,
  // momentum 0.8 + 0.137 / 2 = 0.8685.
  expect_hyper(schedule_at(cfg, 75, 1, nb, epochs), 0.0049505, 0.0549505, 0.8685);
  // Last warmup iteration (149, epoch 2): target 0.01 * (0.98 * 0.99 + 0.01) = 0.009802;
  // weights 0.009802 * 149 / 150 = 0.00973665333, biases 0.1 - 0.090198 * 149 / 150 =
  // 0.01040332, momentum 0.8 + 0.137 * 149 / 150 = 0.93608667.
  expect_hyper(schedule_at(cfg, 149, 2, nb, epochs), 0.009802 * 149 / 150, 0.01040332, 0.8 + 0.137 * 149 / 150);
  // After warmup (150, epoch 3): every group lr0 lf(3) = 0.01 * (0.97 * 0.99 + 0.01) = 0.009703.
  expect_hyper(schedule_at(cfg, 150, 3, nb, epochs), 0.009703, 0.009703, 0.937);
  // Last epoch (99): 0.01 * (0.01 * 0.99 + 0.01) = 0.000199.
  expect_hyper(schedule_at(cfg, 4999, 99, nb, epochs), 0.000199, 0.000199, 0.937);
  // Weight decay at the default batch 16: accumulate 4, 5e-4 * 16 * 4 / 64 = 5e-4.
  const StepHyper h = schedule_at(cfg, 150, 3, nb, epochs);
  EXPECT_DOUBLE_EQ(h.weight_decay, 5e-4);
  EXPECT_EQ(h.step, 0) << "the caller counts optimizer steps";
  EXPECT_TRUE(h.nesterov);
}

TEST(Schedule, CosineWithWarmup) {
  // lf(e) = (1 - cos(e pi / 100)) / 2 * (0.01 - 1) + 1.
  ScheduleConfig cfg;
  cfg.cos_lr = true;
  const int64_t nb = 50, epochs = 100;
  // lf(1): cos(pi / 100) = 0.99950656037, (1 - it) / 2 = 2.4671982e-4, times -0.99, plus 1:
  // 0.99975574738, so the target is 0.0099975574738; half way through warmup the weights
  // have half of it, the biases 0.1 + (0.0099975574738 - 0.1) / 2 = 0.0549987787369.
  expect_hyper(schedule_at(cfg, 75, 1, nb, epochs), 0.0099975574738 / 2, 0.0549987787369, 0.8685);
  // lf(3): cos(0.03 pi) = 0.99556196460, so 1 - 0.99 * 0.0022190177 = 0.99780317248.
  expect_hyper(schedule_at(cfg, 150, 3, nb, epochs), 0.0099780317248, 0.0099780317248, 0.937);
  // lf(50) = 0.5 * -0.99 + 1 = 0.505.
  expect_hyper(schedule_at(cfg, 2500, 50, nb, epochs), 0.00505, 0.00505, 0.937);
  // lf(99): cos(0.99 pi) = -0.99950656037, so 1 - 0.99 * 0.99975328018 = 0.01024425262.
  expect_hyper(schedule_at(cfg, 4999, 99, nb, epochs), 1.024425262e-4, 1.024425262e-4, 0.937);
  EXPECT_NEAR(lr_factor(cfg, 0, epochs), 1.0, 1e-15);
  EXPECT_NEAR(lr_factor(cfg, 100, epochs), 0.01, 1e-15);
}

TEST(Schedule, AdamWKeepsBeta1ThroughWarmup) {
  // Ultralytics' Adam groups have no "momentum" key, so warmup leaves beta1 alone; the
  // learning rates warm up as for SGD.
  ScheduleConfig cfg;
  cfg.optimizer = OptimizerKind::kAdamW;
  cfg.momentum = 0.9;
  expect_hyper(schedule_at(cfg, 0, 0, 50, 100), 0.0, 0.1, 0.9);
  expect_hyper(schedule_at(cfg, 75, 1, 50, 100), 0.0049505, 0.0549505, 0.9);
}

TEST(Schedule, WarmupLength) {
  ScheduleConfig cfg;
  EXPECT_EQ(warmup_iterations(cfg, 10), 100);  // 3 * 10 = 30, raised to the minimum of 100
  cfg.warmup_epochs = 0.5;
  EXPECT_EQ(warmup_iterations(cfg, 405), 202);  // round(202.5) = 202: halves go to even
  EXPECT_EQ(warmup_iterations(cfg, 403), 202);  // round(201.5) = 202
  cfg.warmup_epochs = 0;
  EXPECT_EQ(warmup_iterations(cfg, 50), 0);
  // Without warmup the first iteration already has the epoch's values.
  expect_hyper(schedule_at(cfg, 0, 0, 50, 100), 0.01, 0.01, 0.937);
}

TEST(Schedule, AccumulationAndWeightDecayScaling) {
  ScheduleConfig cfg;  // nbs 64
  // batch 16: accumulate round(4) = 4, decay 5e-4 * 16 * 4 / 64 = 5e-4.
  EXPECT_EQ(accumulate_steps(cfg), 4);
  EXPECT_DOUBLE_EQ(scaled_weight_decay(cfg), 5e-4);
  // batch 24: round(2.667) = 3, decay 5e-4 * 24 * 3 / 64 = 5.625e-4.
  cfg.batch = 24;
  EXPECT_EQ(accumulate_steps(cfg), 3);
  EXPECT_NEAR(scaled_weight_decay(cfg), 5.625e-4, 1e-18);
  // batch 40: round(1.6) = 2, decay 5e-4 * 40 * 2 / 64 = 6.25e-4.
  cfg.batch = 40;
  EXPECT_EQ(accumulate_steps(cfg), 2);
  EXPECT_NEAR(scaled_weight_decay(cfg), 6.25e-4, 1e-18);
  // batch 128: round(0.5) = 0 (half to even), at least 1; decay 5e-4 * 128 / 64 = 1e-3.
  cfg.batch = 128;
  EXPECT_EQ(accumulate_steps(cfg), 1);
  EXPECT_NEAR(scaled_weight_decay(cfg), 1e-3, 1e-18);

  // During warmup (nw = 100 at 10 iterations per epoch) the accumulation ramps from 1 to
  // nbs / batch = 4: round(1 + 3 ni / 100).
  cfg.batch = 16;
  EXPECT_EQ(accumulate_at(cfg, 0, 10), 1);
  EXPECT_EQ(accumulate_at(cfg, 16, 10), 1);  // 1.48
  EXPECT_EQ(accumulate_at(cfg, 17, 10), 2);  // 1.51
  EXPECT_EQ(accumulate_at(cfg, 50, 10), 2);  // 2.5 rounds to even
  EXPECT_EQ(accumulate_at(cfg, 51, 10), 3);  // 2.53
  EXPECT_EQ(accumulate_at(cfg, 99, 10), 4);  // 3.97
  EXPECT_EQ(accumulate_at(cfg, 100, 10), 4);
  EXPECT_EQ(accumulate_at(cfg, 5000, 10), 4);
}

TEST(Schedule, AutoOptimizerFollowsUltralytics) {
  ScheduleConfig cfg;
  // coco128: ceil(128 / max(16, 64)) * 100 = 200 iterations <= 10000: AdamW with
  // lr0 = round(0.002 * 5 / 84, 6) = 0.000119 and beta1 0.9.
  ScheduleConfig a = resolve_auto_optimizer(cfg, 128, 100, 80);
  EXPECT_EQ(a.optimizer, OptimizerKind::kAdamW);
  EXPECT_DOUBLE_EQ(a.lr0, 0.000119);
  EXPECT_DOUBLE_EQ(a.momentum, 0.9);
  EXPECT_DOUBLE_EQ(a.warmup_bias_lr, 0.0);
  // 3 classes: round(0.01 / 7, 6) = 0.001429.
  EXPECT_DOUBLE_EQ(resolve_auto_optimizer(cfg, 128, 100, 3).lr0, 0.001429);
  // Exactly 10000 iterations (6400 images) is still AdamW; 6401 images make 10100: SGD.
  EXPECT_EQ(resolve_auto_optimizer(cfg, 6400, 100, 80).optimizer, OptimizerKind::kAdamW);
  ScheduleConfig s = resolve_auto_optimizer(cfg, 6401, 100, 80);
  EXPECT_EQ(s.optimizer, OptimizerKind::kSGD);
  EXPECT_DOUBLE_EQ(s.lr0, 0.01);
  EXPECT_DOUBLE_EQ(s.momentum, 0.937);
  EXPECT_DOUBLE_EQ(s.warmup_bias_lr, 0.0);
  EXPECT_STREQ(optimizer_name(s.optimizer), "SGD");
}

TEST(Schedule, EmaDecayRamp) {
  // 0.9999 (1 - exp(-u / 2000)): 0 at 0; exp(-1/2000) = 0.99950012497, so 4.99825033e-4 at 1;
  // 0.9999 (1 - 1/e) = 0.63205734677 at 2000; 0.9999 (1 - e^-10) = 0.99985460461 at 20000.
  EXPECT_EQ(ema_decay(0), 0.0);
  EXPECT_NEAR(ema_decay(1), 4.99825033328626e-4, 1e-15);
  EXPECT_NEAR(ema_decay(2000), 0.6320573467726748, 1e-15);
  EXPECT_NEAR(ema_decay(20000), 0.9998546046102305, 1e-15);
  EXPECT_NEAR(ema_decay(1000000), 0.9999, 1e-15);
  EXPECT_NEAR(ema_decay(100, 0.5, 100), 0.5 * (1 - std::exp(-1.0)), 1e-15);
}

TEST(Schedule, BadArguments) {
  const ScheduleConfig cfg;
  test::expect_error([&] { schedule_at(cfg, 75, 0, 50, 100); }, {"schedule_at", "iteration 75 is not in epoch 0"});
  test::expect_error([&] { schedule_at(cfg, 0, 0, 0, 100); }, {"schedule_at", "iters_per_epoch 0"});
  ScheduleConfig bad = cfg;
  bad.batch = 0;
  test::expect_error([&] { accumulate_steps(bad); }, {"accumulate_steps", "batch 0"});
  test::expect_error([&] { ema_decay(-1); }, {"ema_decay", "updates -1"});
}

}  // namespace
}  // namespace vt
