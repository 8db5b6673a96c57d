// Internal: the small ops of a layer (RMSNorm, softmax, SiLU * up, RoPE's
// rotation), written once over a 16-lane f32 vector and compiled into both
// SIMD translation units: one zmm in kernels_avx512.cc, two ymm (lanes 0-7,
// 8-15) in kernels_avx2.cc. attention_simd.h builds on its vector.
//
// Blocking: one pass per step of the reference (ops.cc), 16 elements at a
// time, the last partial chunk through masked loads and stores.
//
// Determinism: each lane runs the reference's float operations in its order,
// so every ISA gives the reference's bits. Sums: lane j holds the reference's
// partial sum j (element i -> lane i % 16; the zero-filled lanes of the last
// chunk add +0), then ReduceLanes16 is the reference's pairwise tree.
// Products pass through NoContract, so that GCC never fuses them into an FMA
// the baseline reference does not have. exp is ref::Exp's sequence per lane.
//
// Include only from a *_avx2.cc / *_avx512.cc file, inside no namespace.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/kernel_table.h"
#include "kernels/simd_common.h"

namespace strata::internal {
namespace {
namespace ops {

#if defined(__AVX512F__)

struct F32x16 {
  __m512 v;
};

inline __mmask16 FirstLanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }
inline F32x16 Load(const float* p) { return {_mm512_loadu_ps(p)}; }
// The first n < 16 values at p; the other lanes hold `fill`.
inline F32x16 LoadFirst(const float* p, int64_t n, float fill = 0.0f) {
  return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), FirstLanes(n), p)};
}
inline void Store(float* p, F32x16 a) { _mm512_storeu_ps(p, a.v); }
inline void StoreFirst(float* p, F32x16 a, int64_t n) { _mm512_mask_storeu_ps(p, FirstLanes(n), a.v); }
// Lanes n.. zeroed.
inline F32x16 KeepFirst(F32x16 a, int64_t n) { return {_mm512_maskz_mov_ps(FirstLanes(n), a.v)}; }
inline F32x16 Set1(float f) { return {_mm512_set1_ps(f)}; }
inline F32x16 Add(F32x16 a, F32x16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline F32x16 Sub(F32x16 a, F32x16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline F32x16 Mul(F32x16 a, F32x16 b) { return {NoContract(_mm512_mul_ps(a.v, b.v))}; }
inline F32x16 Div(F32x16 a, F32x16 b) { return {_mm512_div_ps(a.v, b.v)}; }
// a * b + c rounded once (the dot products' step; the small ops never fuse).
inline F32x16 Fma(F32x16 a, F32x16 b, F32x16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
// 16 stored values widened exactly: f16, bf16, int8.
inline F32x16 LoadF16(const uint16_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))}; }
inline F32x16 LoadBf16(const uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(v, 16))};
}
inline F32x16 LoadI8(const int8_t* p) {
  return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
}
inline F32x16 Neg(F32x16 a) { return {_mm512_xor_ps(a.v, _mm512_set1_ps(-0.0f))}; }
// a < b ? a : b and a > b ? a : b, as minps / maxps compute them.
inline F32x16 Min(F32x16 a, F32x16 b) { return {_mm512_min_ps(a.v, b.v)}; }
inline F32x16 Max(F32x16 a, F32x16 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline F32x16 Floor(F32x16 a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
// 2^(n >> 1) and 2^(n - (n >> 1)) for integral fn = n, |n| <= 252.
inline void Pow2Halves(F32x16 fn, F32x16* s1, F32x16* s2) {
  const __m512i n = _mm512_cvttps_epi32(fn.v), bias = _mm512_set1_epi32(127);
  const __m512i n1 = _mm512_srai_epi32(n, 1), n2 = _mm512_sub_epi32(n, n1);
  *s1 = {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23))};
  *s2 = {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23))};
}
// a in its NaN lanes, b elsewhere.
inline F32x16 NanOr(F32x16 a, F32x16 b) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q), b.v, a.v)};
}
inline float ReduceSum(F32x16 a) {
  return ReduceLanes16(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
}
inline float ReduceMax(F32x16 a) { return _mm512_reduce_max_ps(a.v); }
// [a0 b0 a1 b1 ..] -> [b0 a0 b1 a1 ..]
inline F32x16 SwapPairs(F32x16 a) { return {_mm512_permute_ps(a.v, 0xB1)}; }
// The even lanes negated (an exact sign flip).
inline F32x16 AlternateSign(F32x16 a) {
  return {_mm512_xor_ps(a.v, _mm512_castsi512_ps(_mm512_set1_epi64(0x80000000)))};
}
// The first 8 values at p (n < 8: the first n, zeros after), each twice.
inline F32x16 LoadTwice8(const float* p, int64_t n = 8) {
  const __m256 v = _mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << n) - 1), p);
  const __m512i idx = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  return {_mm512_permutexvar_ps(idx, _mm512_castps256_ps512(v))};
}

#else

struct F32x16 {
  __m256 lo, hi;
};

// Per lane of the half starting at lane `first`: all ones where lane < n.
inline __m256i LaneMask(int64_t n, int first) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n) - first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline F32x16 Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline F32x16 LoadFirst(const float* p, int64_t n, float fill = 0.0f) {
  const __m256i m0 = LaneMask(n, 0), m1 = LaneMask(n, 8);
  const __m256 f = _mm256_set1_ps(fill);
  return {_mm256_blendv_ps(f, _mm256_maskload_ps(p, m0), _mm256_castsi256_ps(m0)),
          _mm256_blendv_ps(f, _mm256_maskload_ps(p + 8, m1), _mm256_castsi256_ps(m1))};
}
inline void Store(float* p, F32x16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
inline void StoreFirst(float* p, F32x16 a, int64_t n) {
  _mm256_maskstore_ps(p, LaneMask(n, 0), a.lo);
  _mm256_maskstore_ps(p + 8, LaneMask(n, 8), a.hi);
}
inline F32x16 KeepFirst(F32x16 a, int64_t n) {
  return {_mm256_and_ps(a.lo, _mm256_castsi256_ps(LaneMask(n, 0))),
          _mm256_and_ps(a.hi, _mm256_castsi256_ps(LaneMask(n, 8)))};
}
inline F32x16 Set1(float f) { return {_mm256_set1_ps(f), _mm256_set1_ps(f)}; }
inline F32x16 Add(F32x16 a, F32x16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline F32x16 Sub(F32x16 a, F32x16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline F32x16 Mul(F32x16 a, F32x16 b) {
  return {NoContract(_mm256_mul_ps(a.lo, b.lo)), NoContract(_mm256_mul_ps(a.hi, b.hi))};
}
inline F32x16 Div(F32x16 a, F32x16 b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
inline F32x16 Fma(F32x16 a, F32x16 b, F32x16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline F32x16 LoadF16(const uint16_t* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
}
inline F32x16 LoadBf16(const uint16_t* p) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(lo), 16)),
          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(hi), 16))};
}
inline F32x16 LoadI8(const int8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))};
}
inline F32x16 Neg(F32x16 a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  return {_mm256_xor_ps(a.lo, sign), _mm256_xor_ps(a.hi, sign)};
}
inline F32x16 Min(F32x16 a, F32x16 b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
inline F32x16 Max(F32x16 a, F32x16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline F32x16 Floor(F32x16 a) { return {_mm256_floor_ps(a.lo), _mm256_floor_ps(a.hi)}; }
inline void Pow2HalvesOf(__m256 fn, __m256* s1, __m256* s2) {
  const __m256i n = _mm256_cvttps_epi32(fn), bias = _mm256_set1_epi32(127);
  const __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
  *s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  *s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
}
inline void Pow2Halves(F32x16 fn, F32x16* s1, F32x16* s2) {
  Pow2HalvesOf(fn.lo, &s1->lo, &s2->lo);
  Pow2HalvesOf(fn.hi, &s1->hi, &s2->hi);
}
inline F32x16 NanOr(F32x16 a, F32x16 b) {
  return {_mm256_blendv_ps(b.lo, a.lo, _mm256_cmp_ps(a.lo, a.lo, _CMP_UNORD_Q)),
          _mm256_blendv_ps(b.hi, a.hi, _mm256_cmp_ps(a.hi, a.hi, _CMP_UNORD_Q))};
}
inline float ReduceSum(F32x16 a) { return ReduceLanes16(a.lo, a.hi); }
inline float ReduceMax(F32x16 a) {
  const __m256 m = _mm256_max_ps(a.lo, a.hi);
  __m128 v = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
inline F32x16 SwapPairs(F32x16 a) { return {_mm256_permute_ps(a.lo, 0xB1), _mm256_permute_ps(a.hi, 0xB1)}; }
inline F32x16 AlternateSign(F32x16 a) {
  const __m256 even = _mm256_castsi256_ps(_mm256_set1_epi64x(0x80000000));
  return {_mm256_xor_ps(a.lo, even), _mm256_xor_ps(a.hi, even)};
}
inline F32x16 LoadTwice8(const float* p, int64_t n = 8) {
  const __m256 v = _mm256_maskload_ps(p, LaneMask(n, 0));
  return {_mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)),
          _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7))};
}

#endif

// ref::Exp lane for lane.
inline F32x16 Exp(F32x16 x) {
  const F32x16 in = x;
  x = Min(Set1(ref::kExpHi), x);
  x = Max(Set1(ref::kExpLo), x);
  const F32x16 fn = Floor(Add(Mul(x, Set1(ref::kLog2e)), Set1(0.5f)));
  const F32x16 r = Sub(Sub(x, Mul(fn, Set1(ref::kLn2Hi))), Mul(fn, Set1(ref::kLn2Lo)));
  F32x16 p = Set1(ref::kExpP[0]);
  for (int k = 1; k < 6; ++k) p = Add(Mul(p, r), Set1(ref::kExpP[k]));
  const F32x16 er = Add(Add(Mul(p, Mul(r, r)), r), Set1(1.0f));
  F32x16 s1, s2;
  Pow2Halves(fn, &s1, &s2);
  return NanOr(in, Mul(Mul(er, s1), s2));
}

void RmsNormSimd(const float* x, const float* weight, float* y, int64_t n, float eps) {
  F32x16 acc = Set1(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const F32x16 v = Load(x + i);
    acc = Add(acc, Mul(v, v));
  }
  if (i < n) {
    const F32x16 v = LoadFirst(x + i, n - i);
    acc = Add(acc, Mul(v, v));
  }
  const float mean = ReduceSum(acc) / static_cast<float>(n);
  const F32x16 inv_rms = Set1(1.0f / std::sqrt(mean + eps));
  for (i = 0; i + 16 <= n; i += 16) Store(y + i, Mul(Load(weight + i), Mul(Load(x + i), inv_rms)));
  if (i < n) StoreFirst(y + i, Mul(LoadFirst(weight + i, n - i), Mul(LoadFirst(x + i, n - i), inv_rms)), n - i);
}

float ExpSumSimd(float* x, int64_t n, float m) {
  const F32x16 max = Set1(m);
  F32x16 acc = Set1(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const F32x16 e = Exp(Sub(Load(x + i), max));
    Store(x + i, e);
    acc = Add(acc, e);
  }
  if (i < n) {
    const F32x16 e = Exp(Sub(LoadFirst(x + i, n - i), max));
    StoreFirst(x + i, e, n - i);
    acc = Add(acc, KeepFirst(e, n - i));
  }
  return ReduceSum(acc);
}

float ScaleMaxSimd(float* x, int64_t n, float scale) {
  const float first = x[0];
  const F32x16 s = Set1(scale);
  F32x16 mx = Set1(first * scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const F32x16 v = Mul(Load(x + i), s);
    Store(x + i, v);
    mx = Max(mx, v);
  }
  if (i < n) {
    // The tail's empty lanes repeat the first scaled score.
    const F32x16 v = Mul(LoadFirst(x + i, n - i, first), s);
    StoreFirst(x + i, v, n - i);
    mx = Max(mx, v);
  }
  return ReduceMax(mx);
}

void SoftmaxSimd(float* x, int64_t n) {
  // The max does not depend on the order it is taken in; the tail's empty
  // lanes repeat x[0].
  F32x16 mx = Set1(x[0]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) mx = Max(mx, Load(x + i));
  if (i < n) mx = Max(mx, LoadFirst(x + i, n - i, x[0]));
  const F32x16 sum = Set1(ExpSumSimd(x, n, ReduceMax(mx)));
  for (i = 0; i + 16 <= n; i += 16) Store(x + i, Div(Load(x + i), sum));
  if (i < n) StoreFirst(x + i, Div(LoadFirst(x + i, n - i), sum), n - i);
}

inline F32x16 SiluMulOf(F32x16 g, F32x16 u) { return Mul(Div(g, Add(Set1(1.0f), Exp(Neg(g)))), u); }

void SiluMulSimd(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) Store(out + i, SiluMulOf(Load(gate + i), Load(up + i)));
  if (i < n) StoreFirst(out + i, SiluMulOf(LoadFirst(gate + i, n - i), LoadFirst(up + i, n - i)), n - i);
}

// (a, b) -> (a c - b s, b c + a s) on 16 lanes.
inline void RotateNeox(float* pa, float* pb, F32x16 c, F32x16 s, int64_t n) {
  const F32x16 a = n < 16 ? LoadFirst(pa, n) : Load(pa), b = n < 16 ? LoadFirst(pb, n) : Load(pb);
  const F32x16 ra = Sub(Mul(a, c), Mul(b, s)), rb = Add(Mul(b, c), Mul(a, s));
  if (n < 16) {
    StoreFirst(pa, ra, n);
    StoreFirst(pb, rb, n);
  } else {
    Store(pa, ra);
    Store(pb, rb);
  }
}

void RopeRotateSimd(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* q = v + static_cast<int64_t>(h) * head_dim;
    if (neox) {
      for (int i = 0; i < half; i += 16) {
        const int64_t m = std::min(16, half - i);
        const F32x16 c = m < 16 ? LoadFirst(cos + i, m) : Load(cos + i), s = m < 16 ? LoadFirst(sin + i, m) : Load(sin + i);
        RotateNeox(q + i, q + half + i, c, s, m);
      }
      continue;
    }
    // 8 pairs per vector: lane 2k holds a, 2k + 1 holds b; a c + b (-s) is
    // a c - b s exactly.
    for (int i = 0; i < half; i += 8) {
      const int64_t m = std::min(8, half - i);
      const F32x16 c = LoadTwice8(cos + i, m), s = LoadTwice8(sin + i, m);
      const F32x16 x = 2 * m < 16 ? LoadFirst(q + 2 * i, 2 * m) : Load(q + 2 * i);
      const F32x16 r = Add(Mul(x, c), Mul(SwapPairs(x), AlternateSign(s)));
      if (2 * m < 16)
        StoreFirst(q + 2 * i, r, 2 * m);
      else
        Store(q + 2 * i, r);
    }
  }
}

}  // namespace ops

// The small-op entries of a SIMD kernel table.
inline void FillOps(KernelTable* t) {
  t->rms_norm = ops::RmsNormSimd;
  t->softmax = ops::SoftmaxSimd;
  t->exp_sum = ops::ExpSumSimd;
  t->scale_max = ops::ScaleMaxSimd;
  t->silu_mul = ops::SiluMulSimd;
  t->rope_rotate = ops::RopeRotateSimd;
}

}  // namespace
}  // namespace strata::internal
