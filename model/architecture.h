// One entry per supported architecture: how to read its hyper-parameters
// (GGUF metadata or HF config.json) and its tensor table. The layer recipe
// lives in the architecture's own file (smollm3.cc); llama is SmolLM3's
// recipe with RoPE in every layer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "model/gguf.h"
#include "model/model_config.h"

namespace strata {

// Which weight of the decoder a tensor is.
enum class TensorRole {
  kTokenEmbedding, kOutputNorm, kOutput,
  kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOutput,
  kFfnNorm, kFfnGate, kFfnUp, kFfnDown,
};

// One row of an architecture's tensor table.
struct TensorSpec {
  TensorRole role;
  int layer;                 // -1 for the global tensors
  std::string gguf_name;     // "blk.3.attn_q.weight" (used verbatim)
  std::string hf_name;       // "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> ne;   // ggml order: ne[0] is the row length
  bool required;
};

struct Architecture {
  std::string_view gguf_name;      // general.architecture
  std::string_view hf_model_type;  // config.json model_type
  Result<ModelConfig> (*config_from_gguf)(const GgufFile& file);
  Result<ModelConfig> (*config_from_hf)(const nlohmann::json& config, const std::string& config_path);
};

// nullptr when strata does not support the architecture.
const Architecture* FindArchitectureByGgufName(std::string_view name);
const Architecture* FindArchitectureByHfType(std::string_view model_type);
std::string SupportedArchitectures();

// The tensors a model of this config has (the decoder recipe every supported
// architecture shares).
std::vector<TensorSpec> DecoderTensorTable(const ModelConfig& cfg);

// Architecture entry points (one file each).
Result<ModelConfig> Smollm3ConfigFromGguf(const GgufFile& file);
Result<ModelConfig> Smollm3ConfigFromHf(const nlohmann::json& config, const std::string& config_path);
Result<ModelConfig> LlamaConfigFromGguf(const GgufFile& file);
Result<ModelConfig> LlamaConfigFromHf(const nlohmann::json& config, const std::string& config_path);

// Reads the hyper-parameters shared by the llama family from GGUF keys
// "<arch>.block_count", ... Used by smollm3.cc and llama.cc.
Result<ModelConfig> LlamaFamilyConfigFromGguf(const GgufFile& file, const std::string& arch);
Result<ModelConfig> LlamaFamilyConfigFromHf(const nlohmann::json& config, const std::string& config_path,
                                            const std::string& arch);

// Adds generation_config.json's eos_token_id (int or list) to `eos`.
Status AddGenerationConfigEos(const nlohmann::json& generation_config, const std::string& path,
                              std::vector<int32_t>* eos);

}  // namespace strata
