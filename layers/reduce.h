// Whole-tensor reductions over flat buffers: sum, sum of squares, max |x| and the number
// of non-finite elements. The loss sums its per-element terms (a mean is the sum times
// 1/n, which the caller folds into its scale); the optimizer takes the squared L2 norm of
// the flat gradient buffer for clipping, and checks finiteness before a step or an export.
//
// Shapes and types:
//   x:   any shape, read as a flat array of x.numel() elements; f32/f64 on the CPU,
//        f32/bf16 on CUDA (bf16 is widened to fp32 per element).
//   out: (1), param_dtype(x) (f32, or f64 with f64 x), on x's device. OVERWRITTEN, on the
//        device, so a step never waits for the host. An empty x gives 0 for all four.
//   workspace: scratch for the CUDA per-block partials: f32 on x's device with numel >=
//        reduce_workspace_elems(x.numel(), device). The CPU needs none (pass Tensor{}).
//        The memory plan allocates it once; reductions on one stream may share it, those
//        that can run concurrently (different streams) need one each. Its contents before
//        and after a call are meaningless.
//
// Determinism: every result is bit-identical run to run and on every rank. The CPU sums
// in order; CUDA reduces in a fixed tree whose shape depends only on x.numel(), never on
// the device's SM count or on timing, and uses no atomics (see reduce.cu).
//
// Accuracy: the CPU accumulates in double (also for f32 x), so it is the oracle. CUDA
// accumulates in fp32; its error is at most about d * 2^-24 * sum|x_i| (d+1 for sums of
// squares), where d is the longest chain of additions: ceil(chunk / 256) + 8 + ceil(B /
// 256) + 8 with B = reduce_workspace_elems(n) blocks of chunk = ceil(n / B) elements
// (d = 84 at n = 2^24).
//
// Gradients: reduce_sum and reduce_sum_squares are differentiable; their backwards
// ACCUMULATE into dx (dx: x's shape and storage type; dout: (1), param_dtype(dx)), so the
// caller zeroes dx once per step. reduce_max_abs and count_nonfinite are diagnostics with
// no backward: they drive decisions (skip a step, refuse an export), never the loss.
#pragma once

#include <cstdint>

#include "layers/tensor.h"

namespace vt {

// f32 elements of workspace the reductions need for n elements on `dev` (0 on the CPU and
// for n = 0). At most 1024.
int64_t reduce_workspace_elems(int64_t n, Device dev);

// Per-channel sums of NHWC data on CUDA (batch norm's statistics and gradients, the conv
// bias gradient; channel_sum.cuh) split the M positions of C channels into this many slices:
// about 1024 blocks of 32 channels, at least 256 positions per slice, at most 256 slices.
// From the shape alone, so workspaces are planned ahead and results are device-independent.
int64_t channel_sum_slices(int64_t positions, int64_t channels);

// out[0] = sum_i x_i
void reduce_sum(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s = {});
// dx_i += dout[0]   (dx: any shape)
void reduce_sum_backward(const Tensor& dout, const Tensor& dx, Stream s = {});

// out[0] = sum_i x_i^2, the squared L2 norm (clipping takes the square root).
void reduce_sum_squares(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s = {});
// dx_i += 2 x_i dout[0]   (dx: x's shape)
void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx, Stream s = {});

// Diagnostic, no backward. out[0] = max_i |x_i|; NaN if any x_i is NaN, +Inf if any is
// +-Inf and none is NaN.
void reduce_max_abs(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s = {});

// Diagnostic, no backward. out[0] = the number of NaN and +-Inf elements, as a floating
// value: counted in integers, then rounded once to out's type, so it is exact up to 2^24
// in f32 (2^53 in f64) and correctly rounded beyond. Zero means "all finite".
void count_nonfinite(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s = {});

namespace cpu {
void reduce_sum(const Tensor& x, const Tensor& out);
void reduce_sum_backward(const Tensor& dout, const Tensor& dx);
void reduce_sum_squares(const Tensor& x, const Tensor& out);
void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx);
void reduce_max_abs(const Tensor& x, const Tensor& out);
void count_nonfinite(const Tensor& x, const Tensor& out);
}  // namespace cpu
namespace cuda {
void reduce_sum(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s);
void reduce_sum_backward(const Tensor& dout, const Tensor& dx, Stream s);
void reduce_sum_squares(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s);
void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx, Stream s);
void reduce_max_abs(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s);
void count_nonfinite(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s);
}  // namespace cuda

}  // namespace vt
