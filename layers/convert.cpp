// Storage-type conversions: contract checks and backend dispatch (see convert.h).
#include "layers/convert.h"

#include <cstdint>

#include "layers/op.h"

namespace vt {
namespace {

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.raw()), b0 = reinterpret_cast<uintptr_t>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

bool float_type(DType dt) {
  return dt == DType::kF32 || dt == DType::kBF16 || dt == DType::kF64;
}

void check_pair(const char* op, const Tensor& x, const Tensor& y) {
  op_check(x.device() == y.device(), op, "x and y are on different devices", {{"x", x}, {"y", y}});
  op_check(x.numel() == y.numel(), op, "x and y must have the same number of elements", {{"x", x}, {"y", y}});
  op_check((x.raw() != nullptr && y.raw() != nullptr) || x.numel() == 0, op, "x or y has no storage",
           {{"x", x}, {"y", y}});
  op_check(!overlaps(x, y), op, "y must not overlap x", {{"x", x}, {"y", y}});
  op_check(x.contiguous() && y.contiguous(), op, "x and y must be contiguous, not channel views",
           {{"x", x}, {"y", y}});
}

}  // namespace

void image_to_activation(const Tensor& x, const Tensor& y, Stream s) {
  const char* op = "image_to_activation";
  check_pair(op, x, y);
  op_check(x.dtype() == DType::kU8, op, "x must be u8", {{"x", x}});
  check_types(op, {{"y", y}}, {});
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::image_to_activation(x, y, s));
  else
    cpu::image_to_activation(x, y);
}

void cast(const Tensor& x, const Tensor& y, Stream s) {
  const char* op = "cast";
  check_pair(op, x, y);
  op_check(float_type(x.dtype()) && float_type(y.dtype()), op, "x and y must be f32, bf16 or f64",
           {{"x", x}, {"y", y}});
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::cast(x, y, s));
  else
    cpu::cast(x, y);
}

}  // namespace vt
