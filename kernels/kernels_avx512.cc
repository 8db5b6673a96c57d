// AVX-512 kernels: the f32 dot tile (dequantizers are shared with AVX2), the
// small ops of ops_simd.h and attention's kernels of attention_simd.h on zmm, and
// the integer dot products of qdot_simd.h built with AVX512-VNNI (256-bit
// vpdpbusd / vpdpwssd; same exact integer sums, so bit-identical to avx2).
//
// Blocking: as kernels_avx2.cc, with one zmm per dot product: 4 rows x 4
// tokens per micro-kernel (16 zmm accumulators; each loaded vector feeds 4
// FMAs), and 8 rows at a time for a single token so that decode keeps 8
// independent FMA chains in flight.
//
// Determinism: a zmm holds lanes 0..15 of the canonical 16-lane order
// (element i -> lane i % 16, FMA chain per lane, masked zero-filled last
// chunk), and the reduction first adds the two 256-bit halves, i.e. exactly
// the AVX2 kernel's acc_lo + acc_hi, then the same ReduceLanes16 tree. So
// avx512 and avx2 results are bit-identical.
// GCC 12's AVX-512 headers build their "undefined" vectors from
// self-initialized variables, which -Wuninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cstdint>

#include "kernels/attention_simd.h"
#include "kernels/kernel_table.h"
#include "kernels/ops_simd.h"
#include "kernels/qdot_simd.h"
#include "kernels/simd_common.h"

namespace strata::internal {
namespace {

// Lanes 8..15 of v.
inline __m256 UpperHalf(__m512 v) { return _mm512_extractf32x8_ps(v, 1); }

template <int R, int T>
inline void MicroDotAvx512(const float* w, int64_t ws, const float* x, int64_t xs, int64_t n, float* y, int64_t ys) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t n16 = n & ~int64_t{15};
  for (int64_t i = 0; i < n16; i += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_ps(w + r * ws + i);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * xs + i);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (n16 < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - n16)) - 1);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_ps(mask, w + r * ws + n16);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + t * xs + n16);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r)
      y[t * ys + r] = ReduceLanes16(_mm512_castps512_ps256(acc[r][t]), UpperHalf(acc[r][t]));
}

template <int R, int T>
inline void RowsDotAvx512(const float* w, int64_t ws, int64_t n_rows, const float* x, int64_t xs, int64_t n, float* y,
                          int64_t ys) {
  int64_t r = 0;
  for (; r + R <= n_rows; r += R) MicroDotAvx512<R, T>(w + r * ws, ws, x, xs, n, y + r, ys);
  for (; r < n_rows; ++r) MicroDotAvx512<1, T>(w + r * ws, ws, x, xs, n, y + r, ys);
}

void DotTileAvx512(const float* w, int64_t ws, int64_t n_rows, const float* x, int64_t xs, int64_t n_tok, int64_t n,
                   float* y, int64_t ys) {
  int64_t t = 0;
  for (; t + 4 <= n_tok; t += 4) RowsDotAvx512<4, 4>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys);
  switch (n_tok - t) {
    case 3: RowsDotAvx512<4, 3>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys); break;
    case 2: RowsDotAvx512<4, 2>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys); break;
    case 1: RowsDotAvx512<8, 1>(w, ws, n_rows, x + t * xs, xs, n, y + t * ys, ys); break;
    default: break;
  }
}

}  // namespace

const KernelTable& Avx512KernelTable() {
  // Dequantizers come from the AVX2 table: AVX-512 machines run AVX2 code,
  // and dequantization is exact either way.
  static const KernelTable table = [] {
    KernelTable t = Avx2KernelTable();
    t.isa = Isa::kAvx512;
    t.dot_tile = DotTileAvx512;
    FillQDot(&t);  // qdot_simd.h built with AVX512-VNNI: vpdpbusd / vpdpwssd
    FillOps(&t);  // ops_simd.h on zmm
    FillAttention(&t);  // attention_simd.h on zmm
    return t;
  }();
  return table;
}

}  // namespace strata::internal
