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
// reduce_sum_squares leaves it on the device: the kernel reads it there, so a CUDA step never
// waits for the host. As in torch, a non-finite norm makes c NaN or 0 and poisons the step;
// the caller checks count_nonfinite (layers/reduce.h) to skip such steps.
//
// Semantics are torch.optim's exactly (up to float rounding), per group j of an element:
//   SGD:   d = g + wd * p (group 0 only); buf = (step == 1) ? d : momentum * buf + d;
//          d = nesterov ? d + momentum * buf : buf;  p -= lr[j] * d.
//          step == 1 overwrites buf whatever it held, as torch creates the buffer then.
//   AdamW: p *= 1 - lr[j] * wd (group 0 only); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//          p -= lr[j] / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), b1 = momentum, t = step.
//   EMA:   ema = decay * ema + (1 - decay) * model (Ultralytics ModelEMA.update).
// Arithmetic is in the storage type (fp32; fp64 in the CPU double mode); the per-step
// constants (bias corrections, 1 - lr * wd, 1 - decay) are formed once in double on the host.
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

// One SGD step. momentum_buf: (n).
void sgd_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s = {});
// One AdamW step. exp_avg, exp_avg_sq: (n).
void adamw_step(const StepHyper& h, const GradClip& clip, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s = {});
// ema = decay * ema + (1 - decay) * model; ema, model: same shape and type (f32, or f64 on the
// CPU), one device; decay in [0, 1] (from ema_decay, optim/schedule.h).
void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s = {});

// The per-step constants both backends use, formed in double on the host.
struct UpdateConstants {
  double lr[3];
  double decay_mult[3];  // AdamW: 1 - lr[j] * wd for group 0, 1 for the others
  double step_size[3];   // AdamW: lr[j] / (1 - b1^t)
  double bc2_sqrt;       // AdamW: sqrt(1 - b2^t)
  double momentum, one_minus_b1, beta2, one_minus_b2, eps, weight_decay;
  bool first;            // SGD: step == 1
  bool nesterov;
  // Clipping: the multiplier is grad_scale * c(*sumsq), evaluated where sumsq lives.
  double grad_scale, max_norm;
  const void* sumsq;  // grad_sumsq's data, or null
};
UpdateConstants update_constants(const StepHyper& h, const GradClip& clip);

namespace cpu {
void sgd_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf);
void adamw_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq);
void ema_update(const Tensor& ema, const Tensor& model, double decay);
}  // namespace cpu
namespace cuda {
void sgd_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf, Stream s);
void adamw_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s);
void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s);
}  // namespace cuda

}  // namespace vt
