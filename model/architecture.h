// The architectures strata runs, as data: one file per architecture in
// model/architectures/ declares how to read its hyper-parameters (GGUF
// metadata or HF config.json), the GGUF metadata it writes (the inverse of its
// reader: convert, make-model and the tests use it), its tensor table (HF
// names <-> GGUF names, shapes, which are optional) and whether llama.cpp's
// converter permutes its q/k rows. The layer recipe every architecture here
// composes from the shared blocks is model/layer.h; an architecture whose
// block structure differs gets its own recipe there.
//
//   const Architecture* a = FindArchitectureByHfType("qwen3");
//   STRATA_ASSIGN_OR_RETURN(ModelConfig cfg, a->config_from_hf(json, path));
//   std::vector<TensorSpec> table = TensorTableOf(cfg);
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

class GgufWriter;

// Which weight of the decoder a tensor is.
enum class TensorRole {
  // Global.
  kTokenEmbedding, kOutputNorm, kOutput, kRopeFreqs,
  // Attention layers.
  kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOutput,
  kAttnQBias, kAttnKBias, kAttnVBias, kAttnOutputBias,
  kAttnQNorm, kAttnKNorm,
  // Short-convolution layers (LFM2).
  kConvInProj, kConvKernel, kConvOutProj,
  // Feed-forward: dense SwiGLU ...
  kFfnNorm, kFfnGate, kFfnUp, kFfnDown,
  kFfnGateBias, kFfnUpBias, kFfnDownBias,
  // ... or a mixture of SwiGLU experts (3-D tensors, one slice per expert).
  kFfnRouter, kFfnGateExps, kFfnUpExps, kFfnDownExps,
};
const char* TensorRoleName(TensorRole role);

// One row of an architecture's tensor table.
struct TensorSpec {
  TensorRole role;
  int layer;                 // -1 for the global tensors
  std::string gguf_name;     // "blk.3.attn_q.weight" (used verbatim)
  std::string hf_name;       // "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> ne;   // ggml order: ne[0] is the row length
  bool required;
  // HF checkpoints keep each expert as its own 2-D tensor; the GGUF tensor
  // stacks them along its outermost dimension. Non-empty: these names, in
  // expert order, instead of hf_name.
  std::vector<std::string> hf_parts;
};

struct Architecture {
  std::string_view name;           // ModelConfig::arch
  std::string_view hf_model_type;  // config.json model_type ("" if none)
  std::string_view gguf_name;      // general.architecture it writes
  // Reads a GGUF whose general.architecture is gguf_name; nullptr when another
  // architecture's reader handles such files (llama's reads Mixtral's).
  Result<ModelConfig> (*config_from_gguf)(const GgufFile& file);
  Result<ModelConfig> (*config_from_hf)(const nlohmann::json& config, const std::string& config_path);
  // The "<gguf_name>.*" hyper-parameters as llama.cpp's converter writes them
  // (not general.* or tokenizer.*). Refuses what such a file cannot express.
  Status (*write_gguf_metadata)(const ModelConfig& cfg, GgufWriter* w);
  std::vector<TensorSpec> (*tensor_table)(const ModelConfig& cfg);
  // llama.cpp's converter permutes attn_q / attn_k rows (and biases) so that
  // rotary pairs are adjacent: its GGUF files then use the interleaved layout.
  bool gguf_permutes_qk;
};

// nullptr when strata does not support the architecture.
const Architecture* FindArchitectureByGgufName(std::string_view name);
const Architecture* FindArchitectureByHfType(std::string_view model_type);
const Architecture* FindArchitecture(std::string_view name);  // by ModelConfig::arch
std::string SupportedArchitectures();
std::vector<const Architecture*> AllArchitectures();

// The tensors a model of this config has (cfg.arch must be known).
std::vector<TensorSpec> TensorTableOf(const ModelConfig& cfg);

// Adds generation_config.json's eos_token_id (int or list) to `eos`.
Status AddGenerationConfigEos(const nlohmann::json& generation_config, const std::string& path,
                              std::vector<int32_t>* eos);

}  // namespace strata
