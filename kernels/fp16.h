// Scalar conversions between float32 and the two 16-bit float formats GGUF
// files use: IEEE binary16 (F16, and the d/dmin scales of every quant block)
// and bfloat16 (BF16). Portable bit manipulation, no ISA assumptions, so the
// reference kernels, the quantizers and the model loaders all round the same
// way on every rank. SIMD kernels convert with F16C / shifts and must agree
// with these bit for bit (F16/BF16 -> F32 is exact, so they do).
//
//   uint16_t h = F32ToF16(0.1f);   // 0x2e66
//   float f = F16ToF32(h);         // 0.0999755859375f
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/isa_namespace.h"

namespace strata {
// Compiled into the ISA files too: one copy per ISA (isa_namespace.h).
inline namespace STRATA_ISA_NAMESPACE {

inline uint32_t F32Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float F32FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Exact: every binary16 value is representable in float32.
inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return F32FromBits(sign);
    // Subnormal: mant * 2^-24, exact in float32 arithmetic.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return F32FromBits(sign | F32Bits(mag));
  }
  if (exp == 31) return F32FromBits(sign | 0x7f800000u | (mant << 13));  // inf / nan (payload kept)
  return F32FromBits(sign | ((exp + 112u) << 23) | (mant << 13));      // rebias 15 -> 127
}

// Round to nearest, ties to even; overflow goes to inf, nan stays a (quiet) nan.
inline uint16_t F32ToF16(float f) {
  const uint32_t x = F32Bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((ax >> 13) & 0x3ffu);
  // 65520 is the midpoint between 65504 (max half, odd mantissa) and 2^16: ties
  // to even make it inf, so everything from there up is inf.
  if (ax >= 0x477ff000u) return sign | 0x7c00u;
  if (ax < 0x38800000u) {
    // Result is a half subnormal (or zero): round(|f| / 2^-24).
    const uint32_t e = ax >> 23;
    if (e < 102) return sign;  // |f| < 2^-25: below half of the smallest subnormal
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // |f| / 2^-24 = mant * 2^(e - 126), shift in [14, 24]
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;  // may carry into the smallest normal: still right
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: add just under half an ulp plus the kept lsb (ties to even); a carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - (112u << 23)) >> 13);
}

// Exact: bf16 is the top half of a float32.
inline float Bf16ToF32(uint16_t h) { return F32FromBits(static_cast<uint32_t>(h) << 16); }

// Round to nearest, ties to even; nan stays nan (quiet bit forced so that
// truncating the payload cannot turn it into inf).
inline uint16_t F32ToBf16(float f) {
  const uint32_t x = F32Bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace STRATA_ISA_NAMESPACE
}  // namespace strata
