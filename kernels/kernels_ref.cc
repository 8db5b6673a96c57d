// Scalar reference kernels: the readable definition of every dot product.
//
// Blocking: none worth the name. Each output element is one sequential float
// sum over its row, sum += w[i] * x[i] in index order (two roundings per
// step; the ISO C++ build does not contract to FMA and does not reassociate),
// so the result depends only on the two vectors. MatMul still tiles around
// this (matmul.cc), which keeps ref usable for whole-model tests.
#include <cstdint>

#include "kernels/kernel_table.h"

namespace strata::internal {
namespace {

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

const KernelTable kRefTable = {
    Isa::kRef,
    DotTileRef,
    {ref::DequantF32, ref::DequantF16, ref::DequantBf16, ref::DequantQ8_0, ref::DequantQ4_0, ref::DequantQ5_0,
     ref::DequantQ4K, ref::DequantQ5K, ref::DequantQ6K},
};

}  // namespace

const KernelTable& RefKernelTable() { return kRefTable; }

}  // namespace strata::internal
