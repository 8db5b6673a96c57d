// Row conversion between float32 and the GGUF storage types strata computes
// with: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K. Runs on every rank
// (dequantization inside the matmuls, quantization when writing GGUF files).
//
//   std::vector<uint8_t> q(*RowBytes(TensorType::kQ4_K, n));
//   QuantizeRow(TensorType::kQ4_K, x, q.data(), n);
//   DequantizeRow(TensorType::kQ4_K, q.data(), y, n);
//
// n must be a multiple of the type's block (32 or 256; 1 for float types);
// anything else aborts (STRATA_CHECK): validate shapes of untrusted files with
// RowBytes() before calling. Dequantization is exact arithmetic on the stored
// values and gives bit-identical results on every ISA.
#pragma once

#include <cstdint>

#include "kernels/isa.h"
#include "kernels/tensor_type.h"

namespace strata {

// dst[0..n) = the values stored in the row src (active ISA).
void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n);
// Same with an explicit ISA (tests, benches); it must be available.
void DequantizeRow(Isa isa, TensorType type, const void* src, float* dst, int64_t n);

// Reference quantizers (scalar, deterministic): writes RowBytes(type, n) bytes.
//   F16/BF16: round to nearest even.
//   Q8_0: d = absmax / 127.  Q4_0: d = (signed value of max |x|) / -8.
//   Q5_0: same with / -16.
//   Q4_K/Q5_K: per 32-weight sub-block a (scale, min) fit searched over a few
//   candidate scales with a least-squares refinement, then 6-bit quantization of
//   the scales and mins against fp16 super-scales, then the final weights.
//   Q6_K: per 16-weight sub-block a signed scale search, 8-bit scales against
//   an fp16 super-scale.
void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace strata
