// Tensor storage types, numbered as GGUF (ggml) numbers them, with their block
// geometry. Shared by the model-file readers (size validation) and the kernels.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "kernels/isa_namespace.h"

namespace strata {

// Values are the ggml type ids written in GGUF tensor infos.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

struct TypeTraits {
  TensorType type;
  const char* name;     // as llama.cpp prints it: "Q4_K", "BF16"
  int64_t block_elems;  // elements per block (1 for float types)
  int64_t block_bytes;  // bytes per block
  bool computable;      // strata has dequant / dot kernels for it
};

// Traits of a ggml type id, or nullptr when strata does not know the id.
const TypeTraits* FindTypeTraits(uint32_t ggml_type_id);
const TypeTraits& Traits(TensorType type);
inline namespace STRATA_ISA_NAMESPACE {  // included by the ISA files (isa_namespace.h)
inline const char* TypeName(TensorType type) { return Traits(type).name; }
}  // namespace STRATA_ISA_NAMESPACE

// Bytes of one row of n elements; error if n is not a multiple of the block
// or the product overflows.
Result<uint64_t> RowBytes(TensorType type, int64_t n);

}  // namespace strata
