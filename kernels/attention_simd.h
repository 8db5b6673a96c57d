// Internal: attention's two kernels on a KV cache read in its stored type
// (kernel_table.h's kv_dot and kv_weighted_sum), written once over ops_simd.h's
// 16-lane vector and compiled into both SIMD translation units.
//
// Why in the stored type: at depth, decoding a token reads the whole cache
// once and does little arithmetic per element, so a separate conversion pass
// into an f32 tile (one call per 128-element row, a store and a reload) cost
// more than the dot products themselves. Here each row is widened in
// registers as it is loaded: f16 by vcvtph2ps, bf16 by a shift, Q8_0 as
// d * float(q) (the dequantizer's one rounded product).
//
// Blocking: kv_dot keeps 4 query heads x kDotRows keys in flight (each K
// chunk is loaded once for the whole group); kv_weighted_sum keeps 4 query
// heads x kSumChunks x 16 outputs in registers across all rows (each V chunk
// loaded once for the group).
//
// Determinism: kv_dot is dot_tile's 16-lane order (element i -> lane i % 16,
// an FMA chain per lane in index order, a zero-filled last chunk, then
// ReduceLanes16), so it gives the bits of dot_tile over the dequantized rows
// on both SIMD ISAs. kv_weighted_sum is the reference's per-element chain
// (product rounded, then added, rows in order), so every ISA gives the
// reference's bits.
//
// Include only from a *_avx2.cc / *_avx512.cc file, inside no namespace,
// after ops_simd.h.
#pragma once

#include <cstdint>

#include "kernels/fp16.h"
#include "kernels/kernel_table.h"
#include "kernels/ops_simd.h"
#include "kernels/quant_blocks.h"

namespace strata::internal {
namespace {
namespace kv {

using ops::F32x16;

// 16 values of a row from element i (At), or its first m < 16 from element i
// with zeros after (First), as f32.
struct F32Row {
  static uint64_t Bytes(int64_t n) { return n * sizeof(float); }
  static F32x16 At(const uint8_t* row, int64_t i) { return ops::Load(reinterpret_cast<const float*>(row) + i); }
  static F32x16 First(const uint8_t* row, int64_t i, int64_t m) {
    return ops::LoadFirst(reinterpret_cast<const float*>(row) + i, m);
  }
};

// A 16-bit float row; Widen is the scalar conversion of one element.
template <F32x16 (*kLoad)(const uint16_t*), float (*kWiden)(uint16_t)>
struct Half16Row {
  static uint64_t Bytes(int64_t n) { return n * sizeof(uint16_t); }
  static F32x16 At(const uint8_t* row, int64_t i) { return kLoad(reinterpret_cast<const uint16_t*>(row) + i); }
  static F32x16 First(const uint8_t* row, int64_t i, int64_t m) {
    alignas(64) float tail[16] = {};
    const uint16_t* h = reinterpret_cast<const uint16_t*>(row) + i;
    for (int64_t k = 0; k < m; ++k) tail[k] = kWiden(h[k]);
    return ops::Load(tail);
  }
};
using F16Row = Half16Row<ops::LoadF16, F16ToF32>;
using Bf16Row = Half16Row<ops::LoadBf16, Bf16ToF32>;

// A Q8_0 row (blocks of 32: an f16 scale d, 32 int8): element i is
// d * float(q[i]), rounded once, as DequantQ8_0 gives it.
struct Q8_0Row {
  static uint64_t Bytes(int64_t n) { return n / kQK * sizeof(BlockQ8_0); }
  static F32x16 At(const uint8_t* row, int64_t i) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row) + i / kQK;
    return ops::Mul(ops::Set1(F16ToF32(b->d)), ops::LoadI8(b->qs + i % kQK));
  }
  static F32x16 First(const uint8_t* row, int64_t i, int64_t m) {
    alignas(64) float tail[16] = {};
    for (int64_t k = 0; k < m; ++k) {
      const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row) + (i + k) / kQK;
      tail[k] = F16ToF32(b->d) * static_cast<float>(b->qs[(i + k) % kQK]);
    }
    return ops::Load(tail);
  }
};

#if defined(__AVX512F__)
constexpr int kDotRows = 4;    // 4 x 4 zmm accumulators
constexpr int kSumChunks = 4;  // 4 heads x 64 outputs: a 128-wide head in two passes
#else
constexpr int kDotRows = 1;    // 4 x 1 x 2 ymm accumulators
constexpr int kSumChunks = 1;
#endif

// Rows ahead of the one being read that are requested from memory: a kv
// head's slice of a cache row is a few cache lines at a stride of the whole
// row, which the hardware prefetchers follow poorly. Contiguous rows (a
// converted tile, or a cache of one kv head) they follow well: no requests.
constexpr int64_t kPrefetchRows = 16;

template <class Row>
inline bool Strided(uint64_t stride, int64_t n) {
  return stride > Row::Bytes(n);
}

inline void PrefetchRow(const uint8_t* row, uint64_t bytes) {
  for (uint64_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(row + b), _MM_HINT_T0);
}

#if defined(__AVX512F__)
// y[g * ys + r] = ReduceSum(acc[r][g]) for 4 rows x 4 queries, all 16 at once:
// each level adds the lane pairs ReduceLanes16 adds (j + 8, j + 4, j + 2,
// j + 1), for several sums per instruction, so the bits are ReduceSum's. Per
// sum 3 instructions instead of 8; with 8 FMAs per sum for a 128-wide head,
// the reductions were half of kv_dot's work.
inline void ReduceStore4x4(const F32x16 (&acc)[4][4], float* y, int64_t ys) {
  auto x = [&](int k) { return acc[k / 4][k % 4].v; };  // X_k, k = 4r + g
  __m512 v[8], w[4], u[2];
  // v[k]: 8 partials of X_2k in its low half, of X_2k+1 in its high half.
  for (int k = 0; k < 8; ++k)
    v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(x(2 * k), x(2 * k + 1), 0x44),
                         _mm512_shuffle_f32x4(x(2 * k), x(2 * k + 1), 0xEE));
  // w[m]: 4 partials of X_4m+b in 128-bit block b.
  for (int m = 0; m < 4; ++m)
    w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x88),
                         _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xDD));
  // u[n] block b: 2 partials of X_8n+b, then of X_8n+4+b.
  for (int n = 0; n < 2; ++n)
    u[n] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * n], w[2 * n + 1], 0x44), _mm512_shuffle_ps(w[2 * n], w[2 * n + 1], 0xEE));
  // Block b: the sums of X_b, X_4+b, X_8+b, X_12+b: rows 0..3 of query b.
  const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], 0x88), _mm512_shuffle_ps(u[0], u[1], 0xDD));
  _mm_storeu_ps(y, _mm512_castps512_ps128(f));
  _mm_storeu_ps(y + ys, _mm512_extractf32x4_ps(f, 1));
  _mm_storeu_ps(y + 2 * ys, _mm512_extractf32x4_ps(f, 2));
  _mm_storeu_ps(y + 3 * ys, _mm512_extractf32x4_ps(f, 3));
}
#endif

// y[g * ys + r] = dot(row r, x + g * xs) for R rows and G query vectors.
template <class Row, int R, int G>
inline void DotBlock(const uint8_t* rows, uint64_t stride, const float* x, int64_t xs, int64_t n, float* y, int64_t ys) {
  if (Strided<Row>(stride, n))
    for (int r = 0; r < R; ++r) PrefetchRow(rows + (r + kPrefetchRows) * stride, Row::Bytes(n));
  F32x16 acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) acc[r][g] = ops::Set1(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 v[R];
    for (int r = 0; r < R; ++r) v[r] = Row::At(rows + r * stride, i);
    for (int g = 0; g < G; ++g) {
      const F32x16 xv = ops::Load(x + g * xs + i);
      for (int r = 0; r < R; ++r) acc[r][g] = ops::Fma(v[r], xv, acc[r][g]);
    }
  }
  if (i < n) {
    F32x16 v[R];
    for (int r = 0; r < R; ++r) v[r] = Row::First(rows + r * stride, i, n - i);
    for (int g = 0; g < G; ++g) {
      const F32x16 xv = ops::LoadFirst(x + g * xs + i, n - i);
      for (int r = 0; r < R; ++r) acc[r][g] = ops::Fma(v[r], xv, acc[r][g]);
    }
  }
#if defined(__AVX512F__)
  if constexpr (R == 4 && G == 4) {
    ReduceStore4x4(acc, y, ys);
    return;
  }
#endif
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < R; ++r) y[g * ys + r] = ops::ReduceSum(acc[r][g]);
}

template <class Row, int R, int G>
inline void DotRows(const uint8_t* rows, uint64_t stride, int64_t n_rows, const float* x, int64_t xs, int64_t n, float* y,
                    int64_t ys) {
  int64_t r = 0;
  for (; r + R <= n_rows; r += R) DotBlock<Row, R, G>(rows + r * stride, stride, x, xs, n, y + r, ys);
  for (; r < n_rows; ++r) DotBlock<Row, 1, G>(rows + r * stride, stride, x, xs, n, y + r, ys);
}

template <class Row>
void KvDotSimd(const uint8_t* rows, uint64_t stride, int64_t n_rows, const float* x, int64_t xs, int64_t n_tok, int64_t n,
               float* y, int64_t ys) {
  int64_t t = 0;
  for (; t + 4 <= n_tok; t += 4) DotRows<Row, kDotRows, 4>(rows, stride, n_rows, x + t * xs, xs, n, y + t * ys, ys);
  for (; t < n_tok; ++t) DotRows<Row, 4, 1>(rows, stride, n_rows, x + t * xs, xs, n, y + t * ys, ys);
}

// Sets [0, kSets) x K chunks of 16 outputs from column i (the last chunk
// n_last < 16 wide when n_last > 0), summed over all rows in registers.
template <class Row, int kSets, int K>
inline void SumBlock(const float* w, int64_t w_stride, const uint8_t* rows, uint64_t stride, int64_t n_rows, int64_t n_cols,
                     int64_t i, int64_t n_last, float* y, int64_t y_stride, bool accumulate) {
  auto partial = [&](int k) { return n_last > 0 && k == K - 1; };
  F32x16 acc[kSets][K];
  for (int g = 0; g < kSets; ++g) {
    const float* yg = y + g * y_stride + i;
    for (int k = 0; k < K; ++k)
      acc[g][k] = !accumulate ? ops::Set1(0.0f) : partial(k) ? ops::LoadFirst(yg + 16 * k, n_last) : ops::Load(yg + 16 * k);
  }
  const bool prefetch = i == 0 && Strided<Row>(stride, n_cols);
  for (int64_t j = 0; j < n_rows; ++j) {
    const uint8_t* row = rows + j * stride;
    if (prefetch) PrefetchRow(row + kPrefetchRows * stride, Row::Bytes(n_cols));
    F32x16 v[K];
    for (int k = 0; k < K; ++k) v[k] = partial(k) ? Row::First(row, i + 16 * k, n_last) : Row::At(row, i + 16 * k);
    for (int g = 0; g < kSets; ++g) {
      const F32x16 wj = ops::Set1(w[g * w_stride + j]);
      for (int k = 0; k < K; ++k) acc[g][k] = ops::Add(acc[g][k], ops::Mul(wj, v[k]));
    }
  }
  for (int g = 0; g < kSets; ++g) {
    float* yg = y + g * y_stride + i;
    for (int k = 0; k < K; ++k) {
      if (partial(k))
        ops::StoreFirst(yg + 16 * k, acc[g][k], n_last);
      else
        ops::Store(yg + 16 * k, acc[g][k]);
    }
  }
}

// kSets sets over all n columns: blocks of K chunks, then single chunks.
template <class Row, int kSets, int K>
inline void SumSets(const float* w, int64_t w_stride, const uint8_t* rows, uint64_t stride, int64_t n_rows, int64_t n,
                    float* y, int64_t y_stride, bool acc) {
  int64_t i = 0;
  for (; i + 16 * K <= n; i += 16 * K) SumBlock<Row, kSets, K>(w, w_stride, rows, stride, n_rows, n, i, 0, y, y_stride, acc);
  for (; i + 16 <= n; i += 16) SumBlock<Row, kSets, 1>(w, w_stride, rows, stride, n_rows, n, i, 0, y, y_stride, acc);
  if (i < n) SumBlock<Row, kSets, 1>(w, w_stride, rows, stride, n_rows, n, i, n - i, y, y_stride, acc);
}

template <class Row>
void KvWeightedSumSimd(const float* w, int64_t w_stride, int n_sets, const uint8_t* rows, uint64_t stride, int64_t n_rows,
                       int64_t n, float* y, int64_t y_stride, bool acc) {
  int g = 0;
  for (; g + 4 <= n_sets; g += 4)
    SumSets<Row, 4, kSumChunks>(w + g * w_stride, w_stride, rows, stride, n_rows, n, y + g * y_stride, y_stride, acc);
  for (; g < n_sets; ++g) SumSets<Row, 1, 4>(w + g * w_stride, w_stride, rows, stride, n_rows, n, y + g * y_stride, y_stride, acc);
}

}  // namespace kv

// The attention entries of a SIMD kernel table (slots as KvSlot).
inline void FillAttention(KernelTable* t) {
  t->kv_dot[0] = kv::KvDotSimd<kv::F32Row>;
  t->kv_dot[1] = kv::KvDotSimd<kv::F16Row>;
  t->kv_dot[2] = kv::KvDotSimd<kv::Bf16Row>;
  t->kv_dot[3] = kv::KvDotSimd<kv::Q8_0Row>;
  t->kv_weighted_sum[0] = kv::KvWeightedSumSimd<kv::F32Row>;
  t->kv_weighted_sum[1] = kv::KvWeightedSumSimd<kv::F16Row>;
  t->kv_weighted_sum[2] = kv::KvWeightedSumSimd<kv::Bf16Row>;
  t->kv_weighted_sum[3] = kv::KvWeightedSumSimd<kv::Q8_0Row>;
}

}  // namespace
}  // namespace strata::internal
