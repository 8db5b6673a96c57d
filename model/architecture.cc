// The architecture registry (architecture.h): the entries live in
// model/architectures/, one file each.
#include "model/architecture.h"

namespace strata {

// One accessor per architecture file.
const Architecture& SmolLM3Architecture();
const Architecture& LlamaArchitecture();
const Architecture& MistralArchitecture();
const Architecture& Ministral3Architecture();
const Architecture& MixtralArchitecture();
const Architecture& Qwen2Architecture();
const Architecture& Qwen3Architecture();
const Architecture& Qwen3MoeArchitecture();
const Architecture& Lfm2Architecture();

std::vector<const Architecture*> AllArchitectures() {
  return {&SmolLM3Architecture(), &LlamaArchitecture(), &MistralArchitecture(), &Ministral3Architecture(), &MixtralArchitecture(),
          &Qwen2Architecture(),   &Qwen3Architecture(), &Qwen3MoeArchitecture(), &Lfm2Architecture()};
}

const Architecture* FindArchitectureByGgufName(std::string_view name) {
  for (const Architecture* a : AllArchitectures())
    if (a->config_from_gguf != nullptr && a->gguf_name == name) return a;
  return nullptr;
}

const Architecture* FindArchitectureByHfType(std::string_view model_type) {
  for (const Architecture* a : AllArchitectures())
    if (!a->hf_model_type.empty() && a->hf_model_type == model_type) return a;
  return nullptr;
}

const Architecture* FindArchitecture(std::string_view name) {
  for (const Architecture* a : AllArchitectures())
    if (a->name == name) return a;
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string s;
  for (const Architecture* a : AllArchitectures()) s += (s.empty() ? "" : ", ") + std::string(a->name);
  return s;
}

std::vector<TensorSpec> TensorTableOf(const ModelConfig& cfg) {
  const Architecture* a = FindArchitecture(cfg.arch);
  STRATA_CHECK_MSG(a != nullptr, "unknown architecture '" + cfg.arch + "'");
  return a->tensor_table(cfg);
}

const char* TensorRoleName(TensorRole role) {
  switch (role) {
    case TensorRole::kTokenEmbedding: return "token_embd";
    case TensorRole::kOutputNorm: return "output_norm";
    case TensorRole::kOutput: return "output";
    case TensorRole::kRopeFreqs: return "rope_freqs";
    case TensorRole::kAttnNorm: return "attn_norm";
    case TensorRole::kAttnQ: return "attn_q";
    case TensorRole::kAttnK: return "attn_k";
    case TensorRole::kAttnV: return "attn_v";
    case TensorRole::kAttnOutput: return "attn_output";
    case TensorRole::kAttnQBias: return "attn_q.bias";
    case TensorRole::kAttnKBias: return "attn_k.bias";
    case TensorRole::kAttnVBias: return "attn_v.bias";
    case TensorRole::kAttnOutputBias: return "attn_output.bias";
    case TensorRole::kAttnQNorm: return "attn_q_norm";
    case TensorRole::kAttnKNorm: return "attn_k_norm";
    case TensorRole::kConvInProj: return "shortconv.in_proj";
    case TensorRole::kConvKernel: return "shortconv.conv";
    case TensorRole::kConvOutProj: return "shortconv.out_proj";
    case TensorRole::kFfnNorm: return "ffn_norm";
    case TensorRole::kFfnGate: return "ffn_gate";
    case TensorRole::kFfnUp: return "ffn_up";
    case TensorRole::kFfnDown: return "ffn_down";
    case TensorRole::kFfnGateBias: return "ffn_gate.bias";
    case TensorRole::kFfnUpBias: return "ffn_up.bias";
    case TensorRole::kFfnDownBias: return "ffn_down.bias";
    case TensorRole::kFfnRouter: return "ffn_gate_inp";
    case TensorRole::kFfnGateExps: return "ffn_gate_exps";
    case TensorRole::kFfnUpExps: return "ffn_up_exps";
    case TensorRole::kFfnDownExps: return "ffn_down_exps";
  }
  return "?";
}

}  // namespace strata
