// Shared plumbing for the ops: contract checks that name the op and the shapes, and the
// dispatch from a Tensor's device and storage type to a typed implementation.
//
// Each op lives in four files: <op>.h (the contract), <op>.cpp (checks it, then picks the
// backend), <op>_cpu.cpp (plain loops, the oracle), <op>.cu (CUDA kernels). Storage types:
//   - activations and their gradients: f32 or f64 on the CPU, f32 or bf16 on CUDA;
//   - parameters, parameter gradients and statistics: param_dtype(activation type), i.e.
//     f64 in the CPU double-precision mode (gradient checks), f32 otherwise;
//   - conv weights: the activation type (a bf16 run keeps a bf16 copy of the master weights).
#pragma once

#include <initializer_list>
#include <utility>

#include "layers/check.h"
#include "layers/tensor.h"

namespace vt {

inline DType param_dtype(DType act) { return act == DType::kF64 ? DType::kF64 : DType::kF32; }

// A named tensor argument, for error messages: {"x", x}. check_types refuses channel views
// (Tensor::channels) except where the op's contract accepts them: {"y", y, kChannelView}.
struct Arg {
  const char* name;
  const Tensor& t;
  bool strided = false;
};
constexpr bool kChannelView = true;

// Throws "<op>: <why>; x: (..) f32 cpu, w: (..) f32 cpu" when `ok` is false.
void op_check(bool ok, const char* op, const std::string& why, std::initializer_list<Arg> args);

// All tensors on one device; activations in a storage type that device supports, all of
// one type; params in param_dtype of it; none a channel view unless its Arg allows it.
// Returns the activation storage type.
DType check_types(const char* op, std::initializer_list<Arg> acts, std::initializer_list<Arg> params);

// Rank-4 NHWC activation.
void check_nhwc(const char* op, const Arg& a);
void check_shape(const char* op, const Arg& a, const Shape& expected);

// Calls fn(T{}) with T = float or double for the CPU storage types.
template <class Fn>
void dispatch_cpu(const char* op, DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kF32: fn(float{}); return;
    case DType::kF64: fn(double{}); return;
    default: VT_CHECK(false, op, ": storage type ", dtype_name(dt), " is not supported on the CPU");
  }
}

}  // namespace vt

// Runs a CUDA backend call, or fails clearly in a build without CUDA.
#ifdef VT_WITH_CUDA
#define VT_CUDA_CALL(op, call) call
#else
#define VT_CUDA_CALL(op, call) VT_CHECK(false, op, ": this build has no CUDA support")
#endif
