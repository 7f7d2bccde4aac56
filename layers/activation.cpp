// Activation contract checks and backend dispatch (see activation.h).
#include "layers/activation.h"

#include "layers/op.h"

namespace vt {

const char* Activation::name() const {
  switch (kind) {
    case ActKind::kReLU: return "relu";
    case ActKind::kSiLU: return "silu";
    case ActKind::kLeakyReLU: return "leaky_relu";
    case ActKind::kSigmoid: return "sigmoid";
  }
  return "?";
}

void activation_forward(const Activation& act, const Tensor& x, const Tensor& y, Stream s) {
  const char* op = "activation_forward";
  check_types(op, {{"x", x}, {"y", y}}, {});
  check_shape(op, {"y", y}, x.shape());
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x (backward reads x)", {{"x", x}});
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::activation_forward(act, x, y, s));
  else cpu::activation_forward(act, x, y);
}

void activation_backward(const Activation& act, const Tensor& x, const Tensor& dy, const Tensor& dx,
                         Stream s) {
  const char* op = "activation_backward";
  check_types(op, {{"x", x}, {"dy", dy}, {"dx", dx}}, {});
  check_shape(op, {"dy", dy}, x.shape());
  check_shape(op, {"dx", dx}, x.shape());
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::activation_backward(act, x, dy, dx, s));
  else cpu::activation_backward(act, x, dy, dx);
}

}  // namespace vt
