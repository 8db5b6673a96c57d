// The architecture registry, the shared decoder tensor table, and the
// llama-family hyper-parameter readers that smollm3.cc and llama.cc build on.
#include "model/architecture.h"

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

namespace strata {
namespace {

constexpr Architecture kArchitectures[] = {
    {"smollm3", "smollm3", Smollm3ConfigFromGguf, Smollm3ConfigFromHf},
    {"llama", "llama", LlamaConfigFromGguf, LlamaConfigFromHf},
};

// An int that must be present and in range.
Result<int> GgufInt(const GgufFile& f, const std::string& key) {
  STRATA_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(key));
  if (v > (1u << 30)) return DataLoss("GGUF file '" + f.path() + "': metadata '" + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}
Result<int> GgufIntOr(const GgufFile& f, const std::string& key, int fallback) {
  if (!f.Find(key)) return fallback;
  return GgufInt(f, key);
}

}  // namespace

const Architecture* FindArchitectureByGgufName(std::string_view name) {
  for (const Architecture& a : kArchitectures)
    if (a.gguf_name == name) return &a;
  return nullptr;
}

const Architecture* FindArchitectureByHfType(std::string_view model_type) {
  for (const Architecture& a : kArchitectures)
    if (a.hf_model_type == model_type) return &a;
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string s;
  for (const Architecture& a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.gguf_name);
  return s;
}

std::vector<TensorSpec> DecoderTensorTable(const ModelConfig& c) {
  const int64_t h = c.hidden, q = c.q_dim(), kv = c.kv_dim(), f = c.ffn, v = c.vocab;
  std::vector<TensorSpec> t = {
      {TensorRole::kTokenEmbedding, -1, "token_embd.weight", "model.embed_tokens.weight", {h, v}, true},
      {TensorRole::kOutputNorm, -1, "output_norm.weight", "model.norm.weight", {h}, true},
      {TensorRole::kOutput, -1, "output.weight", "lm_head.weight", {h, v}, !c.tied_embeddings},
  };
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".", m = "model.layers." + std::to_string(i) + ".";
    t.push_back({TensorRole::kAttnNorm, i, b + "attn_norm.weight", m + "input_layernorm.weight", {h}, true});
    t.push_back({TensorRole::kAttnQ, i, b + "attn_q.weight", m + "self_attn.q_proj.weight", {h, q}, true});
    t.push_back({TensorRole::kAttnK, i, b + "attn_k.weight", m + "self_attn.k_proj.weight", {h, kv}, true});
    t.push_back({TensorRole::kAttnV, i, b + "attn_v.weight", m + "self_attn.v_proj.weight", {h, kv}, true});
    t.push_back({TensorRole::kAttnOutput, i, b + "attn_output.weight", m + "self_attn.o_proj.weight", {q, h}, true});
    t.push_back({TensorRole::kFfnNorm, i, b + "ffn_norm.weight", m + "post_attention_layernorm.weight", {h}, true});
    t.push_back({TensorRole::kFfnGate, i, b + "ffn_gate.weight", m + "mlp.gate_proj.weight", {h, f}, true});
    t.push_back({TensorRole::kFfnUp, i, b + "ffn_up.weight", m + "mlp.up_proj.weight", {h, f}, true});
    t.push_back({TensorRole::kFfnDown, i, b + "ffn_down.weight", m + "mlp.down_proj.weight", {f, h}, true});
  }
  return t;
}

Result<ModelConfig> LlamaFamilyConfigFromGguf(const GgufFile& f, const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  const std::string p = arch + ".";
  STRATA_ASSIGN_OR_RETURN(c.n_layers, GgufInt(f, p + "block_count"));
  STRATA_ASSIGN_OR_RETURN(c.hidden, GgufInt(f, p + "embedding_length"));
  STRATA_ASSIGN_OR_RETURN(c.ffn, GgufInt(f, p + "feed_forward_length"));
  STRATA_ASSIGN_OR_RETURN(c.n_heads, GgufInt(f, p + "attention.head_count"));
  STRATA_ASSIGN_OR_RETURN(c.n_kv_heads, GgufIntOr(f, p + "attention.head_count_kv", c.n_heads));
  STRATA_ASSIGN_OR_RETURN(c.head_dim, GgufIntOr(f, p + "attention.key_length", c.n_heads > 0 ? c.hidden / c.n_heads : 0));
  STRATA_ASSIGN_OR_RETURN(int value_length, GgufIntOr(f, p + "attention.value_length", c.head_dim));
  if (value_length != c.head_dim)
    return Unimplemented("GGUF file '" + f.path() + "': value_length " + std::to_string(value_length) + " differs from key_length " + std::to_string(c.head_dim));
  STRATA_ASSIGN_OR_RETURN(c.n_ctx_train, GgufIntOr(f, p + "context_length", 4096));
  STRATA_ASSIGN_OR_RETURN(double eps, f.GetFloat(p + "attention.layer_norm_rms_epsilon"));
  c.rms_eps = static_cast<float>(eps);
  c.rope_theta = 10000.0f;
  if (f.Find(p + "rope.freq_base")) {
    STRATA_ASSIGN_OR_RETURN(double theta, f.GetFloat(p + "rope.freq_base"));
    c.rope_theta = static_cast<float>(theta);
  }
  if (f.Find(p + "rope.dimension_count")) {
    STRATA_ASSIGN_OR_RETURN(int rope_dims, GgufInt(f, p + "rope.dimension_count"));
    if (rope_dims != c.head_dim)
      return Unimplemented("GGUF file '" + f.path() + "': partial rotary (rope.dimension_count " + std::to_string(rope_dims) +
                           " < head_dim " + std::to_string(c.head_dim) + ") is not supported");
  }
  if (f.Find(p + "rope.scaling.type")) {
    STRATA_ASSIGN_OR_RETURN(std::string scaling, f.GetString(p + "rope.scaling.type"));
    if (scaling != "none") return Unimplemented("GGUF file '" + f.path() + "': rope scaling '" + scaling + "' is not supported");
  }
  // The vocabulary size is the embedding's row count (checked against the
  // tensor table); the key is optional in llama.cpp's files.
  if (const GgufTensor* emb = f.FindTensor("token_embd.weight")) {
    if (emb->n_dims != 2) return DataLoss("GGUF file '" + f.path() + "': tensor 'token_embd.weight' is not 2-D");
    c.vocab = static_cast<int>(std::min<int64_t>(emb->ne[1], INT32_MAX));
  } else {
    return DataLoss("GGUF file '" + f.path() + "': required tensor 'token_embd.weight' is missing");
  }
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  // llama.cpp's converter permutes attn_q / attn_k rows of the llama family
  // so that rotary pairs are adjacent.
  c.rope_layout = RopeLayout::kInterleaved;
  c.rope_layers.assign(c.n_layers > 0 && c.n_layers <= 4096 ? c.n_layers : 0, true);
  if (f.Find("tokenizer.ggml.bos_token_id")) {
    STRATA_ASSIGN_OR_RETURN(uint64_t bos, f.GetUint("tokenizer.ggml.bos_token_id"));
    c.bos_id = static_cast<int32_t>(std::min<uint64_t>(bos, INT32_MAX));
  }
  // End-of-generation ids: eos, eot and eom when the file names them.
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!f.Find(key)) continue;
    STRATA_ASSIGN_OR_RETURN(uint64_t id, f.GetUint(key));
    int32_t id32 = static_cast<int32_t>(std::min<uint64_t>(id, INT32_MAX));
    if (std::find(c.eos_ids.begin(), c.eos_ids.end(), id32) == c.eos_ids.end()) c.eos_ids.push_back(id32);
  }
  return c;
}

namespace {

Status HfError(const std::string& path, const std::string& what) {
  return DataLoss("config '" + path + "': " + what);
}

Result<int> HfInt(const nlohmann::json& j, const std::string& path, const char* key, std::optional<int> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return HfError(path, std::string("missing field '") + key + "'");
  }
  if (!it->is_number_integer()) return HfError(path, std::string("field '") + key + "' is not an integer");
  int64_t v = it->get<int64_t>();
  if (v < 0 || v > (1 << 30)) return HfError(path, std::string("field '") + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

Result<double> HfFloat(const nlohmann::json& j, const std::string& path, const char* key, std::optional<double> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return HfError(path, std::string("missing field '") + key + "'");
  }
  if (!it->is_number()) return HfError(path, std::string("field '") + key + "' is not a number");
  return it->get<double>();
}

// eos_token_id may be an int or a list of ints.
Status AddEosIds(const nlohmann::json& j, const std::string& path, std::vector<int32_t>* out) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return Status::Ok();
  std::vector<nlohmann::json> items = it->is_array() ? it->get<std::vector<nlohmann::json>>() : std::vector<nlohmann::json>{*it};
  for (const auto& v : items) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      return HfError(path, "field 'eos_token_id' must be a non-negative integer or a list of them");
    int32_t id = static_cast<int32_t>(v.get<int64_t>());
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
  }
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> LlamaFamilyConfigFromHf(const nlohmann::json& j, const std::string& path, const std::string& arch) {
  if (!j.is_object()) return HfError(path, "not a JSON object");
  ModelConfig c;
  c.arch = arch;
  STRATA_ASSIGN_OR_RETURN(c.n_layers, HfInt(j, path, "num_hidden_layers", std::nullopt));
  STRATA_ASSIGN_OR_RETURN(c.hidden, HfInt(j, path, "hidden_size", std::nullopt));
  STRATA_ASSIGN_OR_RETURN(c.ffn, HfInt(j, path, "intermediate_size", std::nullopt));
  STRATA_ASSIGN_OR_RETURN(c.n_heads, HfInt(j, path, "num_attention_heads", std::nullopt));
  STRATA_ASSIGN_OR_RETURN(c.n_kv_heads, HfInt(j, path, "num_key_value_heads", c.n_heads));
  STRATA_ASSIGN_OR_RETURN(c.head_dim, HfInt(j, path, "head_dim", c.n_heads > 0 ? c.hidden / c.n_heads : 0));
  STRATA_ASSIGN_OR_RETURN(c.vocab, HfInt(j, path, "vocab_size", std::nullopt));
  STRATA_ASSIGN_OR_RETURN(c.n_ctx_train, HfInt(j, path, "max_position_embeddings", 4096));
  STRATA_ASSIGN_OR_RETURN(double eps, HfFloat(j, path, "rms_norm_eps", 1e-6));
  c.rms_eps = static_cast<float>(eps);
  // rope_theta: top level (older transformers) or inside rope_parameters
  // (newer), which may itself be keyed by layer type.
  double theta = 10000.0;
  const nlohmann::json* rope = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    rope = &*it;
    if (!rope->contains("rope_theta") && rope->contains("full_attention") && (*rope)["full_attention"].is_object())
      rope = &(*rope)["full_attention"];
    STRATA_ASSIGN_OR_RETURN(theta, HfFloat(*rope, path, "rope_theta", theta));
  }
  if (j.contains("rope_theta")) {
    STRATA_ASSIGN_OR_RETURN(theta, HfFloat(j, path, "rope_theta", theta));
  }
  c.rope_theta = static_cast<float>(theta);
  for (const nlohmann::json* scaling : {rope, j.contains("rope_scaling") ? &j["rope_scaling"] : nullptr}) {
    if (scaling == nullptr || !scaling->is_object()) continue;
    // rope_type (newer) or type (older); anything but "default" changes the
    // positions' frequencies, which strata does not implement.
    std::string type = "default";
    for (const char* key : {"type", "rope_type"}) {
      auto t = scaling->find(key);
      if (t == scaling->end() || t->is_null()) continue;
      if (!t->is_string()) return HfError(path, std::string("rope scaling field '") + key + "' is not a string");
      type = t->get<std::string>();
    }
    if (type != "default") return Unimplemented("config '" + path + "': rope scaling '" + type + "' is not supported");
  }
  if (j.contains("attention_bias") && j["attention_bias"].is_boolean() && j["attention_bias"].get<bool>())
    return Unimplemented("config '" + path + "': attention_bias = true is not supported");
  if (j.contains("mlp_bias") && j["mlp_bias"].is_boolean() && j["mlp_bias"].get<bool>())
    return Unimplemented("config '" + path + "': mlp_bias = true is not supported");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    return Unimplemented("config '" + path + "': hidden_act " + j["hidden_act"].dump() + " is not supported (silu only)");
  c.tied_embeddings = false;
  if (auto it = j.find("tie_word_embeddings"); it != j.end()) {
    if (!it->is_boolean()) return HfError(path, "field 'tie_word_embeddings' is not a boolean");
    c.tied_embeddings = it->get<bool>();
  }
  c.rope_layout = RopeLayout::kNeox;
  c.rope_layers.assign(c.n_layers, true);
  if (auto it = j.find("bos_token_id"); it != j.end() && !it->is_null()) {
    // Checked against the vocabulary by Validate; a huge value must not wrap
    // into a valid-looking id.
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX)
      return HfError(path, "field 'bos_token_id' must be a non-negative integer");
    c.bos_id = static_cast<int32_t>(it->get<int64_t>());
  }
  STRATA_RETURN_IF_ERROR(AddEosIds(j, path, &c.eos_ids));
  return c;
}

// generation_config.json's eos ids are added by the loader (model_files.cc)
// through this helper.
Status AddGenerationConfigEos(const nlohmann::json& j, const std::string& path, std::vector<int32_t>* eos) {
  if (!j.is_object()) return DataLoss("generation config '" + path + "': not a JSON object");
  return AddEosIds(j, path, eos);
}

}  // namespace strata
