// Nearest-upsample contract checks and backend dispatch (see upsample.h).
#include "layers/upsample.h"

#include "layers/op.h"

namespace vt {
namespace {

Shape upsampled(const Shape& x, int scale) {
  return {x[0], x[1] * scale, x[2] * scale, x[3]};
}

}  // namespace

void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale, Stream s) {
  const char* op = "upsample_nearest_forward";
  check_types(op, {{"x", x, kChannelView}, {"y", y, kChannelView}}, {});
  check_nhwc(op, {"x", x});
  op_check(scale >= 1, op, cat("scale ", scale, " must be >= 1"), {{"x", x}});
  check_shape(op, {"y", y}, upsampled(x.shape(), scale));
  op_check(x.raw() != y.raw() || x.numel() == 0, op, "y must not alias x", {{"x", x}, {"y", y}});
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::upsample_nearest_forward(x, y, scale, s));
  else cpu::upsample_nearest_forward(x, y, scale);
}

void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale, Stream s) {
  const char* op = "upsample_nearest_backward";
  check_types(op, {{"dy", dy, kChannelView}, {"dx", dx, kChannelView}}, {});
  check_nhwc(op, {"dx", dx});
  op_check(scale >= 1, op, cat("scale ", scale, " must be >= 1"), {{"dx", dx}});
  check_shape(op, {"dy", dy}, upsampled(dx.shape(), scale));
  op_check(dx.raw() != dy.raw() || dx.numel() == 0, op, "dx must not alias dy", {{"dy", dy}, {"dx", dx}});
  if (dx.is_cuda()) VT_CUDA_CALL(op, cuda::upsample_nearest_backward(dy, dx, scale, s));
  else cpu::upsample_nearest_backward(dy, dx, scale);
}

}  // namespace vt
