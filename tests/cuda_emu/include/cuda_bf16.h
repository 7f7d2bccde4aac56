// The CUDA emulator's bf16 (tests only; see cuda_runtime.h): __nv_bfloat16 as its 16 bits,
// converted as CUDA converts (round to nearest even, NaN kept quiet).
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f);  // NOLINT: implicit, as CUDA's
  operator float() const;  // NOLINT
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u)
    r.__x = static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN: quiet, sign and payload top kept
  else
    r.__x = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  return __float2bfloat16_rn(f);
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.__x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16::__nv_bfloat16(float f) : __x(__float2bfloat16_rn(f).__x) {}
inline __nv_bfloat16::operator float() const {
  return __bfloat162float(*this);
}
