// Storage-type conversions on the CPU: plain loops, the reference for the CUDA kernels.
#include <cstdint>

#include "layers/check.h"
#include "layers/convert.h"

namespace vt::cpu {
namespace {

// Element i of a float-like buffer as double (bf16 widened exactly).
double load(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kF32:
      return static_cast<const float*>(p)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::kF64:
      return static_cast<const double*>(p)[i];
    case DType::kU8:
      break;
  }
  VT_CHECK(false, "cast: u8 is not a float type");
}

// Rounds v (exact in double for f32/bf16 sources) to dt, to nearest even. An f64 -> bf16
// cast rounds through f32, twice; f64 exists on the CPU only, for tests, so no kernel has
// to agree with it.
void store(void* p, DType dt, int64_t i, double v) {
  switch (dt) {
    case DType::kF32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(p)[i] = float_to_bf16(static_cast<float>(v));
      return;
    case DType::kF64:
      static_cast<double*>(p)[i] = v;
      return;
    case DType::kU8:
      break;
  }
  VT_CHECK(false, "cast: u8 is not a float type");
}

}  // namespace

void image_to_activation(const Tensor& x, const Tensor& y) {
  const uint8_t* xp = x.data<uint8_t>();
  const int64_t n = x.numel();
  if (y.dtype() == DType::kF64) {
    for (int64_t i = 0; i < n; ++i) y.data<double>()[i] = static_cast<double>(xp[i]) / 255.0;
    return;
  }
  // fp32 quotient, then one rounding to the storage type (f32: none).
  for (int64_t i = 0; i < n; ++i) store(y.raw(), y.dtype(), i, static_cast<float>(xp[i]) / 255.f);
}

void cast(const Tensor& x, const Tensor& y) {
  for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) store(y.raw(), y.dtype(), i, load(x.raw(), x.dtype(), i));
}

}  // namespace vt::cpu
