// The quantization mixes of quant_mix.h.
#include "model/quant_mix.h"

namespace strata {
namespace {

struct MixEntry {
  const char* name;
  uint32_t file_type;
};

// llama.cpp's LLAMA_FTYPE_* values for general.file_type.
constexpr MixEntry kMixes[] = {
    {"f32", 0}, {"f16", 1}, {"bf16", 32}, {"q8_0", 7}, {"q4_0", 2}, {"q4_k_m", 15}, {"q6_k", 18},
};

// llama.cpp's rule for the layers whose attn_v / ffn_down get more bits.
bool UseMoreBits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

TensorType Fallback(TensorType t, int64_t row_length) {
  if (row_length % Traits(t).block_elems == 0) return t;
  TensorType f = t == TensorType::kQ6_K || t == TensorType::kQ8_0 ? TensorType::kQ8_0 : TensorType::kQ5_0;
  return row_length % Traits(f).block_elems == 0 ? f : TensorType::kF16;
}

}  // namespace

Result<QuantMix> ParseQuantMix(const std::string& name) {
  for (const MixEntry& m : kMixes)
    if (name == m.name) return QuantMix{m.name, m.file_type};
  return InvalidArgument("--type '" + name + "': expected one of " + QuantMixNames());
}

const char* QuantMixNames() { return "f32|f16|bf16|q8_0|q4_0|q4_k_m|q6_k"; }

TensorType MixTensorType(const QuantMix& mix, const TensorSpec& spec, const ModelConfig& cfg) {
  const TensorRole role = spec.role;
  const int layer = spec.layer, n_layers = cfg.n_layers;
  const int64_t row_length = spec.ne.empty() ? 0 : spec.ne[0];
  if (spec.ne.size() == 1 || role == TensorRole::kFfnRouter || role == TensorRole::kConvKernel) return TensorType::kF32;
  TensorType t = TensorType::kF32;
  if (mix.name == "f16") t = TensorType::kF16;
  else if (mix.name == "bf16") t = TensorType::kBF16;
  else if (mix.name == "q8_0") t = TensorType::kQ8_0;
  else if (mix.name == "q4_0") t = TensorType::kQ4_0;
  else if (mix.name == "q6_k") t = TensorType::kQ6_K;
  else if (mix.name == "q4_k_m") {
    const bool more_bits =
        role == TensorRole::kTokenEmbedding || role == TensorRole::kOutput ||
        ((role == TensorRole::kAttnV || role == TensorRole::kFfnDown || role == TensorRole::kFfnDownExps) && UseMoreBits(layer, n_layers));
    t = more_bits ? TensorType::kQ6_K : TensorType::kQ4_K;
    if (cfg.n_experts == 8 && (role == TensorRole::kAttnK || role == TensorRole::kAttnV)) t = TensorType::kQ8_0;
  }
  return Fallback(t, row_length);
}

}  // namespace strata
