// Scalar reference kernels: the readable definition of every dot product.
//
// Blocking: none worth the name. Float types: each output element is one
// sequential float sum over its row, sum += w[i] * x[i] in index order (two
// roundings per step; the ISO C++ build does not contract to FMA and does not
// reassociate), so the result depends only on the two vectors. Quantized
// types: the integer path defined below (activations quantized to int8 per
// block, exact integer block sums, one f32 FMA chain over the blocks; std::fma
// is the correctly rounded operation the SIMD FMAs perform). MatMul still
// tiles around this (matmul.cc), which keeps ref usable for whole-model tests.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/interleave.h"
#include "kernels/kernel_table.h"
#include "kernels/quant_blocks.h"

namespace strata::internal {
namespace ref {

// ---------------------------------------------------------------------------
// Integer path: activation quantization and the quantized dot products
// ---------------------------------------------------------------------------
//
// The definition every ISA reproduces bit for bit (kernel_table.h has the
// activation format). For one weight row and one token, per weight block b
// (256 values for K-quants, 32 for the legacy types), in order:
//   A_b (and for Q4_K/Q5_K B_b) = exact integer sums of quant products,
//   s_b = fl(d_w[b] * d_x[b]), y = fma(s_b, float(A_b), y)
//   Q4_K/Q5_K: t_b = fl(dmin_w[b] * d_x[b]), y = fma(-t_b, float(B_b), y)
// starting from y = 0. The integer sums are exact in int32 (bounds next to
// each), so any summation order gives the same A_b; only this float chain
// fixes the result, and the SIMD kernels run it lane-per-(row, token).
//   Q8_0: A = sum qw * qx
//   Q4_0: A = sum nib * qx - 8 * sum qx                        (|A| < 2^20)
//   Q5_0: A = sum q5 * qx - 16 * sum qx                        (|A| < 2^20)
//   Q4_K/Q5_K: A = sum_s sc_s * sum_l q_l * qx_l               (< 2^26)
//              B = sum_s m_s * (sum of qx over sub-block s)    (< 2^21)
//   Q6_K: A = sum_s sc_s * (sum_l q_l * qx_l - 32 * sum qx)    (< 2^28)
//         with q_l the unsigned 6-bit quant (value q_l - 32).

void QuantizeAct(const float* x, const ActLayout& l, uint8_t* dst) {
  int8_t* q = reinterpret_cast<int8_t*>(dst);
  float* d = reinterpret_cast<float*>(dst + l.off_d);
  int16_t* sums = reinterpret_cast<int16_t*>(dst + l.off_sums);
  for (int64_t b = 0; b < l.n / l.block; ++b) {
    const float* xb = x + b * l.block;
    float amax = 0.0f;
    for (int64_t i = 0; i < l.block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    for (int64_t i = 0; i < l.block; ++i) {
      const float v = std::nearbyint(xb[i] * id);  // default mode: half to even
      q[b * l.block + i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
  for (int64_t g = 0; g < l.n / l.sum_group; ++g) {
    int s = 0;
    for (int64_t i = 0; i < l.sum_group; ++i) s += q[g * l.sum_group + i];
    sums[g] = static_cast<int16_t>(s);
  }
}

}  // namespace ref

namespace {

struct Act {
  const int8_t* q;
  const float* d;
  const int16_t* sums;
};

Act ActAt(const uint8_t* act, const ActLayout& l) {
  return {reinterpret_cast<const int8_t*>(act), reinterpret_cast<const float*>(act + l.off_d),
          reinterpret_cast<const int16_t*>(act + l.off_sums)};
}

float DotQ8_0Ref(const uint8_t* row, const Act& x, int64_t n) {
  const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row);
  float y = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t a = 0;
    for (int j = 0; j < kQK; ++j) a += b[i].qs[j] * x.q[i * kQK + j];
    y = std::fma(F16ToF32(b[i].d) * x.d[i], static_cast<float>(a), y);
  }
  return y;
}

float DotQ4_0Ref(const uint8_t* row, const Act& x, int64_t n) {
  const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(row);
  float y = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const int8_t* xq = x.q + i * kQK;
    int32_t a = 0;
    for (int j = 0; j < kQK / 2; ++j) a += (b[i].qs[j] & 0xF) * xq[j] + (b[i].qs[j] >> 4) * xq[j + 16];
    a -= 8 * x.sums[i];
    y = std::fma(F16ToF32(b[i].d) * x.d[i], static_cast<float>(a), y);
  }
  return y;
}

float DotQ5_0Ref(const uint8_t* row, const Act& x, int64_t n) {
  const BlockQ5_0* b = reinterpret_cast<const BlockQ5_0*>(row);
  float y = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const int8_t* xq = x.q + i * kQK;
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    int32_t a = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | static_cast<int>((qh >> j) & 1u) << 4;
      const int hi = (b[i].qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      a += lo * xq[j] + hi * xq[j + 16];
    }
    a -= 16 * x.sums[i];
    y = std::fma(F16ToF32(b[i].d) * x.d[i], static_cast<float>(a), y);
  }
  return y;
}

// Q4_K (kHighBits = false) and Q5_K (true).
template <bool kHighBits, class Block>
float DotKScaleMinRef(const uint8_t* row, const Act& x, int64_t n) {
  const Block* b = reinterpret_cast<const Block*>(row);
  float y = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const int8_t* xq = x.q + i * kQKK;
    const int16_t* bsums = x.sums + i * 16;
    int32_t a = 0, bm = 0;
    for (int s = 0; s < 8; ++s) {
      int sc, m;
      UnpackScaleMinK4(s, b[i].scales, &sc, &m);
      const uint8_t* qs = b[i].qs + 32 * (s / 2);
      int32_t isum = 0;
      for (int l = 0; l < 32; ++l) {
        int q = s % 2 == 0 ? (qs[l] & 0xF) : (qs[l] >> 4);
        if constexpr (kHighBits) q |= ((b[i].qh[l] >> s) & 1) << 4;
        isum += q * xq[32 * s + l];
      }
      a += sc * isum;
      bm += m * (bsums[2 * s] + bsums[2 * s + 1]);
    }
    const float dx = x.d[i];
    y = std::fma(F16ToF32(b[i].d) * dx, static_cast<float>(a), y);
    y = std::fma(-(F16ToF32(b[i].dmin) * dx), static_cast<float>(bm), y);
  }
  return y;
}

float DotQ6KRef(const uint8_t* row, const Act& x, int64_t n) {
  const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(row);
  float y = 0.0f;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    int32_t a = 0;
    for (int s = 0; s < 16; ++s) {
      // Sub-block s = elements 16s..16s+15: half h, quarter k, l0 in 0/16.
      const int h = s / 8, k = (s % 8) / 2, l0 = 16 * (s % 2);
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* xq = x.q + i * kQKK + 16 * s;
      int32_t isum = 0;
      for (int j = 0; j < 16; ++j) {
        const int l = l0 + j;
        const uint8_t lo_byte = ql[l + (k % 2) * 32];
        const int lo = k < 2 ? (lo_byte & 0xF) : (lo_byte >> 4);
        const int q = lo | ((qh[l] >> (2 * k)) & 3) << 4;
        isum += q * xq[j];
      }
      a += b[i].scales[s] * (isum - 32 * x.sums[i * 16 + s]);
    }
    y = std::fma(F16ToF32(b[i].d) * x.d[i], static_cast<float>(a), y);
  }
  return y;
}

using RowDotRef = float (*)(const uint8_t* row, const Act& x, int64_t n);

template <RowDotRef kDot>
void QDotTileRef(const uint8_t* w, uint64_t row_bytes, int64_t n_rows, const uint8_t* act, const ActLayout& l,
                 int64_t n_tok, float* y, int64_t ys) {
  for (int64_t t = 0; t < n_tok; ++t) {
    const Act x = ActAt(act + t * l.stride, l);
    for (int64_t r = 0; r < n_rows; ++r) y[t * ys + r] = kDot(w + r * row_bytes, x, l.n);
  }
}

// The row-interleaved layouts (interleave.h): each group's 8 rows restored
// to the file's layout, then the row kernel above. This is the definition the
// SIMD x8 kernels reproduce bit for bit.
template <RowDotRef kDot, TensorType kType>
void QDotTileX8Ref(const uint8_t* w, uint64_t /*row_bytes*/, int64_t n_rows, const uint8_t* act, const ActLayout& l,
                   int64_t n_tok, float* y, int64_t ys) {
  const uint64_t row_bytes = *RowBytes(kType, l.n), group_bytes = InterleavedGroupBytes(kType, l.n);
  std::vector<uint8_t> rows(8 * row_bytes);
  for (int64_t g = 0; g < n_rows / 8; ++g) {
    DeinterleaveGroup(kType, w + g * group_bytes, l.n, rows.data());
    QDotTileRef<kDot>(rows.data(), row_bytes, 8, act, l, n_tok, y + 8 * g, ys);
  }
}

void DotTileRef(const float* w, int64_t w_stride, int64_t n_rows, const float* x, int64_t x_stride, int64_t n_tok,
                int64_t n, float* y, int64_t y_stride) {
  for (int64_t t = 0; t < n_tok; ++t) {
    const float* xt = x + t * x_stride;
    for (int64_t r = 0; r < n_rows; ++r) {
      const float* wr = w + r * w_stride;
      float sum = 0.0f;
      for (int64_t i = 0; i < n; ++i) sum += wr[i] * xt[i];
      y[t * y_stride + r] = sum;
    }
  }
}

// Attention on a KV cache (kernel_table.h): each row dequantized, then the
// f32 definitions above (dot_tile's sequential sum; the weighted sum in row
// order, product rounded before it is added).
thread_local std::vector<float> t_kv_row;

template <DequantFn kDequant>
void KvDotRef(const uint8_t* rows, uint64_t row_stride, int64_t n_rows, const float* x, int64_t x_stride, int64_t n_tok,
              int64_t n, float* y, int64_t y_stride) {
  t_kv_row.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n_rows; ++r) {
    kDequant(rows + r * row_stride, t_kv_row.data(), n);
    DotTileRef(t_kv_row.data(), n, 1, x, x_stride, n_tok, n, y + r, y_stride);
  }
}

template <DequantFn kDequant>
void KvWeightedSumRef(const float* w, int64_t w_stride, int n_sets, const uint8_t* rows, uint64_t row_stride,
                      int64_t n_rows, int64_t n, float* y, int64_t y_stride, bool accumulate) {
  if (!accumulate)
    for (int g = 0; g < n_sets; ++g) std::fill(y + g * y_stride, y + g * y_stride + n, 0.0f);
  t_kv_row.resize(static_cast<size_t>(n));
  const float* row = t_kv_row.data();
  for (int64_t j = 0; j < n_rows; ++j) {
    kDequant(rows + j * row_stride, t_kv_row.data(), n);
    for (int g = 0; g < n_sets; ++g) {
      const float wj = w[g * w_stride + j];
      float* yg = y + g * y_stride;
      for (int64_t i = 0; i < n; ++i) yg[i] += wj * row[i];
    }
  }
}

const KernelTable kRefTable = {
    Isa::kRef,
    DotTileRef,
    {ref::DequantF32, ref::DequantF16, ref::DequantBf16, ref::DequantQ8_0, ref::DequantQ4_0, ref::DequantQ5_0,
     ref::DequantQ4K, ref::DequantQ5K, ref::DequantQ6K},
    ref::QuantizeAct,
    {QDotTileRef<DotQ8_0Ref>, QDotTileRef<DotQ4_0Ref>, QDotTileRef<DotQ5_0Ref>,
     QDotTileRef<DotKScaleMinRef<false, BlockQ4_K>>, QDotTileRef<DotKScaleMinRef<true, BlockQ5_K>>,
     QDotTileRef<DotQ6KRef>},
    {QDotTileX8Ref<DotKScaleMinRef<false, BlockQ4_K>, TensorType::kQ4_K>, QDotTileX8Ref<DotQ8_0Ref, TensorType::kQ8_0>,
     QDotTileX8Ref<DotQ6KRef, TensorType::kQ6_K>},
    ref::RmsNorm,
    ref::Softmax,
    ref::ExpSum,
    ref::ScaleMax,
    ref::SiluMul,
    ref::RopeRotate,
    {KvDotRef<ref::DequantF32>, KvDotRef<ref::DequantF16>, KvDotRef<ref::DequantBf16>, KvDotRef<ref::DequantQ8_0>},
    {KvWeightedSumRef<ref::DequantF32>, KvWeightedSumRef<ref::DequantF16>, KvWeightedSumRef<ref::DequantBf16>,
     KvWeightedSumRef<ref::DequantQ8_0>},
};

}  // namespace

const KernelTable& RefKernelTable() { return kRefTable; }

}  // namespace strata::internal
