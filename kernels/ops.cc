// Scalar reference implementations of the small ops (ops.h).
//
// Blocking: single pass (two for norms and softmax) over contiguous vectors;
// they are a small fraction of a layer's time next to the matmuls. The
// baseline build has no FMA, so every expression rounds as written. Sums use a
// fixed 16-partial-sum order (then a fixed pairwise tree), which is both
// deterministic and more accurate than one running sum.
#include "kernels/ops.h"

#include <cmath>
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

// inv_freq as transformers computes it: 1.0 / (theta ** (arange(0, d, 2).float() / d)).
float InvFreq(int i, int head_dim, float theta) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  return 1.0f / std::pow(theta, exponent);
}

}  // namespace

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  STRATA_CHECK(n > 0);
  const float sum_sq = FixedOrderSum(n, [x](int64_t i) { return x[i] * x[i]; });
  const float mean = sum_sq / static_cast<float>(n);
  const float inv_rms = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = weight[i] * (x[i] * inv_rms);
}

void RopeNeox(float* v, int n_heads, int head_dim, int64_t pos, float theta) {
  STRATA_CHECK(head_dim % 2 == 0);
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * InvFreq(i, head_dim, theta);
    const float c = std::cos(angle), s = std::sin(angle);
    for (int h = 0; h < n_heads; ++h) {
      float* q = v + static_cast<int64_t>(h) * head_dim;
      const float a = q[i], b = q[i + half];
      // q * cos + rotate_half(q) * sin, rotate_half(q) = (-q2, q1).
      q[i] = a * c - b * s;
      q[i + half] = b * c + a * s;
    }
  }
}

void RopeInterleaved(float* v, int n_heads, int head_dim, int64_t pos, float theta) {
  STRATA_CHECK(head_dim % 2 == 0);
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * InvFreq(i, head_dim, theta);
    const float c = std::cos(angle), s = std::sin(angle);
    for (int h = 0; h < n_heads; ++h) {
      float* q = v + static_cast<int64_t>(h) * head_dim;
      const float a = q[2 * i], b = q[2 * i + 1];
      q[2 * i] = a * c - b * s;
      q[2 * i + 1] = b * c + a * s;
    }
  }
}

void Softmax(float* x, int64_t n) {
  STRATA_CHECK(n > 0);
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - max);
  const float sum = FixedOrderSum(n, [x](int64_t i) { return x[i]; });
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / sum;
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

float DotF32(const float* a, const float* b, int64_t n) {
  float y;
  internal::ActiveKernels().dot_tile(a, n, 1, b, n, 1, n, &y, 1);
  return y;
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace strata
