// Learning-rate, momentum, weight-decay, accumulation and EMA schedules (see schedule.h).
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "layers/check.h"

namespace vt {

namespace {

constexpr double kPi = 3.14159265358979323846;

// np.interp(x, [0, x1], [y0, y1]) for 0 <= x <= x1, in numpy's order of operations.
double interp(double x, double x1, double y0, double y1) {
  const double slope = (y1 - y0) / x1;
  return slope * x + y0;
}

void check_config(const char* fn, const ScheduleConfig& cfg) {
  VT_CHECK(cfg.lr0 >= 0 && std::isfinite(cfg.lr0), fn, ": lr0 = ", cfg.lr0);
  VT_CHECK(cfg.lrf >= 0 && std::isfinite(cfg.lrf), fn, ": lrf = ", cfg.lrf);
  VT_CHECK(cfg.batch >= 1 && cfg.nbs >= 1, fn, ": batch ", cfg.batch, " and nbs ", cfg.nbs, " must be >= 1");
}

}  // namespace

double lr_factor(const ScheduleConfig& cfg, int64_t epoch, int64_t epochs) {
  VT_CHECK(epochs >= 1, "lr_factor: epochs = ", epochs);
  const double e = static_cast<double>(epoch), n = static_cast<double>(epochs);
  if (cfg.cos_lr) return std::max((1 - std::cos(e * kPi / n)) / 2, 0.0) * (cfg.lrf - 1) + 1;
  return std::max(1 - e / n, 0.0) * (1 - cfg.lrf) + cfg.lrf;
}

int64_t warmup_iterations(const ScheduleConfig& cfg, int64_t iters_per_epoch) {
  VT_CHECK(iters_per_epoch >= 1, "warmup_iterations: iters_per_epoch = ", iters_per_epoch);
  if (!(cfg.warmup_epochs > 0)) return 0;
  const double nw = std::nearbyint(cfg.warmup_epochs * static_cast<double>(iters_per_epoch));
  return std::max<int64_t>(static_cast<int64_t>(nw), 100);
}

int64_t accumulate_steps(const ScheduleConfig& cfg) {
  check_config("accumulate_steps", cfg);
  const double r = std::nearbyint(static_cast<double>(cfg.nbs) / static_cast<double>(cfg.batch));
  return std::max<int64_t>(static_cast<int64_t>(r), 1);
}

double scaled_weight_decay(const ScheduleConfig& cfg) {
  return cfg.weight_decay * static_cast<double>(cfg.batch) * static_cast<double>(accumulate_steps(cfg)) /
         static_cast<double>(cfg.nbs);
}

int64_t accumulate_at(const ScheduleConfig& cfg, int64_t iteration, int64_t iters_per_epoch) {
  VT_CHECK(iteration >= 0, "accumulate_at: iteration = ", iteration);
  const int64_t nw = warmup_iterations(cfg, iters_per_epoch);
  if (iteration >= nw) return accumulate_steps(cfg);
  const double a = interp(static_cast<double>(iteration), static_cast<double>(nw), 1.0,
                          static_cast<double>(cfg.nbs) / static_cast<double>(cfg.batch));
  return std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(a)));
}

StepHyper schedule_at(const ScheduleConfig& cfg, int64_t iteration, int64_t epoch, int64_t iters_per_epoch,
                      int64_t epochs) {
  check_config("schedule_at", cfg);
  VT_CHECK(iters_per_epoch >= 1 && epochs >= 1, "schedule_at: iters_per_epoch ", iters_per_epoch, " and epochs ",
           epochs, " must be >= 1");
  VT_CHECK(iteration >= 0 && epoch == iteration / iters_per_epoch, "schedule_at: iteration ", iteration,
           " is not in epoch ", epoch, " (", iters_per_epoch, " iterations per epoch)");
  const double target = cfg.lr0 * lr_factor(cfg, epoch, epochs);
  const int64_t nw = warmup_iterations(cfg, iters_per_epoch);
  StepHyper h;
  h.weight_decay = scaled_weight_decay(cfg);
  h.momentum = cfg.momentum;
  for (int j = 0; j < 3; ++j) h.lr[j] = target;
  if (iteration < nw) {
    const double x = static_cast<double>(iteration), x1 = static_cast<double>(nw);
    for (int j = 0; j < 3; ++j)
      h.lr[j] = interp(x, x1, j == 2 ? cfg.warmup_bias_lr : 0.0, target);
    if (cfg.optimizer == OptimizerKind::kSGD)
      h.momentum = interp(x, x1, cfg.warmup_momentum, cfg.momentum);
  }
  return h;
}

ScheduleConfig resolve_auto_optimizer(ScheduleConfig cfg, int64_t train_images, int64_t epochs,
                                      int64_t num_classes) {
  check_config("resolve_auto_optimizer", cfg);
  VT_CHECK(train_images >= 1 && epochs >= 1 && num_classes >= 1, "resolve_auto_optimizer: train_images ",
           train_images, ", epochs ", epochs, ", num_classes ", num_classes, " must all be >= 1");
  const int64_t per_epoch = std::max(cfg.batch, cfg.nbs);
  const int64_t iterations = (train_images + per_epoch - 1) / per_epoch * epochs;
  if (iterations > 10000) {
    cfg.optimizer = OptimizerKind::kSGD;
    cfg.lr0 = 0.01;
  } else {
    cfg.optimizer = OptimizerKind::kAdamW;
    cfg.lr0 = std::nearbyint(0.002 * 5 / static_cast<double>(4 + num_classes) * 1e6) / 1e6;
    cfg.momentum = 0.9;
  }
  cfg.warmup_bias_lr = 0.0;
  return cfg;
}

double ema_decay(int64_t updates, double decay, double tau) {
  VT_CHECK(updates >= 0 && tau > 0, "ema_decay: updates ", updates, ", tau ", tau);
  return decay * (1 - std::exp(-static_cast<double>(updates) / tau));
}

}  // namespace vt
