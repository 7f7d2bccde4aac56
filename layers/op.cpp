// Contract checks shared by the ops (see op.h).
#include "layers/op.h"

namespace vt {

void op_check(bool ok, const char* op, const std::string& why, std::initializer_list<Arg> args) {
  if (ok) return;
  std::string msg = cat(op, ": ", why);
  const char* sep = "; ";
  for (const Arg& a : args) {
    msg += sep + a.t.str(a.name);
    sep = ", ";
  }
  throw Error(msg);
}

DType check_types(const char* op, std::initializer_list<Arg> acts, std::initializer_list<Arg> params) {
  const Tensor& first = acts.begin()->t;
  const DType dt = first.dtype();
  const Device dev = first.device();
  for (const Arg& a : acts) {
    op_check(a.t.raw() != nullptr || a.t.numel() == 0, op, cat(a.name, " has no storage"), {a});
    op_check(a.t.device() == dev, op, "tensors on different devices", acts);
    op_check(a.t.dtype() == dt, op, "activations of different storage types", acts);
    op_check(a.t.contiguous() || a.strided, op, cat(a.name, " must be contiguous, not a channel view"), {a});
  }
  const bool ok = dev == Device::kCPU ? (dt == DType::kF32 || dt == DType::kF64)
                                      : (dt == DType::kF32 || dt == DType::kBF16);
  op_check(ok, op, cat("unsupported storage type ", dtype_name(dt), " on ", device_name(dev)), acts);
  for (const Arg& p : params) {
    op_check(p.t.device() == dev, op, cat(p.name, " is on another device than the activations"),
             {*acts.begin(), p});
    op_check(p.t.dtype() == param_dtype(dt), op,
             cat(p.name, " must be ", dtype_name(param_dtype(dt)), " with ", dtype_name(dt), " activations"),
             {*acts.begin(), p});
    op_check(p.t.contiguous(), op, cat(p.name, " must be contiguous, not a channel view"), {p});
  }
  return dt;
}

void check_nhwc(const char* op, const Arg& a) {
  op_check(a.t.rank() == 4, op, cat(a.name, " must be NHWC (rank 4)"), {a});
}

void check_shape(const char* op, const Arg& a, const Shape& expected) {
  op_check(a.t.shape() == expected, op, cat(a.name, " must have shape ", expected.str()), {a});
}

}  // namespace vt
