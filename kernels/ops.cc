// The small ops of a layer (ops.h): their scalar references, which every ISA
// matches bit for bit (kernel_table.h), and the public entry points, which
// dispatch to the active ISA.
//
// Blocking: single pass (two for norms, three for softmax) over contiguous
// vectors. The baseline build has no FMA, so every expression rounds as
// written. Sums use a fixed 16-partial-sum order (then a fixed pairwise tree),
// which is both deterministic and more accurate than one running sum, and is
// what one zmm (or two ymm) of partial sums computes in ops_simd.h.
#include "kernels/ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "kernels/kernel_table.h"

namespace strata {
namespace {

constexpr int kLanes = 16;

// Sum of f(i) over i < n in a fixed order: 16 running partial sums, then a
// pairwise tree over them.
template <class F>
float FixedOrderSum(int64_t n, F f) {
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += f(i + j);
  for (int j = 0; i < n; ++i, ++j) part[j] += f(i);
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int j = 0; j < width; ++j) part[j] += part[j + width];
  return part[0];
}

// 2^n for |n| <= 126 from its bits.
float Pow2(int n) {
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

namespace internal::ref {

// Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, Cody and
// Waite, so that n * kLn2Hi is exact), e^r = 1 + r + r^2 P(r), then 2^n
// applied as two factors 2^(n/2) 2^(n - n/2), so that every result from the
// subnormals to the overflow comes from one final rounding. Within 1 ulp of
// e^x (tests/unit/test_kernels.cc, KernelOps.ExpAccuracy).
float Exp(float x) {
  if (x != x) return x;
  x = kExpHi < x ? kExpHi : x;
  x = kExpLo > x ? kExpLo : x;
  const float fn = std::floor(x * kLog2e + 0.5f);
  const float r = (x - fn * kLn2Hi) - fn * kLn2Lo;
  float p = kExpP[0];
  for (int k = 1; k < 6; ++k) p = p * r + kExpP[k];
  const float er = (p * (r * r) + r) + 1.0f;
  const int n = static_cast<int>(fn);
  const int n1 = n >> 1;
  return er * Pow2(n1) * Pow2(n - n1);
}

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  const float sum_sq = FixedOrderSum(n, [x](int64_t i) { return x[i] * x[i]; });
  const float mean = sum_sq / static_cast<float>(n);
  const float inv_rms = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = weight[i] * (x[i] * inv_rms);
}

float ExpSum(float* x, int64_t n, float m) {
  for (int64_t i = 0; i < n; ++i) x[i] = Exp(x[i] - m);
  return FixedOrderSum(n, [x](int64_t i) { return x[i]; });
}

float ScaleMax(float* x, int64_t n, float scale) {
  float max = x[0] * scale;
  for (int64_t i = 0; i < n; ++i) {
    x[i] *= scale;
    max = max < x[i] ? x[i] : max;
  }
  return max;
}

void Softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = max < x[i] ? x[i] : max;
  const float sum = ExpSum(x, n, max);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / sum;
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + Exp(-g)) * up[i];
  }
}

void RopeRotate(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* q = v + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      // q * cos + rotate_half(q) * sin, rotate_half(q) = (-q2, q1).
      const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
      const float a = q[ia], b = q[ib];
      q[ia] = a * cos[i] - b * sin[i];
      q[ib] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace internal::ref

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  STRATA_CHECK(n > 0);
  internal::ActiveKernels().rms_norm(x, weight, y, n, eps);
}

void RopeRotate(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox) {
  STRATA_CHECK(head_dim % 2 == 0);
  internal::ActiveKernels().rope_rotate(v, n_heads, head_dim, cos, sin, neox);
}

void Softmax(float* x, int64_t n) {
  STRATA_CHECK(n > 0);
  internal::ActiveKernels().softmax(x, n);
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  internal::ActiveKernels().silu_mul(gate, up, out, n);
}

}  // namespace strata
