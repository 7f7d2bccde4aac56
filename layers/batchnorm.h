// Batch normalisation over NHWC activations, per channel over the M = N*H*W positions.
//
// Training normalises with the batch statistics (mean and biased variance over M) and folds
// them into the running statistics; eval normalises with the running statistics. Semantics
// follow PyTorch's BatchNorm2d, with Ultralytics' YOLOv8 defaults (momentum 0.03, eps 1e-3):
//   train: mean_c = sum_m x / M, var_c = sum_m (x - mean_c)^2 / M (biased),
//          invstd_c = 1 / sqrt(var_c + eps), y = gamma_c * (x - mean_c) * invstd_c + beta_c,
//          running_mean = (1 - momentum) * running_mean + momentum * mean_c,
//          running_var  = (1 - momentum) * running_var  + momentum * var_c * M / (M - 1).
//          With M == 1 the unbiased correction is undefined (PyTorch refuses such a batch);
//          here running_var is updated with the biased variance (0) instead, and y = beta.
//   eval:  y = gamma_c * (x - running_mean_c) / sqrt(running_var_c + eps) + beta_c.
// With p.silu the op is BN followed by SiLU, fused (Ultralytics' Conv is conv -> BN -> SiLU):
// the forward writes y = silu(u) = u * sigmoid(u) where u is the BN output above, never
// stored; the backward takes dy = d(loss)/d(that y), forms g = dy * silu'(u) with u recomputed
// from x, the statistics, gamma and beta, and proceeds with g in place of dy. One pass over
// the activations in each direction instead of two, and no buffer for u or its gradient.
// With p.residual the op also ends in a residual add (Ultralytics' Bottleneck, x + cv2(cv1(x)),
// cv2 ending in this BN and its SiLU): the forward writes y = r + act(u) (act: the SiLU or
// nothing) and the backward, dy now being d(loss)/d(that sum), also adds dy into dr (writes it
// with p.overwrite_dresidual); the activation's own output is never stored, and its gradient
// is dy itself. r and dr: y's shape, type and device; the forward reads residual, the
// backward dresidual (null: no gradient wanted; one needs dx, whose pass writes it).
// Shapes: x, y, dx, dy: (N, H, W, C); gamma, beta, running_mean, running_var, save_mean,
// save_invstd, dgamma, dbeta: (C). Activations in their storage type (f32/f64 on the CPU,
// f32/bf16 on CUDA); every (C) tensor in param_dtype of it (f32, or f64 with f64 activations).
// y must not alias x and dx must not alias x or dy: the backward passes read x.
// y, dy, r and dr may be channel views (Tensor::channels: parts of a concatenation written in
// place), each with its own pitch; x and dx are contiguous.
// Gradients ACCUMULATE (+=) into dx, dgamma and dbeta; the caller zeroes them once per step.
// With p.overwrite_dx the backward writes dx = ... instead (for an input no other op reads:
// dx then needs no zeroing, and the GPU skips reading it).
// An empty batch (M == 0) or C == 0 writes nothing (statistics included).
#pragma once

#include "layers/tensor.h"

namespace vt {

struct BatchNormParams {
  double momentum = 0.03;     // weight of the batch statistic in the running update, in [0, 1]
  double eps = 1e-3;          // added to the variance, > 0
  bool silu = false;          // fused SiLU after the affine map (see the top of this file)
  bool overwrite_dx = false;  // backward: dx = dL/dx instead of dx += dL/dx
  // The fused residual add (see the top): r (forward) and dr (backward), or null for none.
  const Tensor* residual = nullptr;
  const Tensor* dresidual = nullptr;
  bool overwrite_dresidual = false;  // backward: dr = dy instead of dr += dy
};

// Scratch for the training passes on CUDA: with a workspace of at least this many bytes (f32
// storage, on x's device), their per-channel sums are split over slices of the M positions
// (batchnorm_slices) across many blocks and combined in slice order (deterministic); without
// one, each group of 32 channels is reduced by a single block (correct, few blocks). 0 on the
// CPU, which ignores the workspace.
int64_t batchnorm_slices(const Shape& x);
size_t batchnorm_workspace_bytes(const Shape& x, Device dev);
// (C) arrays of per-channel coefficients the CUDA elementwise passes read from the workspace,
// after the slice partials (batchnorm.cu).
constexpr int64_t kBatchNormCoefficients = 5;

// Training forward. Overwrites y, save_mean (= mean_c) and save_invstd (= invstd_c, with
// eps); updates running_mean and running_var in place. tile_stats (CUDA, with a workspace):
// x's statistics already reduced per tile of positions, (T, C, 3) f32 (count, mean, M2), as
// the convolution that wrote x leaves them (conv2d_forward): they are combined instead of
// reading x a first time, so x is read once.
void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p, Stream s = {},
                             const Tensor& workspace = {}, const Tensor* tile_stats = nullptr);
// Eval forward with the running statistics. Overwrites y; reads nothing else it writes.
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p, Stream s = {});

// Training backward, through the batch statistics saved by batchnorm_forward_train (of p only
// `silu` is read: eps is already inside save_invstd). With xhat = (x - save_mean) * save_invstd
// and g = dy (or dy * silu'(gamma * xhat + beta) with p.silu):
//   dx     += gamma * save_invstd * (g - sum_m(g) / M - xhat * sum_m(g * xhat) / M)
//   dgamma += sum_m(g * xhat),  dbeta += sum_m(g).
// Any of dx, dgamma, dbeta may be null (that gradient is not wanted).
void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, Stream s = {},
                        const Tensor& workspace = {});
// Eval backward, frozen statistics (fine-tuning with frozen BN): the forward is a fixed
// per-channel affine map. With invstd = 1 / sqrt(running_var + eps), xhat = (x - running_mean) * invstd
// and g as above:
//   dx += g * gamma * invstd,  dgamma += sum_m(g * xhat),  dbeta += sum_m(g).
// Any of dx, dgamma, dbeta may be null.
void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p,
                             Stream s = {});

namespace cpu {
void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p);
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p);
void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p);
void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p);
}  // namespace cpu
namespace cuda {
// workspace: null, or batchnorm_workspace_bytes(x) bytes (the sliced reductions).
// tile_stats: null, or (T, C, 3) f32 per-tile statistics of x (needs the workspace).
void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p, float* workspace, Stream s,
                             const Tensor* tile_stats = nullptr);
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p, Stream s);
void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, float* workspace,
                        Stream s);
void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, Stream s);
}  // namespace cuda

}  // namespace vt
