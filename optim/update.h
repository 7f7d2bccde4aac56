// Fused updates over flat buffers: SGD (momentum, Nesterov) and AdamW steps over the whole
// flat parameter buffer, and the EMA of a buffer (the model's weights, and separately its BN
// running statistics). Each is one elementwise pass (one kernel on CUDA), so the result is
// deterministic and independent of the launch geometry.
//
// Buffers: all read as flat arrays of n = params.numel() elements and all of params' shape.
//   params      (n) f32 (or f64 on the CPU); updated in place.
//   grads       (n) params' type; read only (the caller zeroes it before the next step).
//   groups      (n) u8; each element's parameter group, as Ultralytics' build_optimizer:
//               0 = weights (conv/linear; the only group with weight decay),
//               1 = normalisation weights (BN gamma), 2 = biases (BN beta, conv biases).
//               Other values are a contract violation: the CPU backend throws, CUDA (which
//               cannot look without a host sync) treats them as 2.
//   state       params' type, owned by the caller (memory plan), zero before the first step:
//               SGD: momentum_buf (n); AdamW: exp_avg (n) and exp_avg_sq (n).
//
// The gradient an update uses (GradClip): g = grads[i] * grad_scale * c, where, when
// grad_sumsq is given, c = min(1, max_norm / (grad_scale * sqrt(grad_sumsq) + 1e-6)), i.e.
// torch.nn.utils.clip_grad_norm_ applied to the scaled gradient (Ultralytics clips after
// unscaling, max_norm 10). grad_sumsq is the sum of squares of the RAW grads as
// reduce_sum_squares leaves it on the device: the kernels read it there. When it is not
// finite, sgd_step, adamw_step and ema_update leave every buffer as it was (the step is
// skipped, as a GradScaler skips a step with inf/NaN gradients); the caller learns it by
// reading grad_sumsq once the step is done.
//
// Step values: the per-step numbers (learning rates, bias corrections, momentum, the EMA
// decay, the clipping limits) are not kernel arguments. StepValues keeps them in a small
// buffer on the params' device that the kernels read, and the host sets them before it
// queues a step; so a CUDA graph of the whole step, captured once, replays every later step
// with that step's values, and nothing in an update waits for the host.
//
// Semantics are torch.optim's exactly (up to float rounding), per group j of an element:
//   SGD:   d = g + wd * p (group 0 only); buf = (step == 1) ? d : momentum * buf + d;
//          d = nesterov ? d + momentum * buf : buf;  p -= lr[j] * d.
//          step == 1 overwrites buf whatever it held, as torch creates the buffer then.
//   AdamW: p *= 1 - lr[j] * wd (group 0 only); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//          p -= lr[j] / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), b1 = momentum, t = step.
//   EMA:   ema = decay * ema + (1 - decay) * model (Ultralytics ModelEMA.update).
// Arithmetic is in the storage type (fp32; fp64 in the CPU double mode); the per-step
// constants (bias corrections, 1 - lr * wd, 1 - decay) are formed once in double on the host
// and stored in that type.
#pragma once

#include <cstdint>

#include "layers/tensor.h"

namespace vt {

enum class OptimizerKind : uint8_t { kSGD, kAdamW };
const char* optimizer_name(OptimizerKind kind);  // "SGD", "AdamW"

// The hyperparameters of one step; schedule_at (optim/schedule.h) fills all but `step`.
// Doubles on the host (the f64 CPU mode keeps their precision); fp32 kernels round them once.
struct StepHyper {
  double lr[3] = {0.01, 0.01, 0.01};  // per group: weights, normalisation weights, biases
  double momentum = 0.937;            // SGD momentum; AdamW beta1
  double weight_decay = 5e-4;         // group 0 only
  int64_t step = 0;                   // 1-based count of optimizer steps; must be >= 1
  double beta2 = 0.999;               // AdamW
  double eps = 1e-8;                  // AdamW
  bool nesterov = true;               // SGD; Ultralytics always uses Nesterov
};

// How the raw gradient becomes the one the update uses (see the top of this file).
struct GradClip {
  const Tensor* grad_sumsq = nullptr;  // (1) params' type on params' device, or none: no clipping
  double max_norm = 10;
  double grad_scale = 1;  // > 0: 1 / loss scale, 1 / accumulation, ...; applied before clipping
};

// The layout of the step values buffer, in the params' storage type T: what the kernels read.
template <class T>
struct StepValuesOf {
  T lr[3];          // per group
  T decay_mult0;    // AdamW: 1 - lr[0] * wd (groups 1 and 2 do not decay)
  T step_size[3];   // AdamW: lr[j] / (1 - b1^t)
  T bc2_sqrt;       // AdamW: sqrt(1 - b2^t)
  T momentum, one_minus_b1, beta2, one_minus_b2, eps, weight_decay;
  T grad_scale, max_norm;
  T ema_decay, one_minus_ema_decay;
  T first;     // SGD: 1 at step 1, else 0
  T nesterov;  // 1 or 0
};

// The step values of updates of params with storage type dt on dev (f32, or f64 on the CPU).
class StepValues {
 public:
  // Allocates the buffer and its host staging copy: make one before the steps, not inside one.
  StepValues(Device dev, DType dt);
  // Checks h and clip (errors name `op`) and writes the values. The copy is synchronous and,
  // on CUDA, ordered after the work already queued on the legacy default stream and on
  // blocking streams, so an update queued earlier still reads the values it was queued with.
  // ema_decay is ema_update's, in [0, 1]. clip.grad_sumsq, when given, must outlive the
  // updates that use these values: they read it on the device.
  void set(const StepHyper& h, const GradClip& clip, double ema_decay = 1, const char* op = "StepValues::set");
  const Tensor& buffer() const { return buf_; }  // (kCount) of dt on dev
  const Tensor* grad_sumsq() const { return sumsq_; }
  static constexpr int64_t kCount = sizeof(StepValuesOf<float>) / sizeof(float);

 private:
  Tensor buf_, host_;  // (kCount) on dev, and on the host for set()
  const Tensor* sumsq_ = nullptr;
};

// One SGD step with the values set in k. momentum_buf: (n).
void sgd_step(const StepValues& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf, Stream s = {});
// One AdamW step. exp_avg, exp_avg_sq: (n).
void adamw_step(const StepValues& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s = {});
// ema = k's decay * ema + (1 - decay) * model; ema, model: same shape and k's type and device.
// Skipped, like the updates, when k's grad_sumsq is not finite.
void ema_update(const StepValues& k, const Tensor& ema, const Tensor& model, Stream s = {});

// One-off forms with step values of their own, set and used once (tests, single calls): they
// allocate, so a training step uses the forms above.
void sgd_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s = {});
void adamw_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s = {});
// decay in [0, 1] (from ema_decay, optim/schedule.h).
void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s = {});

// The backends: `values` is a StepValues buffer, `sumsq` its grad_sumsq (or null).
namespace cpu {
void sgd_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf);
void adamw_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq);
void ema_update(const Tensor& values, const Tensor* sumsq, const Tensor& ema, const Tensor& model);
}  // namespace cpu
namespace cuda {
void sgd_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s);
void adamw_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s);
void ema_update(const Tensor& values, const Tensor* sumsq, const Tensor& ema, const Tensor& model, Stream s);
}  // namespace cuda

}  // namespace vt
