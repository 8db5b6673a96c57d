// Internal: the per-ISA function table behind the public kernels. Each ISA's
// translation unit (kernels_ref.cc, kernels_avx2.cc, kernels_avx512.cc) fills
// one table; kernel_table.cc picks the active one. Tests include this header to
// run every available ISA side by side.
#pragma once

#include <cstdint>

#include "kernels/isa.h"
#include "kernels/isa_namespace.h"
#include "kernels/tensor_type.h"

namespace strata::internal {

// Dequantizes n elements (a multiple of the type's block) of one row.
using DequantFn = void (*)(const void* src, float* dst, int64_t n);

// y[t * y_stride + r] = dot(w + r * w_stride, x + t * x_stride, n)
// for r < n_rows, t < n_tok. Every element is computed with the ISA's fixed
// accumulation order, whatever n_rows / n_tok are (this is what makes MatMul
// independent of batching and partitioning).
using DotTileFn = void (*)(const float* w, int64_t w_stride, int64_t n_rows, const float* x, int64_t x_stride,
                           int64_t n_tok, int64_t n, float* y, int64_t y_stride);

// ---------------------------------------------------------------------------
// Quantized activations (the integer dot-product path of the quantized types)
// ---------------------------------------------------------------------------
//
// Before a quantized matmul, each token's f32 row x[n] is quantized once, per
// block of `block` values (256 for the K-quant weights, 32 for Q8_0/Q4_0/Q5_0):
//   amax = max |x|, d = amax / 127 (f32), id = amax > 0 ? 127 / amax : 0,
//   q[i] = clamp(round_half_even(x[i] * id), -127, 127)   (int8),
//   sums[g] = sum of q over each group of `sum_group` values (16 for K, 32).
// x must be finite. One token's buffer, at byte offsets given by ActLayout:
//   [0, n)                      int8 q[n]
//   [off_d, off_d + 4 * nb)     f32 d[nb]           nb = n / block
//   [off_sums, ...)             int16 sums[n / sum_group]
// Tokens follow each other every `stride` bytes (64-byte multiples).
enum class ActFormat { kQ8K = 0, kQ8_32 = 1 };

struct ActLayout {
  int64_t n = 0;
  int64_t block = 0;      // values per scale d: 256 or 32
  int64_t sum_group = 0;  // values per int16 sum: 16 or 32
  int64_t off_d = 0;
  int64_t off_sums = 0;
  int64_t stride = 0;
};
ActLayout MakeActLayout(ActFormat format, int64_t n);
// The activation format a quantized weight type pairs with.
ActFormat ActFormatFor(TensorType type);

// Quantizes one token row x[l.n] into dst (l.stride bytes).
using QuantizeActFn = void (*)(const float* x, const ActLayout& l, uint8_t* dst);

// y[t * ys + r] = dot(stored row r, token t) for r < n_rows, t < n_tok, where
// row r starts at w + r * row_bytes and token t's quantized activations at
// act + t * l.stride. Every element follows the fixed combine order of
// kernels_ref.cc (exact integer sums per block, then one f32 FMA chain over
// blocks in order), whatever n_rows / n_tok are.
using QDotTileFn = void (*)(const uint8_t* w, uint64_t row_bytes, int64_t n_rows, const uint8_t* act,
                            const ActLayout& l, int64_t n_tok, float* y, int64_t ys);

// ---------------------------------------------------------------------------
// Small ops (ops.h, attention.h)
// ---------------------------------------------------------------------------
//
// Every ISA gives the same bits: the SIMD variants (ops_simd.h) run the
// reference's float operations in its order, lane for lane (sums in 16
// partial sums by index % 16, then a fixed pairwise tree; products rounded
// before they are added, never fused), and exponentials use ref::Exp's
// operations, not the C library's expf.

// y = weight * (x * (1 / sqrt(sum(x^2) / n + eps))). y may alias x.
using RmsNormFn = void (*)(const float* x, const float* weight, float* y, int64_t n, float eps);
// In place: x = Exp(x - max) / sum. n >= 1.
using SoftmaxFn = void (*)(float* x, int64_t n);
// In place: x[i] = Exp(x[i] - m) for i < n; returns their sum in softmax's
// order (16 partial sums by index % 16, then the pairwise tree). Attention's
// running softmax: softmax's middle pass over one tile of keys.
using ExpSumFn = float (*)(float* x, int64_t n, float m);
// In place: x[i] = x[i] * scale for i < n (n >= 1); returns the largest (the
// max does not depend on the order it is taken in). Attention's scores of a
// tile before exp_sum.
using ScaleMaxFn = float (*)(float* x, int64_t n, float scale);
// out = gate / (1 + Exp(-gate)) * up. out may alias gate or up.
using SiluMulFn = void (*)(const float* gate, const float* up, float* out, int64_t n);
// Attention over a KV cache read in its stored type (F32, F16, BF16, Q8_0;
// slot KvSlot(type)): rows of n elements, row_stride bytes apart, each
// element converted as dequant would convert it, in registers.
//
// kv_dot: y[t * y_stride + r] = dot(row r, x + t * x_stride) for r < n_rows,
// t < n_tok: the bits of this table's dot_tile over the rows dequantized to
// f32 (the scores of a tile of keys for the query heads of a kv head).
using KvDotFn = void (*)(const uint8_t* rows, uint64_t row_stride, int64_t n_rows, const float* x, int64_t x_stride,
                         int64_t n_tok, int64_t n, float* y, int64_t y_stride);
// kv_weighted_sum: for each set g < n_sets, with wg = w + g * w_stride and
// yg = y + g * y_stride: yg[i] = wg[0] * row0[i] + wg[1] * row1[i] + ...,
// added in row order from 0 (from yg[i] itself when `accumulate`), for i < n
// (attention's probability-weighted sums of V rows, one set per query head of
// a kv head, so each row is loaded once for all of them). Summing rows 0..a
// then, with accumulate, a+1..b gives the bits of one call over 0..b: a ring
// buffer's two runs sum as one. Every ISA gives the reference's bits.
using KvWeightedSumFn = void (*)(const float* w, int64_t w_stride, int n_sets, const uint8_t* rows, uint64_t row_stride,
                                 int64_t n_rows, int64_t n, float* y, int64_t y_stride, bool accumulate);
// Rotates n_heads vectors of head_dim ([n_heads][head_dim]) by angles with
// cosines cos[i] and sines sin[i], i < head_dim / 2: the pairs (i, i + head_dim
// / 2) when neox, else (2i, 2i + 1); (a, b) -> (a * c - b * s, b * c + a * s).
using RopeRotateFn = void (*)(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox);

// Compiled into the ISA files too: one copy per ISA (isa_namespace.h).
inline namespace STRATA_ISA_NAMESPACE {

// Slot of a type with an integer dot product in KernelTable::qdot, or -1.
inline int QDotSlot(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0: return 0;
    case TensorType::kQ4_0: return 1;
    case TensorType::kQ5_0: return 2;
    case TensorType::kQ4_K: return 3;
    case TensorType::kQ5_K: return 4;
    case TensorType::kQ6_K: return 5;
    default: return -1;
  }
}

// Slot of a type with a row-interleaved layout (interleave.h) in
// KernelTable::qdot_x8, or -1.
inline int QDotX8Slot(TensorType type) {
  switch (type) {
    case TensorType::kQ4_K: return 0;
    case TensorType::kQ8_0: return 1;
    case TensorType::kQ6_K: return 2;
    default: return -1;
  }
}

}  // namespace STRATA_ISA_NAMESPACE

struct KernelTable {
  Isa isa;
  DotTileFn dot_tile;
  // Indexed by DequantSlot(type); nullptr where the type is not computable.
  DequantFn dequant[9];
  // The integer path: activation quantizer (both formats) and, indexed by
  // QDotSlot(type), the quantized dot tiles.
  QuantizeActFn quantize_act;
  QDotTileFn qdot[6];
  // Indexed by QDotX8Slot(type): the same products on the row-interleaved
  // layout, bit-identical to qdot's. w is the group holding the first row,
  // n_rows a multiple of 8, row_bytes unused.
  QDotTileFn qdot_x8[3];
  // Small ops, bit-identical across ISAs (above).
  RmsNormFn rms_norm;
  SoftmaxFn softmax;
  ExpSumFn exp_sum;
  ScaleMaxFn scale_max;
  SiluMulFn silu_mul;
  RopeRotateFn rope_rotate;
  // Attention on the cache's rows (above), indexed by KvSlot(type).
  KvDotFn kv_dot[4];
  KvWeightedSumFn kv_weighted_sum[4];
};

inline namespace STRATA_ISA_NAMESPACE {  // as the slots above
// Slot of a KV cache type in KernelTable::kv_dot / kv_weighted_sum, or -1.
inline int KvSlot(TensorType type) {
  switch (type) {
    case TensorType::kF32: return 0;
    case TensorType::kF16: return 1;
    case TensorType::kBF16: return 2;
    case TensorType::kQ8_0: return 3;
    default: return -1;
  }
}
// Slot of a computable type in KernelTable::dequant, or -1.
inline int DequantSlot(TensorType type) {
  switch (type) {
    case TensorType::kF32: return 0;
    case TensorType::kF16: return 1;
    case TensorType::kBF16: return 2;
    case TensorType::kQ8_0: return 3;
    case TensorType::kQ4_0: return 4;
    case TensorType::kQ5_0: return 5;
    case TensorType::kQ4_K: return 6;
    case TensorType::kQ5_K: return 7;
    case TensorType::kQ6_K: return 8;
    default: return -1;
  }
}
}  // namespace STRATA_ISA_NAMESPACE

// Tables of each ISA (every build has all three). Run an ISA's table only
// where IsaAvailable() says the CPU has it.
const KernelTable& RefKernelTable();
const KernelTable& Avx2KernelTable();
const KernelTable& Avx512KernelTable();

// ---------------------------------------------------------------------------
// The dispatch decision (kernel_table.cc), a pure function of what CPUID and
// XGETBV report so that tests can put any CPU to it
// ---------------------------------------------------------------------------
struct CpuidBits {
  uint32_t leaf1_ecx = 0;  // CPUID.1:ECX
  bool has_leaf7 = false;  // leaf 7 exists
  uint32_t leaf7_ebx = 0;  // CPUID.(7,0):EBX
  uint32_t leaf7_ecx = 0;  // CPUID.(7,0):ECX
  uint64_t xcr0 = 0;       // XGETBV(0): register state the OS saves; 0 without OSXSAVE
};
struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C + BMI2 with YMM state enabled: the avx2 files' -m flags
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ/VNNI with opmask and ZMM state enabled, on top of avx2
};
CpuFeatures FeaturesFromCpuid(const CpuidBits& bits);
bool IsaSupported(const CpuFeatures& cpu, Isa isa);
// The best supported ISA, or `forced` (STRATA_ISA's value; null when unset)
// when it names a supported one.
Isa ChooseIsa(const CpuFeatures& cpu, const char* forced);

// The table of `isa` (must be available), and the active one.
const KernelTable& KernelsFor(Isa isa);
const KernelTable& ActiveKernels();

// Reference dequantizers, shared by every table for types an ISA does not
// vectorize (they are exact, so mixing is harmless).
namespace ref {
void DequantF32(const void* src, float* dst, int64_t n);
void DequantF16(const void* src, float* dst, int64_t n);
void DequantBf16(const void* src, float* dst, int64_t n);
void DequantQ8_0(const void* src, float* dst, int64_t n);
void DequantQ4_0(const void* src, float* dst, int64_t n);
void DequantQ5_0(const void* src, float* dst, int64_t n);
void DequantQ4K(const void* src, float* dst, int64_t n);
void DequantQ5K(const void* src, float* dst, int64_t n);
void DequantQ6K(const void* src, float* dst, int64_t n);
void QuantizeAct(const float* x, const ActLayout& l, uint8_t* dst);
// exp(x) in float32 by a fixed sequence of float operations (ops.cc), which
// ops_simd.h repeats per lane: what softmax and SiLU use on every ISA.
float Exp(float x);
// Plain constexpr (internal linkage): each object has its own copy, so the
// ISA objects define no shared symbol outside their namespace (an inline
// variable is emitted as a global one when not folded, as at -O1).
constexpr float kExpHi = 89.0f;    // e^89 > FLT_MAX: +inf
constexpr float kExpLo = -104.0f;  // e^-104 < half the smallest subnormal: 0
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;  // 9 significant bits: n * kLn2Hi is exact
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);
void Softmax(float* x, int64_t n);
float ExpSum(float* x, int64_t n, float m);
float ScaleMax(float* x, int64_t n, float scale);
void SiluMul(const float* gate, const float* up, float* out, int64_t n);
void RopeRotate(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox);
}  // namespace ref

}  // namespace strata::internal
