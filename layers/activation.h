// Elementwise activations: ReLU, SiLU, LeakyReLU, sigmoid.
//
// Any shape; x, y, dx, dy all have the same shape. y must not alias x: the backward pass
// reads x. Gradients accumulate: dx += dy * f'(x), so the caller zeroes dx once per step
// and every consumer of an activation adds its share.
#pragma once

#include "layers/tensor.h"

namespace vt {

enum class ActKind { kReLU, kSiLU, kLeakyReLU, kSigmoid };

struct Activation {
  ActKind kind = ActKind::kSiLU;
  float negative_slope = 0.1f;  // LeakyReLU only
  const char* name() const;
};

// y = f(x)
void activation_forward(const Activation& act, const Tensor& x, const Tensor& y, Stream s = {});
// dx += dy * f'(x)
void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx,
                         Stream s = {});

namespace cpu {
void activation_forward(const Activation& act, const Tensor& x, const Tensor& y);
void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx);
}  // namespace cpu
namespace cuda {
void activation_forward(const Activation& act, const Tensor& x, const Tensor& y, Stream s);
void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx,
                         Stream s);
}  // namespace cuda

}  // namespace vt
