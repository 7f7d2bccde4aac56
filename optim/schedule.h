// Host-side schedules, pure functions of the iteration: learning rates and momentum with
// warmup, weight-decay scaling, gradient accumulation, the EMA decay ramp, and Ultralytics'
// "auto" optimizer choice. They follow the Ultralytics YOLOv8 trainer
// (ultralytics/engine/trainer.py) so that a run here and there see the same numbers:
//
//   lf(e) = (1 - e / epochs) * (1 - lrf) + lrf                     linear (default)
//   lf(e) = (1 - cos(e * pi / epochs)) / 2 * (lrf - 1) + 1         cos_lr (one_cycle 1 -> lrf)
//   outside warmup, every group: lr = lr0 * lf(epoch), momentum = momentum. epoch is an
//     integer: Ultralytics steps its LambdaLR once per epoch.
//   warmup, iteration ni < nw = max(round(warmup_epochs * iters_per_epoch), 100) (none when
//     warmup_epochs <= 0): np.interp(ni, [0, nw], ...) per group from warmup_bias_lr (biases,
//     group 2) or 0 (groups 0, 1) to lr0 * lf(epoch); SGD's momentum from warmup_momentum to
//     momentum. Ultralytics tests ni <= nw; at ni == nw the interpolation gives exactly the
//     values outside warmup, so "<" is the same schedule.
//   AdamW: Ultralytics' Adam param groups have "betas", no "momentum" key, so its warmup
//     leaves beta1 alone: beta1 = momentum throughout.
//   weight decay (group 0 only) = weight_decay * batch * accumulate / nbs, with
//     accumulate = max(round(nbs / batch), 1): the decay per image stays that of a batch of nbs.
//
// Python's round and np.round round halves to even; so does std::nearbyint here.
#pragma once

#include <cstdint>

#include "optim/update.h"

namespace vt {

struct ScheduleConfig {
  OptimizerKind optimizer = OptimizerKind::kSGD;
  double lr0 = 0.01;            // initial learning rate
  double lrf = 0.01;            // final learning rate, as a fraction of lr0
  double momentum = 0.937;      // SGD momentum, AdamW beta1
  double weight_decay = 5e-4;   // as the user gives it; scaled_weight_decay is what is applied
  double warmup_epochs = 3.0;   // may be fractional; <= 0: no warmup
  double warmup_momentum = 0.8;
  double warmup_bias_lr = 0.1;
  bool cos_lr = false;
  int64_t batch = 16;           // global batch of one forward/backward (all ranks together)
  int64_t nbs = 64;             // nominal batch size
};

// lf(epoch) above, the factor on lr0.
double lr_factor(const ScheduleConfig& cfg, int64_t epoch, int64_t epochs);

// nw above; 0 when there is no warmup.
int64_t warmup_iterations(const ScheduleConfig& cfg, int64_t iters_per_epoch);

// max(round(nbs / batch), 1): the micro-batches summed into one optimizer step after warmup.
int64_t accumulate_steps(const ScheduleConfig& cfg);
// weight_decay * batch * accumulate_steps / nbs.
double scaled_weight_decay(const ScheduleConfig& cfg);
// The accumulation in force at global iteration ni: during warmup
// max(1, round(np.interp(ni, [0, nw], [1, nbs / batch]))), else accumulate_steps. Ultralytics
// steps the optimizer at ni when ni - (ni of the last step, -1 at the start) >= this.
int64_t accumulate_at(const ScheduleConfig& cfg, int64_t iteration, int64_t iters_per_epoch);

// The hyperparameters of global iteration `iteration` (0-based, = i + iters_per_epoch * epoch
// for batch i of `epoch`, which must be its epoch) of a run of `epochs` epochs. Sets lr,
// momentum and weight_decay (scaled); leaves `step` 0 for the caller, who counts optimizer
// steps, and the other fields at their defaults (beta2 0.999, eps 1e-8, Nesterov).
StepHyper schedule_at(const ScheduleConfig& cfg, int64_t iteration, int64_t epoch, int64_t iters_per_epoch,
                      int64_t epochs);

// Ultralytics' optimizer=auto: with iterations = ceil(train_images / max(batch, nbs)) * epochs,
// more than 10000 gives SGD with lr0 0.01, otherwise AdamW with lr0 = round(0.002 * 5 /
// (4 + num_classes), 6) and beta1 0.9; either way warmup_bias_lr becomes 0. Ultralytics also
// builds auto-SGD with momentum 0.9, but its warmup then ramps momentum to the configured
// value (0.937), which this keeps; the two differ only with warmup_epochs <= 0.
ScheduleConfig resolve_auto_optimizer(ScheduleConfig cfg, int64_t train_images, int64_t epochs,
                                      int64_t num_classes);

// Ultralytics ModelEMA's decay after `updates` EMA updates, counted from 1 (ModelEMA increments
// before it reads): decay * (1 - exp(-updates / tau)). 0 at updates = 0, 0.632 * decay at tau.
double ema_decay(int64_t updates, double decay = 0.9999, double tau = 2000);

}  // namespace vt
