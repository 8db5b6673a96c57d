// The table of ggml tensor types strata knows.
#include "kernels/tensor_type.h"

namespace strata {
namespace {

// Block geometry from the ggml format definitions (QK_K = 256).
constexpr TypeTraits kTypes[] = {
    {TensorType::kF32, "F32", 1, 4, true},
    {TensorType::kF16, "F16", 1, 2, true},
    {TensorType::kQ4_0, "Q4_0", 32, 18, true},
    {TensorType::kQ4_1, "Q4_1", 32, 20, false},
    {TensorType::kQ5_0, "Q5_0", 32, 22, true},
    {TensorType::kQ5_1, "Q5_1", 32, 24, false},
    {TensorType::kQ8_0, "Q8_0", 32, 34, true},
    {TensorType::kQ8_1, "Q8_1", 32, 36, false},
    {TensorType::kQ2_K, "Q2_K", 256, 84, false},
    {TensorType::kQ3_K, "Q3_K", 256, 110, false},
    {TensorType::kQ4_K, "Q4_K", 256, 144, true},
    {TensorType::kQ5_K, "Q5_K", 256, 176, true},
    {TensorType::kQ6_K, "Q6_K", 256, 210, true},
    {TensorType::kQ8_K, "Q8_K", 256, 292, false},
    {TensorType::kBF16, "BF16", 1, 2, true},
};

}  // namespace

const TypeTraits* FindTypeTraits(uint32_t id) {
  for (const TypeTraits& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const TypeTraits& Traits(TensorType type) {
  const TypeTraits* t = FindTypeTraits(static_cast<uint32_t>(type));
  STRATA_CHECK_MSG(t != nullptr, "unknown TensorType");
  return *t;
}

Result<uint64_t> RowBytes(TensorType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  if (n < 0 || n % t.block_elems != 0)
    return InvalidArgument("row of " + std::to_string(n) + " elements is not a multiple of the " + t.name +
                           " block (" + std::to_string(t.block_elems) + ")");
  uint64_t blocks = static_cast<uint64_t>(n / t.block_elems);
  if (blocks > UINT64_MAX / static_cast<uint64_t>(t.block_bytes))
    return InvalidArgument("row size overflows 64 bits");
  return blocks * static_cast<uint64_t>(t.block_bytes);
}

}  // namespace strata
