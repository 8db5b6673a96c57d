// Matrix products of a stored weight matrix (any computable TensorType) with
// float32 activations: the projections of every layer, on every rank.
//
//   MatrixView w{TensorType::kQ4_K, data, /*n_in=*/2048, /*n_out=*/2048, row_bytes};
//   MatMul(w, x, n_tok, y, &pool);  // x: [n_tok][n_in] f32, y: [n_tok][n_out] f32
//
// DETERMINISM CONTRACT (the pipeline's bit-identical-output guarantee rests on
// it): each output element's bits depend only on its weight row, its token's
// x vector and the ISA in use (isa.h) -- never on n_tok, the token's position
// in the batch, the thread count, how rows / tokens are tiled or split
// between threads, or the matrix's layout (kRows or kInterleaved8). MatMul's
// element equals DotRow(type, row, x_t, n_in) bit for bit. This holds because
// an element is always computed the same way:
//   F32 / F16 / BF16: dequantize the row exactly to f32, then one dot product
//     with the ISA's fixed accumulation order (ref: sequential sum;
//     avx2/avx512: 16 lanes, FMA chain per lane, fixed reduction tree -- these
//     two agree with each other bit for bit).
//   Q8_0 / Q4_0 / Q5_0 / Q4_K / Q5_K / Q6_K: the integer path. x_t is
//     quantized to int8 per block from x_t alone (kernel_table.h: f32 scale
//     amax / 127, round half to even; 256-blocks with int16 sums per 16 for
//     the K-quants, 32-blocks for the others); per weight block the integer
//     sums are exact in int32; the blocks are combined by one f32 FMA chain in
//     block order (kernels_ref.cc states it). ref, avx2 and avx512 are
//     bit-identical here. The error against the exact product with the f32 x
//     is that of int8 activations: about 0.5% relative RMS on random data
//     (tested < 1e-2).
#pragma once

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/tensor_type.h"

namespace strata {

// How a matrix's rows are stored.
enum class MatrixLayout {
  kRows,          // row r at data + r * row_bytes, as in the file
  kInterleaved8,  // groups of 8 rows interleaved block by block (kernels/interleave.h)
};

// n_out rows of n_in elements. row_bytes is the size of one row as stored in
// the file, whatever the layout.
struct MatrixView {
  TensorType type;
  const uint8_t* data;
  int64_t n_in;
  int64_t n_out;
  uint64_t row_bytes;
  MatrixLayout layout = MatrixLayout::kRows;
};

// dot(row, x) for one stored row of n elements (n a multiple of the block),
// in the file's layout.
float DotRow(TensorType type, const void* row, const float* x, int64_t n);

// y[t * n_out + r] = dot(row r of w, x + t * n_in) for t < n_tok, r < n_out.
// pool may be nullptr (runs inline). Quantized types: the activations are
// quantized once per call and every weight byte is read once per row tile
// (matmul.cc); float types: a tile of rows is dequantized into an f32 tile kept
// in cache and dotted against every token.
void MatMul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool);

// The same with an explicit ISA (tests, benches); it must be available.
float DotRow(Isa isa, TensorType type, const void* row, const float* x, int64_t n);
void MatMul(Isa isa, const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool);

}  // namespace strata
