// Internal: the integer dot-product kernels of the quantized types, written
// once with 256-bit intrinsics and compiled into both SIMD translation units
// (kernels_avx2.cc, kernels_avx512.cc), each with its own flags. Where the
// including file is built with AVX512-VNNI (+VL), the int8 and int16
// multiply-accumulates use vpdpbusd / vpdpwssd, otherwise vpmaddubsw +
// vpmaddwd. Everything here lives in an unnamed namespace so the two
// instantiations never merge at link time.
//
// Blocking: a micro-kernel computes a group of 8 (row, token) pairs held in
// registers: R rows x T tokens with R * T = 8 (8 x 1 for decode, so one pass
// over the weights keeps 8 rows in flight; 4 x 2 for prefill, so each
// unpacked weight vector feeds 2 tokens and each activation vector 4 rows).
// Per weight block every pair accumulates its exact int32 sums in one ymm;
// the 8 ymm are reduced together (a hadd tree, exact in integers) into one
// vector whose lane p is pair p's block sum, and that vector enters a per-lane
// f32 FMA chain: acc = fma(d_w * d_x, float(A), acc) (Q4_K/Q5_K then
// acc = fma(-(dmin_w * d_x), float(B), acc)). Lane p sees exactly the
// operations of kernels_ref.cc for its pair, so results are bit-identical to
// the reference and independent of which micro-kernel, tile or thread
// computed the pair. Missing rows / tokens of a partial group repeat the last
// valid one and are not stored.
//
// The row-interleaved layouts (Q4_K, Q6_K, Q8_0 as a loaded rank holds them,
// interleave.h) have their own micro-kernels further down: 8 rows in the 8
// lanes of every vector, so no reduction across lanes, and up to 4 tokens per
// pass. They are what runs the models; the row-layout kernels serve the other
// types and matrices whose row count is not a multiple of 8.
//
// Include only from a *_avx2.cc / *_avx512.cc file, inside no namespace.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/fp16.h"
#include "kernels/kernel_table.h"
#include "kernels/quant_blocks.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define STRATA_QDOT_VNNI 1
#else
#define STRATA_QDOT_VNNI 0
#endif

namespace strata::internal {
namespace {
namespace qdot {

// ---------------------------------------------------------------------------
// Integer building blocks (all exact)
// ---------------------------------------------------------------------------

// acc + sum over each 4 bytes of u (unsigned) * x (signed), per int32 lane;
// the pair sums of u * x must fit int16 (true for u <= 128, |x| <= 127).
inline __m256i DotU8I8(__m256i acc, __m256i u, __m256i x) {
#if STRATA_QDOT_VNNI
  return _mm256_dpbusd_epi32(acc, u, x);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
#endif
}

// acc + sum over each 4 bytes of u * x * s16, where s16 has one int16 scale
// per 2 bytes (int16 lane k scales bytes 2k, 2k+1).
inline __m256i DotU8I8Scaled(__m256i acc, __m256i u, __m256i x, __m256i s16) {
  const __m256i p = _mm256_maddubs_epi16(u, x);
#if STRATA_QDOT_VNNI
  return _mm256_dpwssd_epi32(acc, p, s16);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s16));
#endif
}

// Lane p = sum of the 8 int32 lanes of v[p].
inline __m256i Reduce8(const __m256i v[8]) {
  const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                          _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

// Lane p = sum of the 4 int32 lanes of v[p].
inline __m256i Reduce8x4(const __m128i v[8]) {
  const __m128i h01 = _mm_hadd_epi32(v[0], v[1]), h23 = _mm_hadd_epi32(v[2], v[3]);
  const __m128i h45 = _mm_hadd_epi32(v[4], v[5]), h67 = _mm_hadd_epi32(v[6], v[7]);
  return _mm256_set_m128i(_mm_hadd_epi32(h45, h67), _mm_hadd_epi32(h01, h23));
}

// Eight rows stream at once, more than the hardware prefetcher follows, so a
// micro-kernel fetches the group of rows two groups ahead (its R rows are
// contiguous: 2 * next_group bytes from rows[0]) as one ascending stream into
// L2, spread evenly over its nb block steps: step b fetches bytes
// [b, b + 1) * R * block_bytes of that group. Into L2, not L1: L1 prefetches
// of this many lines were dropped or evicted before use and a core streamed
// about half as fast (BM_MatVecCold Q4_K, 1 thread: 9 -> 19 GB/s). A tile that
// revisits rows already fetched (the second and later token pairs of
// prefill) passes next_group = 0, so its prefetches touch the lines it is
// reading anyway. Prefetches past the matrix are harmless: they never fault.
// Addresses as integers: they may lie past the buffer.
inline void PrefetchL2(const uint8_t* base, int64_t offset, int64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(offset);
  const uintptr_t end = begin + static_cast<uintptr_t>(bytes);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < end; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
}

template <int R>
inline void PrefetchAhead(const uint8_t* const (&rows)[R], int64_t b, int64_t block_bytes, int64_t next_group) {
  PrefetchL2(rows[0], 2 * next_group + b * R * block_bytes, R * block_bytes);
}

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// One token's quantized activations (kernel_table.h).
struct Act {
  const int8_t* q;
  const float* d;
  const int16_t* sums;
};

inline Act ActAt(const uint8_t* act, const ActLayout& l) {
  return {reinterpret_cast<const int8_t*>(act), reinterpret_cast<const float*>(act + l.off_d),
          reinterpret_cast<const int16_t*>(act + l.off_sums)};
}

// f32 lanes p = d_w[r(p)] * d_x[t(p)] with p = r * T + t, from fp16 d_w,
// built in registers for the two groups the tiles use (QDotTile).
template <int R, int T>
inline __m256 PairScales(const uint16_t (&dw)[R], const float (&dx)[T]) {
  static_assert((R == 8 && T == 1) || (R == 4 && T == 2), "QDotTile runs 8 x 1 and 4 x 2 groups only");
  if constexpr (T == 1) {
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dw))), _mm256_set1_ps(dx[0]));
  } else {
    const __m128 w4 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dw)));
    const __m256 w = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(w4), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
    const __m128 x2 = _mm_unpacklo_ps(_mm_set_ss(dx[0]), _mm_set_ss(dx[1]));
    return _mm256_mul_ps(w, _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(x2))));  // x: [x0, x1, x0, x1, ..]
  }
}

// ---------------------------------------------------------------------------
// Micro-kernels: 8 (row, token) pairs over a whole row; out[p], p = r * T + t
// ---------------------------------------------------------------------------

// The 8 6-bit scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K/Q5_K
// block, unpacked from its 12 packed bytes (quant_blocks.h) as 32-bit words.
inline __m128i UnpackScalesMinsK4(const uint8_t* s) {
  // Dwords [w0, w1, w2, -]: 16 bytes read, the block goes on after its scales.
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i lo = _mm_and_si128(v, _mm_set1_epi32(0x3f3f3f3f));  // [sc_lo, m_lo, .. ]
  // [w2 & 0x0f.., (w2 >> 4) & 0x0f..] | [((w0 >> 6) & 3) << 4, ((w1 >> 6) & 3) << 4] per byte.
  const __m128i w2 = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2));
  const __m128i nib = _mm_and_si128(_mm_srlv_epi32(w2, _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi32(0x0f0f0f0f));
  const __m128i top = _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi32(0x30303030));
  return _mm_unpacklo_epi32(lo, _mm_or_si128(nib, top));  // [sc_lo, sc_hi, m_lo, m_hi]
}

// Q4_K (kHighBits = false) and Q5_K (true).
template <bool kHighBits, int R, int T>
void MicroKScaleMin(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
  using Block = std::conditional_t<kHighBits, BlockQ5_K, BlockQ4_K>;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    PrefetchAhead<R>(rows, b, sizeof(Block), next_group);
    alignas(32) int16_t sc[R][16];  // [0..8) scales, [8..16) mins
    uint16_t dw[R], dmin[R];
    for (int r = 0; r < R; ++r) {
      const Block* blk = reinterpret_cast<const Block*>(rows[r]) + b;
      _mm256_store_si256(reinterpret_cast<__m256i*>(sc[r]), _mm256_cvtepu8_epi16(UnpackScalesMinsK4(blk->scales)));
      dw[r] = blk->d;
      dmin[r] = blk->dmin;
    }
    __m256i ai[R * T];
    for (int p = 0; p < R * T; ++p) ai[p] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i x0[T], x1[T];
      for (int t = 0; t < T; ++t) {
        x0[t] = Load256(xs[t].q + b * kQKK + 64 * c);
        x1[t] = Load256(xs[t].q + b * kQKK + 64 * c + 32);
      }
      for (int r = 0; r < R; ++r) {
        const Block* blk = reinterpret_cast<const Block*>(rows[r]) + b;
        const __m256i q = Load256(blk->qs + 32 * c);
        __m256i lo = _mm256_and_si256(q, low4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        if constexpr (kHighBits) {
          const __m256i qh = Load256(blk->qh);
          const __m256i bit = _mm256_set1_epi8(1);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), bit), 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), bit), 4));
        }
        const __m256i s0 = _mm256_set1_epi16(sc[r][2 * c]), s1 = _mm256_set1_epi16(sc[r][2 * c + 1]);
        for (int t = 0; t < T; ++t) {
          ai[r * T + t] = DotU8I8Scaled(ai[r * T + t], lo, x0[t], s0);
          ai[r * T + t] = DotU8I8Scaled(ai[r * T + t], hi, x1[t], s1);
        }
      }
    }
    // B = sum_s m_s * (qx sum of sub-block s): pair sums of the 16 sums.
    __m128i bp[T];
    float dx[T];
    for (int t = 0; t < T; ++t) {
      const __m256i s16 = Load256(xs[t].sums + 16 * b);
      bp[t] = _mm_hadd_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
      dx[t] = xs[t].d[b];
    }
    __m128i bi[R * T];
    for (int r = 0; r < R; ++r) {
      const __m128i m = _mm_load_si128(reinterpret_cast<const __m128i*>(sc[r] + 8));
      for (int t = 0; t < T; ++t) bi[r * T + t] = _mm_madd_epi16(m, bp[t]);
    }
    const __m256 fa = _mm256_cvtepi32_ps(Reduce8(ai)), fb = _mm256_cvtepi32_ps(Reduce8x4(bi));
    acc = _mm256_fmadd_ps(PairScales<R, T>(dw, dx), fa, acc);
    acc = _mm256_fnmadd_ps(PairScales<R, T>(dmin, dx), fb, acc);
  }
  _mm256_storeu_ps(out, acc);
}

template <int R, int T>
void MicroQ6K(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3);
  // Spreads an int32 holding int16 scales (a, b) to a in lanes 0..7, b in 8..15.
  const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                          2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    PrefetchAhead<R>(rows, b, sizeof(BlockQ6_K), next_group);
    alignas(32) int16_t sc[R][16];
    uint16_t dw[R];
    for (int r = 0; r < R; ++r) {
      const BlockQ6_K* blk = reinterpret_cast<const BlockQ6_K*>(rows[r]) + b;
      const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales));
      _mm256_store_si256(reinterpret_cast<__m256i*>(sc[r]), _mm256_cvtepi8_epi16(s8));
      dw[r] = blk->d;
    }
    __m256i ai[R * T];
    for (int p = 0; p < R * T; ++p) ai[p] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {  // 32 elements 128h + 32k .. +31
        __m256i x[T];
        for (int t = 0; t < T; ++t) x[t] = Load256(xs[t].q + b * kQKK + 128 * h + 32 * k);
        for (int r = 0; r < R; ++r) {
          const BlockQ6_K* blk = reinterpret_cast<const BlockQ6_K*>(rows[r]) + b;
          const __m256i ql = Load256(blk->ql + 64 * h + 32 * (k % 2));
          const __m256i qh = Load256(blk->qh + 32 * h);
          const __m256i nib = k < 2 ? _mm256_and_si256(ql, low4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low4);
          const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), three);
          const __m256i u = _mm256_or_si256(nib, _mm256_slli_epi16(hb, 4));
          int32_t pair;
          std::memcpy(&pair, &sc[r][8 * h + 2 * k], 4);
          const __m256i s16 = _mm256_shuffle_epi8(_mm256_set1_epi32(pair), spread);
          for (int t = 0; t < T; ++t) ai[r * T + t] = DotU8I8Scaled(ai[r * T + t], u, x[t], s16);
        }
      }
    }
    // A -= 32 * sum_s sc_s * (qx sum of sub-block s).
    float dx[T];
    __m256i bs[T];
    for (int t = 0; t < T; ++t) {
      bs[t] = Load256(xs[t].sums + 16 * b);
      dx[t] = xs[t].d[b];
    }
    for (int r = 0; r < R; ++r) {
      const __m256i s16 = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc[r]));
      for (int t = 0; t < T; ++t)
        ai[r * T + t] = _mm256_sub_epi32(ai[r * T + t], _mm256_slli_epi32(_mm256_madd_epi16(s16, bs[t]), 5));
    }
    acc = _mm256_fmadd_ps(PairScales<R, T>(dw, dx), _mm256_cvtepi32_ps(Reduce8(ai)), acc);
  }
  _mm256_storeu_ps(out, acc);
}

// The legacy 32-blocks: the unsigned weight bytes u and the offset subtracted
// per qx sum (Q8_0 uses the sign trick instead: |w| * sign(x, w)).
enum class Legacy { kQ8_0, kQ4_0, kQ5_0 };

template <Legacy kType>
struct LegacyTraits;
template <>
struct LegacyTraits<Legacy::kQ8_0> {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 0;
};
template <>
struct LegacyTraits<Legacy::kQ4_0> {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
};
template <>
struct LegacyTraits<Legacy::kQ5_0> {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
};

template <Legacy kType>
inline __m256i UnpackLegacy(const typename LegacyTraits<kType>::Block* blk) {
  if constexpr (kType == Legacy::kQ8_0) {
    return Load256(blk->qs);
  } else {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs));
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low4), _mm_and_si128(q, low4));
    if constexpr (kType == Legacy::kQ5_0) {
      // Byte j gets bit j of qh: spread each qh byte over 8 bytes, test bit j % 8.
      uint32_t qh;
      std::memcpy(&qh, blk->qh, 4);
      const __m256i bytes = _mm256_shuffle_epi8(
          _mm256_set1_epi32(static_cast<int>(qh)),
          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
      const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
      const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
      u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
    return u;
  }
}

template <Legacy kType, int R, int T>
void MicroLegacy(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
  using Block = typename LegacyTraits<kType>::Block;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    PrefetchAhead<R>(rows, b, sizeof(Block), next_group);
    __m256i x[T];
    float dx[T];
    alignas(32) int32_t off[8];
    for (int t = 0; t < T; ++t) {
      x[t] = Load256(xs[t].q + b * kQK);
      dx[t] = xs[t].d[b];
      for (int r = 0; r < R; ++r) off[r * T + t] = LegacyTraits<kType>::kOffset * xs[t].sums[b];
    }
    __m256i ai[R * T];
    uint16_t dw[R];
    for (int r = 0; r < R; ++r) {
      const Block* blk = reinterpret_cast<const Block*>(rows[r]) + b;
      dw[r] = blk->d;
      const __m256i w = UnpackLegacy<kType>(blk);
      for (int t = 0; t < T; ++t) {
        if constexpr (kType == Legacy::kQ8_0)
          ai[r * T + t] = DotU8I8(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(x[t], w));
        else
          ai[r * T + t] = DotU8I8(_mm256_setzero_si256(), w, x[t]);
      }
    }
    __m256i a = Reduce8(ai);
    if constexpr (LegacyTraits<kType>::kOffset != 0)
      a = _mm256_sub_epi32(a, _mm256_load_si256(reinterpret_cast<const __m256i*>(off)));
    acc = _mm256_fmadd_ps(PairScales<R, T>(dw, dx), _mm256_cvtepi32_ps(a), acc);
  }
  _mm256_storeu_ps(out, acc);
}

// ---------------------------------------------------------------------------
// Tile: groups of 8 pairs over the rows x tokens of the call
// ---------------------------------------------------------------------------

template <int R, int T>
using MicroFn = void (*)(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out);

template <int R, int T>
void RunGroups(MicroFn<R, T> micro, const uint8_t* w, uint64_t row_bytes, int64_t n_rows, const uint8_t* act,
               const ActLayout& l, int64_t n_tok, int64_t nb, float* y, int64_t ys) {
  // Rows outer: the R rows' bytes stay in L1/L2 while the tokens stream past.
  for (int64_t r0 = 0; r0 < n_rows; r0 += R) {
    const uint8_t* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = w + std::min<int64_t>(r0 + r, n_rows - 1) * row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += T) {
      Act xs[T];
      for (int t = 0; t < T; ++t) xs[t] = ActAt(act + std::min<int64_t>(t0 + t, n_tok - 1) * l.stride, l);
      alignas(32) float out[8];
      micro(rows, xs, nb, t0 == 0 ? R * static_cast<int64_t>(row_bytes) : 0, out);
      for (int r = 0; r < R && r0 + r < n_rows; ++r)
        for (int t = 0; t < T && t0 + t < n_tok; ++t) y[(t0 + t) * ys + r0 + r] = out[r * T + t];
    }
  }
}

// Decode (one token): 8 rows per group. Otherwise 4 rows x 2 tokens.
template <class Micro>
void QDotTile(const uint8_t* w, uint64_t row_bytes, int64_t n_rows, const uint8_t* act, const ActLayout& l,
              int64_t n_tok, float* y, int64_t ys) {
  const int64_t nb = l.n / l.block;
  if (n_tok == 1)
    RunGroups<8, 1>(Micro::template Fn<8, 1>, w, row_bytes, n_rows, act, l, n_tok, nb, y, ys);
  else
    RunGroups<4, 2>(Micro::template Fn<4, 2>, w, row_bytes, n_rows, act, l, n_tok, nb, y, ys);
}

struct KQ4 {
  template <int R, int T>
  static void Fn(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
    MicroKScaleMin<false, R, T>(rows, xs, nb, next_group, out);
  }
};
struct KQ5 {
  template <int R, int T>
  static void Fn(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
    MicroKScaleMin<true, R, T>(rows, xs, nb, next_group, out);
  }
};
struct KQ6 {
  template <int R, int T>
  static void Fn(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
    MicroQ6K<R, T>(rows, xs, nb, next_group, out);
  }
};
template <Legacy kType>
struct KLegacy {
  template <int R, int T>
  static void Fn(const uint8_t* const (&rows)[R], const Act (&xs)[T], int64_t nb, int64_t next_group, float* out) {
    MicroLegacy<kType, R, T>(rows, xs, nb, next_group, out);
  }
};

// ---------------------------------------------------------------------------
// Row-interleaved layouts (quant_blocks.h: BlockQ4_Kx8, BlockQ6_Kx8, BlockQ8_0x8)
// ---------------------------------------------------------------------------
// One pass over a group of 8 rows for T tokens. Each 32-byte weight vector
// holds 4 consecutive weights of every row, so one dot instruction against
// the token's broadcast activation dword advances all 8 rows (lane r = row
// r), and the per-row scales apply as vectors once per sub-block: about half
// the instructions per weight of the row-layout kernels above, no reduction
// across lanes, and one ascending stream of weight bytes. Lane r computes row
// r's exact integer sums and then the reference's FMA chain, so the results
// equal qdot's (and kernels_ref.cc's) bit for bit. out[t * 8 + r].

// A group is one ascending stream of bytes; the first token tile over a
// Q4_K or Q6_K group fetches the bytes 32 KiB past its position into L2 as it
// goes (one block's worth per block step). Later tiles find the group in
// cache. The hardware prefetcher alone leaves decode at 8.8 tok/s (Q4_K_M, 1
// thread) where these prefetches reach 14.7 (4 KiB ahead: 11; 64 and 128 KiB:
// the same as 32). Q8_0's kernel runs through its bytes with little work per
// byte, and there the hardware prefetcher alone is fastest: decode 7.2 tok/s
// (1 thread) against 5.3 with 4 KiB and 5.6-6.5 with 32 KiB software
// prefetches, 11.5-13.6 against 9.6-10.7 with 2 threads (strata bench on the
// 3B files, huge pages, runs alternated).
inline void PrefetchStream(const uint8_t* group, int64_t b, int64_t block_bytes) {
  constexpr int64_t kAhead = 32 * 1024;
  PrefetchL2(group, kAhead + b * block_bytes, block_bytes);
}

inline __m256i Broadcast32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// DotU8I8 against the 4 activation bytes at x broadcast to every lane. With
// AVX-512 the broadcast rides in vpdpbusd's memory operand ({1to8}), one
// instruction where the compiler emits two (vpbroadcastd, vpdpbusd): the
// token-tiled loops below issue one per weight vector and token, and were
// bound by instruction throughput (Q4_K, 2 tokens: 11 instructions per weight
// vector, 7 with the folded broadcast).
inline __m256i DotU8I8Broadcast(__m256i acc, __m256i u, const int8_t* x) {
#if STRATA_QDOT_VNNI
  asm("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const int32_t*>(x)));
  return acc;
#else
  return DotU8I8(acc, u, Broadcast32(x));
#endif
}

// acc + per int32 lane the sum of its two int16 products a * b.
inline __m256i DotI16(__m256i acc, __m256i a, __m256i b) {
#if STRATA_QDOT_VNNI
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// Independent accumulators per dot sum: with few tokens one chain would wait
// on each vpdpbusd's latency; the chains are added exactly at the end.
template <int T>
constexpr int kX8Chains = T >= 4 ? 1 : 4 / T;

template <int T>
inline __m256i SumChains(const __m256i (&chains)[kX8Chains<T>]) {
  __m256i s = chains[0];
  for (int k = 1; k < kX8Chains<T>; ++k) s = _mm256_add_epi32(s, chains[k]);
  return s;
}

template <int T>
void MicroQ4Kx8(const uint8_t* group, const Act (&xs)[T], int64_t nb, bool prefetch, float* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (prefetch) PrefetchStream(group, b, sizeof(BlockQ4_Kx8));
    const BlockQ4_Kx8* blk = reinterpret_cast<const BlockQ4_Kx8*>(group) + b;
    // A = sum_s sc_s * (sum of q * qx over sub-block s), per row.
    __m256i a[T];
    for (int t = 0; t < T; ++t) a[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo_sum[T][kX8Chains<T>], hi_sum[T][kX8Chains<T>];  // sub-blocks 2c and 2c + 1
      for (int t = 0; t < T; ++t)
        for (int k = 0; k < kX8Chains<T>; ++k) lo_sum[t][k] = hi_sum[t][k] = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i q = Load256(blk->qs[c][j]);
        const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        const int k = j % kX8Chains<T>;
        for (int t = 0; t < T; ++t) {
          const int8_t* xq = xs[t].q + b * kQKK + 64 * c + 4 * j;
          lo_sum[t][k] = DotU8I8Broadcast(lo_sum[t][k], lo, xq);
          hi_sum[t][k] = DotU8I8Broadcast(hi_sum[t][k], hi, xq + 32);
        }
      }
      const __m256i sc_lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk->scales[2 * c])));
      const __m256i sc_hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk->scales[2 * c + 1])));
      for (int t = 0; t < T; ++t)
        a[t] = _mm256_add_epi32(a[t], _mm256_add_epi32(_mm256_mullo_epi32(SumChains<T>(lo_sum[t]), sc_lo),
                                                       _mm256_mullo_epi32(SumChains<T>(hi_sum[t]), sc_hi)));
    }
    // B = sum_s m_s * (qx sum of sub-block s): int16 (m_2i, m_2i+1) per row
    // against the broadcast (sum_2i, sum_2i+1).
    __m256i m[4];
    for (int i = 0; i < 4; ++i) m[i] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->mins[i])));
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->d)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->dmin)));
    for (int t = 0; t < T; ++t) {
      const __m256i s16 = Load256(xs[t].sums + 16 * b);
      const __m256i sub = _mm256_broadcastsi128_si256(_mm_hadd_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1)));
      __m256i bm = _mm256_madd_epi16(m[0], _mm256_shuffle_epi32(sub, 0x00));
      bm = DotI16(bm, m[1], _mm256_shuffle_epi32(sub, 0x55));
      bm = DotI16(bm, m[2], _mm256_shuffle_epi32(sub, 0xAA));
      bm = DotI16(bm, m[3], _mm256_shuffle_epi32(sub, 0xFF));
      const __m256 dx = _mm256_set1_ps(xs[t].d[b]);
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(a[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(bm), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

template <int T>
void MicroQ8_0x8(const uint8_t* group, const Act (&xs)[T], int64_t nb, bool /*prefetch: see PrefetchStream*/, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ8_0x8* blk = reinterpret_cast<const BlockQ8_0x8*>(group) + b;
    __m256i sum[T][kX8Chains<T>];
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < kX8Chains<T>; ++k) sum[t][k] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      const __m256i w = Load256(blk->qs[j]);
      const int k = j % kX8Chains<T>;
#if STRATA_QDOT_VNNI
      // vpdpbusd takes unsigned weights: w + 128, and 128 * sum qx comes off below.
      const __m256i u = _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)));
      for (int t = 0; t < T; ++t) sum[t][k] = DotU8I8Broadcast(sum[t][k], u, xs[t].q + b * kQK + 4 * j);
#else
      // vpmaddubsw's int16 pair sums would saturate with w + 128: |w| * sign(x, w).
      const __m256i u = _mm256_abs_epi8(w);
      for (int t = 0; t < T; ++t)
        sum[t][k] = DotU8I8(sum[t][k], u, _mm256_sign_epi8(Broadcast32(xs[t].q + b * kQK + 4 * j), w));
#endif
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->d)));
    for (int t = 0; t < T; ++t) {
      __m256i a = SumChains<T>(sum[t]);
#if STRATA_QDOT_VNNI
      a = _mm256_sub_epi32(a, _mm256_set1_epi32(128 * xs[t].sums[b]));
#endif
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xs[t].d[b])), _mm256_cvtepi32_ps(a), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

// The unsigned 6-bit weights of part p (elements 32p .. 32p + 31 of a half)
// for 4 elements of 8 rows: ql = the ql vector holding them (ql[h][n] for
// parts 0 and 2, ql[h][n + 8] for 1 and 3), qh = qh[h][n] (bits 2p, 2p + 1).
template <int p>
inline __m256i Q6Part(__m256i ql, __m256i qh) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  const __m256i nib = p < 2 ? _mm256_and_si256(ql, low4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low4);
  // Bits 2p, 2p + 1 of qh moved to bits 4, 5.
  const __m256i high = p == 0 ? _mm256_slli_epi16(qh, 4) : p == 1 ? _mm256_slli_epi16(qh, 2) : p == 2 ? qh : _mm256_srli_epi16(qh, 2);
  return _mm256_or_si256(nib, _mm256_and_si256(high, bits45));
}

// Passes over a quad's parts: 4 tokens keep 2 parts' sums each in registers,
// 8 tokens one part's.
template <int T>
constexpr int kQ6Passes = T >= 8 ? 4 : T >= 4 ? 2 : 1;

template <int T>
void MicroQ6Kx8(const uint8_t* group, const Act (&xs)[T], int64_t nb, bool prefetch, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (prefetch) PrefetchStream(group, b, sizeof(BlockQ6_Kx8));
    const BlockQ6_Kx8* blk = reinterpret_cast<const BlockQ6_Kx8*>(group) + b;
    // Per row the int16 scale pairs (sc_2i, sc_2i+1), i = 0..7.
    __m256i sc_pair[8];
    for (int i = 0; i < 8; ++i) sc_pair[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales[i])));
    // A = sum_s sc_s * (sum of q * qx over sub-block s), q the unsigned 6-bit value.
    __m256i a[T];
    for (int t = 0; t < T; ++t) a[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      for (int nh = 0; nh < 2; ++nh) {
        // Quads n = 4 nh .. 4 nh + 3 of the 32-element parts p of half h
        // (sub-block 8h + 2p + nh). A pass takes parts kFirst, kFirst +
        // kStep, ..: all 4 for few tokens, else 0, 2 then 1, 3 so that the
        // sums of 4 tokens stay in registers.
        auto pass = [&]<int kFirst, int kStep>() {
          constexpr int kPer = 4 / kQ6Passes<T>;
          __m256i dot[T][kPer];
          for (int t = 0; t < T; ++t)
            for (int k = 0; k < kPer; ++k) dot[t][k] = _mm256_setzero_si256();
          auto quad = [&](int n) {
            const __m256i qh = Load256(blk->qh[h][n]);
            [&]<int... kK>(std::integer_sequence<int, kK...>) {
              (
                  [&] {
                    constexpr int p = kFirst + kStep * kK;
                    const __m256i u = Q6Part<p>(Load256(blk->ql[h][n + 8 * (p % 2)]), qh);
                    for (int t = 0; t < T; ++t)
                      dot[t][kK] = DotU8I8Broadcast(dot[t][kK], u, xs[t].q + b * kQKK + 128 * h + 32 * p + 4 * n);
                  }(),
                  ...);
            }(std::make_integer_sequence<int, kPer>{});
          };
          // Unrolled for 4 tokens: the rolled loop kept its 8 sums moving
          // between registers (BM_MatMul Q6_K 2048 x 2048, 1 thread, runs
          // alternated: 4 tokens 229 -> 205 us, 1 token 102 -> 95, 2 tokens
          // 117 -> 127).
          if constexpr (T >= 4) {
#pragma GCC unroll 4
            for (int n = 4 * nh; n < 4 * nh + 4; ++n) quad(n);
          } else {
            for (int n = 4 * nh; n < 4 * nh + 4; ++n) quad(n);
          }
          for (int k = 0; k < kPer; ++k) {
            // int32 sc of sub-block 8h + 2p + nh: the low or high int16 of
            // scale pair 4h + p.
            const __m256i pair = sc_pair[4 * h + kFirst + kStep * k];
            const __m256i sc = nh == 0 ? _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16) : _mm256_srai_epi32(pair, 16);
            for (int t = 0; t < T; ++t) a[t] = _mm256_add_epi32(a[t], _mm256_mullo_epi32(dot[t][k], sc));
          }
        };
        if constexpr (kQ6Passes<T> == 4) {
          pass.template operator()<0, 1>();
          pass.template operator()<1, 1>();
          pass.template operator()<2, 1>();
          pass.template operator()<3, 1>();
        } else if constexpr (kQ6Passes<T> == 2) {
          pass.template operator()<0, 2>();
          pass.template operator()<1, 2>();
        } else {
          pass.template operator()<0, 1>();
        }
      }
    }
    // A -= 32 * sum_s sc_s * (qx sum of sub-block s): the scale pairs against
    // the broadcast pairs of sums.
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->d)));
    for (int t = 0; t < T; ++t) {
      const __m256i sums = Load256(xs[t].sums + 16 * b);
      __m256i off = _mm256_madd_epi16(sc_pair[0], _mm256_permutevar8x32_epi32(sums, _mm256_set1_epi32(0)));
      for (int i = 1; i < 8; ++i) off = DotI16(off, sc_pair[i], _mm256_permutevar8x32_epi32(sums, _mm256_set1_epi32(i)));
      const __m256i at = _mm256_sub_epi32(a[t], _mm256_slli_epi32(off, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xs[t].d[b])), _mm256_cvtepi32_ps(at), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

template <int T>
using MicroX8Fn = void (*)(const uint8_t* group, const Act (&xs)[T], int64_t nb, bool prefetch, float* out);

// Tokens [t0, t1) of one group in tiles of T (t1 - t0 a multiple of T).
template <int T>
void GroupTokensX8(MicroX8Fn<T> micro, const uint8_t* group, const uint8_t* act,
                   const ActLayout& l, int64_t t0, int64_t t1, int64_t nb, float* y, int64_t ys) {
  for (int64_t t = t0; t < t1; t += T) {
    Act xs[T];
    for (int k = 0; k < T; ++k) xs[k] = ActAt(act + (t + k) * l.stride, l);
    alignas(32) float out[8 * T];
    micro(group, xs, nb, t == 0, out);
    for (int k = 0; k < T; ++k) std::memcpy(y + (t + k) * ys, out + 8 * k, 8 * sizeof(float));
  }
}

// The widest token tile whose sums stay in registers (AVX-512 has 32 vector
// registers, AVX2 16).
constexpr int kX8Tokens = STRATA_QDOT_VNNI ? 4 : 2;

// The micro-kernel of each interleaved block type, and its widest tile.
template <class Block>
struct MicroX8;
template <>
struct MicroX8<BlockQ4_Kx8> {
  template <int T>
  static constexpr MicroX8Fn<T> kFn = MicroQ4Kx8<T>;
  static constexpr int kTokens = kX8Tokens;
};
template <>
struct MicroX8<BlockQ6_Kx8> {
  template <int T>
  static constexpr MicroX8Fn<T> kFn = MicroQ6Kx8<T>;
  // Unpacking a 6-bit weight vector costs 4-5 instructions against Q4_K's
  // 2: 8 tokens share it where the registers allow.
  static constexpr int kTokens = STRATA_QDOT_VNNI ? 8 : kX8Tokens;
};
template <>
struct MicroX8<BlockQ8_0x8> {
  template <int T>
  static constexpr MicroX8Fn<T> kFn = MicroQ8_0x8<T>;
  static constexpr int kTokens = kX8Tokens;
};

// Tokens [t0, n_tok) of one group: tiles of T while they last, then the
// leftover in one tile each of T / 2, T / 4, .., 1.
template <class Block, int T>
void GroupTokensDown(const uint8_t* group, const uint8_t* act, const ActLayout& l, int64_t t0, int64_t n_tok,
                     int64_t nb, float* y, int64_t ys) {
  const int64_t end = t0 + (n_tok - t0) / T * T;
  GroupTokensX8<T>(MicroX8<Block>::template kFn<T>, group, act, l, t0, end, nb, y, ys);
  if constexpr (T > 1) GroupTokensDown<Block, T / 2>(group, act, l, end, n_tok, nb, y, ys);
}

// Groups outer: a group's bytes stay in L1/L2 while the tokens stream past.
template <class Block>
void QDotTileX8(const uint8_t* w, uint64_t /*row_bytes*/, int64_t n_rows, const uint8_t* act, const ActLayout& l,
                int64_t n_tok, float* y, int64_t ys) {
  const int64_t nb = l.n / l.block;
  const int64_t group_bytes = nb * static_cast<int64_t>(sizeof(Block));
  for (int64_t g = 0; g < n_rows / 8; ++g)
    GroupTokensDown<Block, MicroX8<Block>::kTokens>(w + g * group_bytes, act, l, 0, n_tok, nb, y + 8 * g, ys);
}

// ---------------------------------------------------------------------------
// Activation quantization (same operations as ref::QuantizeAct)
// ---------------------------------------------------------------------------

inline float HMax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline void QuantizeActSimd(const float* x, const ActLayout& l, uint8_t* dst) {
  int8_t* q = reinterpret_cast<int8_t*>(dst);
  float* d = reinterpret_cast<float*>(dst + l.off_d);
  int16_t* sums = reinterpret_cast<int16_t*>(dst + l.off_sums);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i lim_hi = _mm256_set1_epi32(127), lim_lo = _mm256_set1_epi32(-127);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < l.n / l.block; ++b) {
    const float* xb = x + b * l.block;
    __m256 vmax = _mm256_setzero_ps();
    for (int64_t i = 0; i < l.block; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xb + i), abs_mask));
    const float amax = HMax8(vmax);
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    const __m256 idv = _mm256_set1_ps(id);
    for (int64_t i = 0; i < l.block; i += 32) {
      __m256i v[4];
      for (int k = 0; k < 4; ++k) {
        const __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * k), idv));
        v[k] = _mm256_max_epi32(_mm256_min_epi32(r, lim_hi), lim_lo);
      }
      const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * l.block + i), _mm256_permutevar8x32_epi32(p, order));
    }
  }
  for (int64_t g = 0; g < l.n / l.sum_group; ++g) {
    int s = 0;
    for (int64_t i = 0; i < l.sum_group; ++i) s += q[g * l.sum_group + i];
    sums[g] = static_cast<int16_t>(s);
  }
}

}  // namespace qdot

// The integer-path entries of a SIMD kernel table, in QDotSlot order.
inline void FillQDot(KernelTable* t) {
  t->quantize_act = qdot::QuantizeActSimd;
  t->qdot[0] = qdot::QDotTile<qdot::KLegacy<qdot::Legacy::kQ8_0>>;
  t->qdot[1] = qdot::QDotTile<qdot::KLegacy<qdot::Legacy::kQ4_0>>;
  t->qdot[2] = qdot::QDotTile<qdot::KLegacy<qdot::Legacy::kQ5_0>>;
  t->qdot[3] = qdot::QDotTile<qdot::KQ4>;
  t->qdot[4] = qdot::QDotTile<qdot::KQ5>;
  t->qdot[5] = qdot::QDotTile<qdot::KQ6>;
  t->qdot_x8[0] = qdot::QDotTileX8<BlockQ4_Kx8>;
  t->qdot_x8[1] = qdot::QDotTileX8<BlockQ8_0x8>;
  t->qdot_x8[2] = qdot::QDotTileX8<BlockQ6_Kx8>;
}

}  // namespace
}  // namespace strata::internal
