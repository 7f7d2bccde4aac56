// Nearest-neighbour upsampling by an integer factor (YOLO's neck: scale 2 before a concat).
//
// x: (N, H, W, C) -> y: (N, H*scale, W*scale, C), y[n, h, w, c] = x[n, h/scale, w/scale, c],
// scale >= 1. y must not alias x. Gradients accumulate: dx[n, h, w, c] += the sum of the
// scale*scale cells dy[n, h*scale + a, w*scale + b, c], added in (a, b) order, the same
// order on CPU and CUDA (a gather on CUDA: deterministic, no atomics). Any of x, y, dx and
// dy may be a channel view (Tensor::channels: part of a concatenation written in place).
#pragma once

#include "layers/tensor.h"

namespace vt {

// x: (N, H, W, C), y: (N, H*scale, W*scale, C)
void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale = 2, Stream s = {});
// dy: (N, H*scale, W*scale, C), dx: (N, H, W, C); dx += sum of each cell's scale*scale dy.
void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale = 2, Stream s = {});

namespace cpu {
void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale);
void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale);
}  // namespace cpu
namespace cuda {
void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale, Stream s);
void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale, Stream s);
}  // namespace cuda

}  // namespace vt
