// Max pooling over H and W, channel by channel: the classic 2x2 stride-2 downsampling,
// 3x3 stride-2 pad-1, and YOLO's SPPF pool (5x5, stride 1, pad 2, same-size output).
//
// x: (N, H, W, C) -> y: (N, Ho, Wo, C) with Ho = (H + 2*pad - kernel) / stride + 1 (floor,
// so with 2x2 stride 2 an odd H drops its last row), Wo likewise. Requires kernel >= 1,
// stride >= 1, 0 <= pad <= kernel / 2 (PyTorch's rule) and Ho, Wo >= 1; the pad rule
// guarantees that every window holds at least one real cell. Padding never wins: it acts
// as -inf, so an all-negative window yields its largest real value.
//
// The window's winner (forward value and backward routing; identical on CPU and CUDA):
// the window is scanned kh-major, then kw, and a cell replaces the current winner only if
// it is strictly greater, so among equal maxima the FIRST in scan order wins. NaN
// propagates: the first NaN in scan order wins its window (y is NaN there and the
// gradient goes to that cell).
//
// No argmax indices are stored: backward recomputes each window's winner from x, so y
// must not alias x. Gradients accumulate: dx += dy routed to each window's winner; a cell
// that wins several overlapping windows receives the sum of their dy, added in output
// order (oh, then ow), in the same order on CPU and CUDA.
#pragma once

#include "layers/tensor.h"

namespace vt {

struct MaxPoolParams {
  int kernel = 2, stride = 2, pad = 0;
};

// The output shape (N, Ho, Wo, C) for an input of shape x; throws on invalid params.
Shape maxpool_output_shape(const Shape& x, const MaxPoolParams& p);

// x: (N, H, W, C), y: (N, Ho, Wo, C)
void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p, Stream s = {});
// x: (N, H, W, C), dy: (N, Ho, Wo, C), dx: (N, H, W, C); dx += dy at each window's winner.
void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p,
                      Stream s = {});

namespace cpu {
void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p);
void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p);
}  // namespace cpu
namespace cuda {
void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p, Stream s);
void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p, Stream s);
}  // namespace cuda

}  // namespace vt
