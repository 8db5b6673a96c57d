// AVX2 + FMA kernels: the f32 dot tile and the dequantizers of every type.
//
// Blocking of the dot tile: the caller (matmul.cc) hands over a tile of rows
// already dequantized to f32 (a few hundred KiB, kept in L2) and a block of
// tokens. Tokens are taken 3 at a time and rows 2 at a time, so a micro-kernel
// keeps 2 x 3 dot products in flight (12 ymm accumulators) and each loaded
// vector feeds 2-3 FMAs; for a single token, 4 rows at a time.
//
// Determinism: every dot product, whatever micro-kernel computes it, uses the
// same 16-lane order: element i goes to lane i % 16 (two ymm accumulators,
// lanes 0-7 and 8-15), a fused multiply-add chain per lane in index order, a
// zero-padded last chunk for n % 16, then the fixed ReduceLanes16 tree. The
// AVX-512 kernels follow the identical order, so both ISAs agree bit for bit.
//
// Integer dot products of the quantized types: qdot_simd.h (its blocking and
// determinism notes), instantiated here with AVX2 only.
//
// Dequantizers: one block at a time, integer unpacking in registers, then the
// same float operations in the same order as the scalar reference (no FMA
// contraction, see NoContract), so their output equals quant.cc's exactly.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/attention_simd.h"
#include "kernels/fp16.h"
#include "kernels/kernel_table.h"
#include "kernels/ops_simd.h"
#include "kernels/qdot_simd.h"
#include "kernels/quant_blocks.h"
#include "kernels/simd_common.h"

namespace strata::internal {
namespace {

// ---------------------------------------------------------------------------
// Dot tile
// ---------------------------------------------------------------------------

// R rows x T tokens over n elements; y[t * ys + r].
template <int R, int T>
inline void MicroDotAvx2(const float* w, int64_t ws, const float* x, int64_t xs, int64_t n, float* y, int64_t ys) {
  __m256 acc[R][T][2];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
  const int64_t n16 = n & ~int64_t{15};
  for (int64_t i = 0; i < n16; i += 16) {
    for (int h = 0; h < 2; ++h) {
      __m256 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(w + r * ws + i + 8 * h);
      for (int t = 0; t < T; ++t) {
        const __m256 xv = _mm256_loadu_ps(x + t * xs + i + 8 * h);
        for (int r = 0; r < R; ++r) acc[r][t][h] = _mm256_fmadd_ps(wv[r], xv, acc[r][t][h]);
      }
    }
  }
  if (n16 < n) {
    // The last partial chunk, zero-padded: lanes past n add 0 * 0.
    const int64_t rem = n - n16;
    alignas(32) float wp[R][16] = {}, xp[T][16] = {};
    for (int r = 0; r < R; ++r) std::memcpy(wp[r], w + r * ws + n16, rem * sizeof(float));
    for (int t = 0; t < T; ++t) std::memcpy(xp[t], x + t * xs + n16, rem * sizeof(float));
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r)
          acc[r][t][h] = _mm256_fmadd_ps(_mm256_load_ps(wp[r] + 8 * h), _mm256_load_ps(xp[t] + 8 * h), acc[r][t][h]);
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ys + r] = ReduceLanes16(acc[r][t][0], acc[r][t][1]);
}

template <int R, int T>
inline void RowsDotAvx2(const float* w, int64_t ws, int64_t n_rows, const float* x, int64_t xs, int64_t n, float* y,
                        int64_t ys) {
  int64_t r = 0;
  for (; r + R <= n_rows; r += R) MicroDotAvx2<R, T>(w + r * ws, ws, x, xs, n, y + r, ys);
  for (; r < n_rows; ++r) MicroDotAvx2<1, T>(w + r * ws, ws, x, xs, n, y + r, ys);
}

void DotTileAvx2(const float* w, int64_t ws, int64_t n_rows, const float* x, int64_t xs, int64_t n_tok, int64_t n,
                 float* y, int64_t ys) {
  int64_t t = 0;
  for (; t + 3 <= n_tok; t += 3) RowsDotAvx2<2, 3>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys);
  if (n_tok - t == 2) RowsDotAvx2<2, 2>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys);
  if (n_tok - t == 1) RowsDotAvx2<4, 1>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys);
}

// ---------------------------------------------------------------------------
// Dequantizers
// ---------------------------------------------------------------------------

// dst[0..8) = d * float(q[0..8)) for 8 int32 lanes.
inline void StoreScaled(float* dst, __m256 d, __m256i q) { _mm256_storeu_ps(dst, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q))); }

// dst[0..32) = d * float(bytes) for 32 signed bytes.
inline void StoreScaledI8x32(float* dst, __m256 d, __m256i b) {
  const __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
  StoreScaled(dst + 0, d, _mm256_cvtepi8_epi32(lo));
  StoreScaled(dst + 8, d, _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
  StoreScaled(dst + 16, d, _mm256_cvtepi8_epi32(hi));
  StoreScaled(dst + 24, d, _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

// dst[0..32) = d * float(bytes) - m for 32 unsigned bytes (K-quant weights).
inline void StoreScaledMinU8x32(float* dst, __m256 d, __m256 m, __m256i b) {
  const __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int k = 0; k < 4; ++k) {
    const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]));
    _mm256_storeu_ps(dst + 8 * k, _mm256_sub_ps(NoContract(_mm256_mul_ps(d, q)), m));
  }
}

void DequantF16Avx2(const void* src, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) dst[i] = F16ToF32(h[i]);
}

void DequantBf16Avx2(const void* src, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
  for (; i < n; ++i) dst[i] = Bf16ToF32(h[i]);
}

void DequantQ8_0Avx2(const void* src, float* dst, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const __m256 d = _mm256_set1_ps(F16ToF32(b[i].d));
    StoreScaledI8x32(dst, d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs)));
  }
}

void DequantQ4_0Avx2(const void* src, float* dst, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(src);
  const __m128i low4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const __m256 d = _mm256_set1_ps(F16ToF32(b[i].d));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, low4), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low4), eight);
    StoreScaledI8x32(dst, d, _mm256_set_m128i(hi, lo));
  }
}

void DequantQ5_0Avx2(const void* src, float* dst, int64_t n) {
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(src);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m256i lane_shift = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i one = _mm256_set1_epi32(1), sixteen = _mm256_set1_epi32(16);
  for (int64_t i = 0; i < n / kQK; ++i, dst += kQK) {
    const __m256 d = _mm256_set1_ps(F16ToF32(b[i].d));
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    const __m256i qhv = _mm256_set1_epi32(static_cast<int>(qh));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_and_si128(q, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    const __m128i nib[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; ++k) {
      // 5th bit of elements 8k..8k+7 is bit 8k+lane of qh.
      const __m256i bit =
          _mm256_and_si256(_mm256_srlv_epi32(qhv, _mm256_add_epi32(lane_shift, _mm256_set1_epi32(8 * k))), one);
      const __m256i v = _mm256_or_si256(_mm256_cvtepu8_epi32(nib[k]), _mm256_slli_epi32(bit, 4));
      StoreScaled(dst + 8 * k, d, _mm256_sub_epi32(v, sixteen));
    }
  }
}

// Q4_K (kHighBits = false) and Q5_K (true) differ only in the 5th bit.
template <bool kHighBits, class Block>
void DequantKScaleMinAvx2(const void* src, float* dst, int64_t n) {
  const Block* b = static_cast<const Block*>(src);
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kHighBits) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      UnpackScaleMinK4(2 * c, b[i].scales, &sc0, &m0);
      UnpackScaleMinK4(2 * c + 1, b[i].scales, &sc1, &m1);
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      __m256i lo = _mm256_and_si256(q, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      if constexpr (kHighBits) {
        // Bit (2c) of qh[l] is the 5th bit of sub-block 2c, bit (2c+1) of 2c+1.
        const __m256i b0 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), one);
        const __m256i b1 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), one);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
      }
      StoreScaledMinU8x32(dst, _mm256_set1_ps(d * static_cast<float>(sc0)), _mm256_set1_ps(dmin * static_cast<float>(m0)),
                          lo);
      StoreScaledMinU8x32(dst + 32, _mm256_set1_ps(d * static_cast<float>(sc1)),
                          _mm256_set1_ps(dmin * static_cast<float>(m1)), hi);
      dst += 64;
    }
  }
}

void DequantQ4KAvx2(const void* src, float* dst, int64_t n) { DequantKScaleMinAvx2<false, BlockQ4_K>(src, dst, n); }
void DequantQ5KAvx2(const void* src, float* dst, int64_t n) { DequantKScaleMinAvx2<true, BlockQ5_K>(src, dst, n); }

void DequantQ6KAvx2(const void* src, float* dst, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(src);
  const __m256i low4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3), bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * h));
      const int8_t* sc = b[i].scales + 8 * h;
      // Quarter k covers elements 32k..32k+31 of the half; its 2-bit field of
      // qh sits at bit 2k, its nibble in ql0/ql1 low/high.
      const __m256i nib[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
      for (int k = 0; k < 4; ++k) {
        const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), three);
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(nib[k], _mm256_slli_epi16(hb, 4)), bias);
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        const __m256 d0 = _mm256_set1_ps(d * static_cast<float>(sc[2 * k]));
        const __m256 d1 = _mm256_set1_ps(d * static_cast<float>(sc[2 * k + 1]));
        float* out = dst + 32 * k;
        StoreScaled(out + 0, d0, _mm256_cvtepi8_epi32(lo));
        StoreScaled(out + 8, d0, _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        StoreScaled(out + 16, d1, _mm256_cvtepi8_epi32(hi));
        StoreScaled(out + 24, d1, _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
      }
      dst += 128;
    }
  }
}

}  // namespace

const KernelTable& Avx2KernelTable() {
  static const KernelTable table = [] {
    KernelTable t = {Isa::kAvx2,
                     DotTileAvx2,
                     {ref::DequantF32, DequantF16Avx2, DequantBf16Avx2, DequantQ8_0Avx2, DequantQ4_0Avx2,
                      DequantQ5_0Avx2, DequantQ4KAvx2, DequantQ5KAvx2, DequantQ6KAvx2},
                     nullptr,
                     {},
                     {},
                     nullptr,
                     nullptr,
                     nullptr,
                     nullptr,
                     nullptr,
                     nullptr,
                     {},
                     {}};  // the integer path, the small ops and attention's kernels: below
    FillQDot(&t);  // qdot_simd.h built with AVX2 (vpmaddubsw + vpmaddwd)
    FillOps(&t);  // ops_simd.h on pairs of ymm
    FillAttention(&t);  // attention_simd.h, the same
    return t;
  }();
  return table;
}

}  // namespace strata::internal
