// Internal: the per-ISA function table behind the public kernels. Each ISA's
// translation unit (kernels_ref.cc, kernels_avx2.cc, kernels_avx512.cc) fills
// one table; kernel_table.cc picks the active one. Tests include this header to
// run every available ISA side by side.
#pragma once

#include <cstdint>

#include "kernels/isa.h"
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

struct KernelTable {
  Isa isa;
  DotTileFn dot_tile;
  // Indexed by DequantSlot(type); nullptr where the type is not computable.
  DequantFn dequant[9];
};

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

// Tables of each ISA. The avx2/avx512 accessors return nullptr when the build
// lacks them; use IsaAvailable() before running one.
const KernelTable& RefKernelTable();
const KernelTable* Avx2KernelTable();
const KernelTable* Avx512KernelTable();

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
}  // namespace ref

}  // namespace strata::internal
