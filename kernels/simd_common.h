// Internal helpers shared by the AVX2 and AVX-512 translation units. Include
// only from files compiled with AVX2+FMA enabled (*_avx2.cc, *_avx512.cc).
#pragma once

#include <immintrin.h>

#include "kernels/isa_namespace.h"

namespace strata::internal {
inline namespace STRATA_ISA_NAMESPACE {  // one copy per ISA (isa_namespace.h)

// GCC contracts a separate multiply and add of vector intrinsics into an FMA
// under its default -ffp-contract=fast (C++ modes included). The kernels are
// built with -ffp-contract=off (CMakeLists.txt); dequantization must round
// like the scalar reference (multiply, round, subtract, round) even in a file
// built without it, so products that must stay rounded also pass through this
// opaque barrier. It emits no instruction.
inline __m256 NoContract(__m256 v) {
  asm("" : "+x"(v));
  return v;
}

#if defined(__AVX512F__)
inline __m512 NoContract(__m512 v) {
  asm("" : "+v"(v));
  return v;
}
#endif

// The fixed reduction of the 16-lane accumulator shared by avx2 and avx512:
// lanes (j, j+8) first, then (j, j+4), then (j, j+2), then (0, 1). `lo` holds
// lanes 0..7 and `hi` lanes 8..15.
inline float ReduceLanes16(__m256 lo, __m256 hi) {
  const __m256 v = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

}  // namespace STRATA_ISA_NAMESPACE
}  // namespace strata::internal
