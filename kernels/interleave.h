// Row-interleaved copies of quantized matrices: the layout the integer
// kernels read fastest (quant_blocks.h, BlockQ4_Kx8 / BlockQ6_Kx8 / BlockQ8_0x8). A rank
// builds them from the file's rows when it loads its slice; they hold the
// same numbers, and MatMul on either layout gives bit-identical results.
//
//   if (CanInterleave(w.type, w.n_out)) {
//     std::vector<uint8_t> buf(InterleavedBytes(w.type, w.n_in, w.n_out));
//     MatrixView x8 = InterleaveRows(w, buf.data());  // layout kInterleaved8
//   }
#pragma once

#include <cstdint>

#include "kernels/matmul.h"
#include "kernels/tensor_type.h"

namespace strata {

// Q4_K, Q6_K and Q8_0 matrices whose row count is a multiple of 8.
bool CanInterleave(TensorType type, int64_t n_out);

// Bytes of one group of 8 interleaved rows of n_in elements, and of the
// whole interleaved matrix (group g starts at g * InterleavedGroupBytes).
uint64_t InterleavedGroupBytes(TensorType type, int64_t n_in);
uint64_t InterleavedBytes(TensorType type, int64_t n_in, int64_t n_out);

// Writes the interleaved copy of w (layout kRows, CanInterleave) to dst
// (InterleavedBytes) and returns its view.
MatrixView InterleaveRows(const MatrixView& w, uint8_t* dst);

// Rows [from, to) of w as a matrix of their own, in either layout (for the
// interleaved one, from and to are multiples of 8 or n_out). Each row's
// results are those it has in the whole matrix.
MatrixView MatrixRows(const MatrixView& w, int64_t from, int64_t to);

// The 8 rows of one interleaved group in the file's layout: row r at
// rows + r * RowBytes(type, n_in). Inverse of InterleaveRows.
void DeinterleaveGroup(TensorType type, const uint8_t* group, int64_t n_in, uint8_t* rows);

}  // namespace strata
