// Elementwise storage-type conversions the model needs at its edges:
//   - image_to_activation: the u8 image batch into the first activation, x / 255, as
//     Ultralytics feeds its network (`img.float() / 255`);
//   - cast: the fp32 master weights into the bf16 copy the bf16 convolutions read, once
//     after every optimizer step (and any other change of storage type between buffers).
//
// Shapes: x and y may have any shapes with the same element count (flat buffers and NHWC
// batches alike); both on one device. Forward only: these sit where no gradient flows (the
// images are data; conv weight gradients go straight to the fp32 master in param_dtype).
//
// Arithmetic: the quotient x / 255 is formed in fp32 (fp64 for an f64 y, the CPU gradient
// checks), exactly as PyTorch does, then rounded once to y's storage type; bf16 rounds to
// nearest even, so the CPU (the oracle) and CUDA agree bit for bit.
#pragma once

#include "layers/tensor.h"

namespace vt {

// x: u8, y: activation type (f32/f64 on the CPU, f32/bf16 on CUDA). y = x / 255.
void image_to_activation(const Tensor& x, const Tensor& y, Stream s = {});
// x, y: f32, bf16 or f64 (f64 on the CPU only; bf16 on the CPU too, for tests). y = x
// rounded to y's storage type. y must not overlap x.
void cast(const Tensor& x, const Tensor& y, Stream s = {});

namespace cpu {
void image_to_activation(const Tensor& x, const Tensor& y);
void cast(const Tensor& x, const Tensor& y);
}  // namespace cpu
namespace cuda {
void image_to_activation(const Tensor& x, const Tensor& y, Stream s);
void cast(const Tensor& x, const Tensor& y, Stream s);
}  // namespace cuda

}  // namespace vt
