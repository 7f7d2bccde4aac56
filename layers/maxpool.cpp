// Max-pool contract checks and backend dispatch (see maxpool.h).
#include "layers/maxpool.h"

#include "layers/op.h"

namespace vt {
namespace {

std::string params_str(const MaxPoolParams& p) {
  return cat("kernel ", p.kernel, ", stride ", p.stride, ", pad ", p.pad);
}

// Valid params and an input that yields at least one output cell; x must be NHWC.
void check_geometry(const char* op, const Arg& x, const MaxPoolParams& p) {
  check_nhwc(op, x);
  op_check(x.t.dim(1) >= 1 && x.t.dim(2) >= 1, op, "x has an empty image (H or W is 0)", {x});
  op_check(p.kernel >= 1 && p.stride >= 1 && p.pad >= 0 && p.pad <= p.kernel / 2, op,
           cat("invalid params (", params_str(p), "): need kernel >= 1, stride >= 1, 0 <= pad <= kernel/2"),
           {x});
  op_check(x.t.dim(1) + 2 * p.pad >= p.kernel && x.t.dim(2) + 2 * p.pad >= p.kernel, op,
           cat("input smaller than the window (", params_str(p), ")"), {x});
}

}  // namespace

Shape maxpool_output_shape(const Shape& x, const MaxPoolParams& p) {
  const Tensor probe = Tensor::view(nullptr, x, DType::kF32, Device::kCPU);
  check_geometry("maxpool_output_shape", {"x", probe}, p);
  return {x[0], (x[1] + 2 * p.pad - p.kernel) / p.stride + 1, (x[2] + 2 * p.pad - p.kernel) / p.stride + 1,
          x[3]};
}

void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p, Stream s) {
  const char* op = "maxpool_forward";
  check_types(op, {{"x", x}, {"y", y}}, {});
  check_geometry(op, {"x", x}, p);
  check_shape(op, {"y", y}, maxpool_output_shape(x.shape(), p));
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x (backward reads x)", {{"x", x}});
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::maxpool_forward(x, y, p, s));
  else cpu::maxpool_forward(x, y, p);
}

void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p, Stream s) {
  const char* op = "maxpool_backward";
  check_types(op, {{"x", x}, {"dy", dy}, {"dx", dx}}, {});
  check_geometry(op, {"x", x}, p);
  check_shape(op, {"dy", dy}, maxpool_output_shape(x.shape(), p));
  check_shape(op, {"dx", dx}, x.shape());
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::maxpool_backward(x, dy, dx, p, s));
  else cpu::maxpool_backward(x, dy, dx, p);
}

}  // namespace vt
