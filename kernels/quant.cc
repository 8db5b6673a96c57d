// Reference (scalar) dequantizers and the quantizers of the GGUF block types.
//
// Blocking: one block at a time, in file order; nothing to tile. The
// dequantizers are the readable statement of each format (quant_blocks.h has
// the formulas) and the fallback of every ISA; the SIMD versions in
// kernels_avx2.cc must reproduce them bit for bit, so the float operations here
// are written in the exact order the SIMD code performs them
// (e.g. Q4_K: (d * sc) * q - (dmin * m), one rounding per operation).
// Quantizers run when files are written, never on the hot path: clarity first.
#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/status.h"
#include "kernels/fp16.h"
#include "kernels/kernel_table.h"
#include "kernels/quant_blocks.h"

namespace strata {
namespace internal {
namespace ref {

void DequantF32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void DequantF16(const void* src, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(h[i]);
}

void DequantBf16(const void* src, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(h[i]);
}

void DequantQ8_0(const void* src, float* dst, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK; ++j) dst[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void DequantQ4_0(const void* src, float* dst, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = d * static_cast<float>((b[i].qs[j] & 0xF) - 8);
      dst[j + 16] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

void DequantQ5_0(const void* src, float* dst, int64_t n) {
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const float d = F16ToF32(b[i].d);
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
      const int hi = (b[i].qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      dst[j] = d * static_cast<float>(lo - 16);
      dst[j + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

}  // namespace ref
}  // namespace internal

namespace {

inline void PackScaleMinK4(const uint8_t* sc, const uint8_t* m, uint8_t* scales) {
  for (int s = 0; s < 4; ++s) {
    scales[s] = static_cast<uint8_t>((sc[s] & 63) | ((sc[s + 4] >> 4) << 6));
    scales[s + 4] = static_cast<uint8_t>((m[s] & 63) | ((m[s + 4] >> 4) << 6));
    scales[s + 8] = static_cast<uint8_t>((sc[s + 4] & 0xF) | ((m[s + 4] & 0xF) << 4));
  }
}

}  // namespace

namespace internal {
namespace ref {

void DequantQ4K(const void* src, float* dst, int64_t n) {
  const BlockQ4_K* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      int sc0, m0, sc1, m1;
      UnpackScaleMinK4(2 * c, b[i].scales, &sc0, &m0);
      UnpackScaleMinK4(2 * c + 1, b[i].scales, &sc1, &m1);
      const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) dst[l] = d0 * static_cast<float>(q[l] & 0xF) - min0;
      for (int l = 0; l < 32; ++l) dst[32 + l] = d1 * static_cast<float>(q[l] >> 4) - min1;
      dst += 64;
    }
  }
}

void DequantQ5K(const void* src, float* dst, int64_t n) {
  const BlockQ5_K* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      int sc0, m0, sc1, m1;
      UnpackScaleMinK4(2 * c, b[i].scales, &sc0, &m0);
      UnpackScaleMinK4(2 * c + 1, b[i].scales, &sc1, &m1);
      const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) {
        const int hi = (b[i].qh[l] >> (2 * c)) & 1;
        dst[l] = d0 * static_cast<float>((q[l] & 0xF) | hi << 4) - min0;
      }
      for (int l = 0; l < 32; ++l) {
        const int hi = (b[i].qh[l] >> (2 * c + 1)) & 1;
        dst[32 + l] = d1 * static_cast<float>((q[l] >> 4) | hi << 4) - min1;
      }
      dst += 64;
    }
  }
}

void DequantQ6K(const void* src, float* dst, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
        const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
        const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        dst[l] = (d * static_cast<float>(sc[is + 0])) * static_cast<float>(q1);
        dst[l + 32] = (d * static_cast<float>(sc[is + 2])) * static_cast<float>(q2);
        dst[l + 64] = (d * static_cast<float>(sc[is + 4])) * static_cast<float>(q3);
        dst[l + 96] = (d * static_cast<float>(sc[is + 6])) * static_cast<float>(q4);
      }
      dst += 128;
    }
  }
}

}  // namespace ref
}  // namespace internal

// ---------------------------------------------------------------------------
// Quantizers
// ---------------------------------------------------------------------------
namespace {

inline int RoundToInt(float x) { return static_cast<int>(std::lround(x)); }

void QuantizeQ8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = F32ToF16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(RoundToInt(x[j] * id));
  }
}

// The element of largest magnitude, with its sign (Q4_0 / Q5_0 map it to the
// most negative quant, which has one more level than the positive side).
float SignedAbsMax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void QuantizeQ4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = SignedAbsMax(x, kQK) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = F32ToF16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      // x*id is in [-8, 8]: +8.5 then truncation rounds half up into [0, 16].
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantizeQ5_0(const float* x, BlockQ5_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = SignedAbsMax(x, kQK) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = F32ToF16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
      const int q1 = std::min(31, static_cast<int>(x[j + 16] * id + 16.5f));
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + 16);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// Fits x ≈ scale * q - min with q in [0, nmax], min >= 0, over n values:
// tries a spread of step sizes around (max - min) / nmax, refits (scale, min)
// by least squares for each rounding, keeps the one with the lowest squared
// error. Returns scale (>= 0) and min.
void FitScaleMin(const float* x, int n, int nmax, float* scale, float* min) {
  float xmin = x[0], xmax = x[0];
  for (int j = 1; j < n; ++j) {
    xmin = std::min(xmin, x[j]);
    xmax = std::max(xmax, x[j]);
  }
  xmin = std::min(xmin, 0.0f);  // the format's offset is -min with min >= 0
  if (xmax <= xmin) {
    *scale = 0.0f;
    *min = -xmin;
    return;
  }
  float best_a = (xmax - xmin) / nmax, best_b = xmin;
  double best_err = 0;
  for (int j = 0; j < n; ++j) {
    const int q = std::clamp(RoundToInt((x[j] - xmin) / best_a), 0, nmax);
    const double e = best_a * q + best_b - x[j];
    best_err += e * e;
  }
  for (int k = -4; k <= 16; ++k) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / (xmax - xmin);
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    int q[kQKK];
    for (int j = 0; j < n; ++j) {
      q[j] = std::clamp(RoundToInt(iscale * (x[j] - xmin)), 0, nmax);
      sq += q[j];
      sqq += static_cast<double>(q[j]) * q[j];
      sx += x[j];
      sqx += q[j] * static_cast<double>(x[j]);
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double a = (n * sqx - sq * sx) / det;
    double b = (sqq * sx - sq * sqx) / det;
    if (b > 0) {  // min must be >= 0: refit the scale alone
      b = 0;
      a = sqx / sqq;
    }
    if (a <= 0) continue;
    double err = 0;
    for (int j = 0; j < n; ++j) {
      const double e = a * q[j] + b - x[j];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best_a = static_cast<float>(a);
      best_b = static_cast<float>(b);
    }
  }
  *scale = best_a;
  *min = -best_b;
}

// Q4_K (nmax 15) and Q5_K (nmax 31) share the scale/min machinery; L gets the
// 256 quants of the block.
void QuantizeKScaleMin(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales,
                       uint8_t* L) {
  float sub_scale[8], sub_min[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int s = 0; s < 8; ++s) {
    FitScaleMin(x + 32 * s, 32, nmax, &sub_scale[s], &sub_min[s]);
    max_scale = std::max(max_scale, sub_scale[s]);
    max_min = std::max(max_min, sub_min[s]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = static_cast<uint8_t>(std::min(63, RoundToInt(inv_scale * sub_scale[s])));
    m[s] = static_cast<uint8_t>(std::min(63, RoundToInt(inv_min * sub_min[s])));
  }
  *d_out = F32ToF16(max_scale / 63.0f);
  *dmin_out = F32ToF16(max_min / 63.0f);
  PackScaleMinK4(sc, m, scales);
  // Final quants against the scales as the reader will see them.
  const float d = F16ToF32(*d_out), dmin = F16ToF32(*dmin_out);
  for (int s = 0; s < 8; ++s) {
    const float dl = d * static_cast<float>(sc[s]);
    const float ml = dmin * static_cast<float>(m[s]);
    for (int j = 0; j < 32; ++j) {
      L[32 * s + j] =
          dl != 0.0f ? static_cast<uint8_t>(std::clamp(RoundToInt((x[32 * s + j] + ml) / dl), 0, nmax)) : 0;
    }
  }
}

void QuantizeQ4K(const float* x, BlockQ4_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    QuantizeKScaleMin(x, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void QuantizeQ5K(const float* x, BlockQ5_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    QuantizeKScaleMin(x, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

// Fits x ≈ scale * q, q in [-32, 31], over 16 values: tries step sizes around
// max / -32 (the extreme value lands on -32, the level without a positive
// twin) and keeps the least-squares scale of the best rounding.
float FitSignedScale(const float* x, int n) {
  const float max = SignedAbsMax(x, n);
  if (max == 0.0f) return 0.0f;
  float best_scale = 0.0f;
  double best_err = 0;
  for (int j = 0; j < n; ++j) best_err += static_cast<double>(x[j]) * x[j];
  for (int k = -9; k <= 9; ++k) {
    const float iscale = -(32.0f + 0.1f * static_cast<float>(k)) / max;
    double sqx = 0, sqq = 0;
    int q[16];
    for (int j = 0; j < n; ++j) {
      q[j] = std::clamp(RoundToInt(iscale * x[j]), -32, 31);
      sqx += q[j] * static_cast<double>(x[j]);
      sqq += static_cast<double>(q[j]) * q[j];
    }
    if (sqq == 0) continue;
    const double a = sqx / sqq;
    double err = 0;
    for (int j = 0; j < n; ++j) {
      const double e = a * q[j] - x[j];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = static_cast<float>(a);
    }
  }
  return best_scale;
}

void QuantizeQ6K(const float* x, BlockQ6_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float sub_scale[16];
    float max_scale = 0.0f, amax = 0.0f;
    for (int s = 0; s < 16; ++s) {
      sub_scale[s] = FitSignedScale(x + 16 * s, 16);
      if (std::fabs(sub_scale[s]) > amax) {
        amax = std::fabs(sub_scale[s]);
        max_scale = sub_scale[s];
      }
    }
    uint8_t L[kQKK] = {};
    if (max_scale == 0.0f) {
      std::memset(&b[i], 0, sizeof(b[i]));
      for (int j = 0; j < kQKK; ++j) L[j] = 32;
    } else {
      // Largest scale maps to -128: int8 has one more negative level.
      const float iscale = -128.0f / max_scale;
      b[i].d = F32ToF16(1.0f / iscale);
      for (int s = 0; s < 16; ++s) b[i].scales[s] = static_cast<int8_t>(std::min(127, RoundToInt(iscale * sub_scale[s])));
      const float d = F16ToF32(b[i].d);
      for (int s = 0; s < 16; ++s) {
        const float ds = d * static_cast<float>(b[i].scales[s]);
        for (int j = 0; j < 16; ++j)
          L[16 * s + j] = ds != 0.0f ? static_cast<uint8_t>(std::clamp(RoundToInt(x[16 * s + j] / ds), -32, 31) + 32) : 32;
      }
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* Lh = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        b[i].ql[64 * h + l] = static_cast<uint8_t>((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
        b[i].ql[64 * h + l + 32] = static_cast<uint8_t>((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
        b[i].qh[32 * h + l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                                   ((Lh[l + 96] >> 4) << 6));
      }
    }
  }
}

void CheckRowLength(TensorType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  STRATA_CHECK_MSG(n >= 0 && n % t.block_elems == 0,
                   std::string("row length ") + std::to_string(n) + " is not a multiple of the " + t.name + " block");
}

}  // namespace

void DequantizeRow(Isa isa, TensorType type, const void* src, float* dst, int64_t n) {
  CheckRowLength(type, n);
  const int slot = internal::DequantSlot(type);
  STRATA_CHECK_MSG(slot >= 0, std::string("no dequantizer for ") + TypeName(type));
  internal::KernelsFor(isa).dequant[slot](src, dst, n);
}

void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n) {
  CheckRowLength(type, n);
  const int slot = internal::DequantSlot(type);
  STRATA_CHECK_MSG(slot >= 0, std::string("no dequantizer for ") + TypeName(type));
  internal::ActiveKernels().dequant[slot](src, dst, n);
}

void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n) {
  CheckRowLength(type, n);
  const int64_t nb = n / Traits(type).block_elems;
  switch (type) {
    case TensorType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case TensorType::kF16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = F32ToF16(src[i]);
      return;
    }
    case TensorType::kBF16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = F32ToBf16(src[i]);
      return;
    }
    case TensorType::kQ8_0: QuantizeQ8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
    case TensorType::kQ4_0: QuantizeQ4_0(src, static_cast<BlockQ4_0*>(dst), nb); return;
    case TensorType::kQ5_0: QuantizeQ5_0(src, static_cast<BlockQ5_0*>(dst), nb); return;
    case TensorType::kQ4_K: QuantizeQ4K(src, static_cast<BlockQ4_K*>(dst), nb); return;
    case TensorType::kQ5_K: QuantizeQ5K(src, static_cast<BlockQ5_K*>(dst), nb); return;
    case TensorType::kQ6_K: QuantizeQ6K(src, static_cast<BlockQ6_K*>(dst), nb); return;
    default: STRATA_CHECK_MSG(false, std::string("no quantizer for ") + TypeName(type));
  }
}

}  // namespace strata
