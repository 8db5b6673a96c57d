// Shared readers, writers and tensor-table rows of hparams.h.
#include "model/hparams.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace strata {

// ---------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------

Status GgufHparams::Error(const std::string& key, const std::string& what) const {
  return DataLoss("GGUF file '" + f_.path() + "': metadata '" + p_ + key + "' " + what);
}

Result<int> GgufHparams::Int(const std::string& key) const {
  STRATA_ASSIGN_OR_RETURN(uint64_t v, f_.GetUint(p_ + key));
  if (v > (1u << 30)) return Error(key, "= " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

Result<int> GgufHparams::IntOr(const std::string& key, int fallback) const {
  if (!Has(key)) return fallback;
  return Int(key);
}

Result<float> GgufHparams::Float(const std::string& key) const {
  STRATA_ASSIGN_OR_RETURN(double v, f_.GetFloat(p_ + key));
  if (!std::isfinite(static_cast<float>(v))) {
    char shown[32];
    std::snprintf(shown, sizeof shown, "%g", v);
    return Error(key, std::string("= ") + shown + " is not a finite float32");
  }
  return static_cast<float>(v);
}

Result<float> GgufHparams::FloatOr(const std::string& key, float fallback) const {
  if (!Has(key)) return fallback;
  return Float(key);
}

Result<bool> GgufHparams::BoolOr(const std::string& key, bool fallback) const {
  if (!Has(key)) return fallback;
  return f_.GetBool(p_ + key);
}

Result<std::vector<int>> GgufHparams::PerLayerInt(const std::string& key, int n_layers) const {
  const GgufValue* v = f_.Find(p_ + key);
  if (v == nullptr) return NotFound("GGUF file '" + f_.path() + "': no metadata '" + p_ + key + "'");
  if (v->type != GgufValueType::kArray) {
    STRATA_ASSIGN_OR_RETURN(int one, Int(key));
    return std::vector<int>(static_cast<size_t>(n_layers), one);
  }
  STRATA_ASSIGN_OR_RETURN(std::vector<int64_t> items, f_.GetIntArray(p_ + key));
  if (static_cast<int64_t>(items.size()) != n_layers)
    return Error(key, "has " + std::to_string(items.size()) + " entries for " + std::to_string(n_layers) + " layers");
  std::vector<int> out;
  for (int64_t x : items) {
    if (x < 0 || x > (1 << 30)) return Error(key, "has an entry " + std::to_string(x) + " out of range");
    out.push_back(static_cast<int>(x));
  }
  return out;
}

// ---------------------------------------------------------------------------
// HF
// ---------------------------------------------------------------------------

Status HfHparams::Error(const std::string& what) const { return DataLoss("config '" + path_ + "': " + what); }
Status HfHparams::Unsupported(const std::string& what) const { return Unimplemented("config '" + path_ + "': " + what); }

bool HfHparams::Has(const char* key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

Result<int> HfHparams::Int(const char* key, std::optional<int> fallback) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) {
    if (fallback) return *fallback;
    return Error(std::string("missing field '") + key + "'");
  }
  if (!it->is_number_integer()) return Error(std::string("field '") + key + "' is not an integer");
  // get<int64_t>: 2^32 + 1 must not pass as 1; unsigned values past INT64_MAX read negative.
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > (1u << 30) ? -1 : it->get<int64_t>();
  if (v < 0 || v > (1 << 30)) return Error(std::string("field '") + key + "' = " + it->dump() + " is out of range");
  return static_cast<int>(v);
}

Result<double> HfHparams::Float(const char* key, std::optional<double> fallback) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) {
    if (fallback) return *fallback;
    return Error(std::string("missing field '") + key + "'");
  }
  if (!it->is_number()) return Error(std::string("field '") + key + "' is not a number");
  return it->get<double>();
}

Result<bool> HfHparams::Bool(const char* key, bool fallback) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Error(std::string("field '") + key + "' is not a boolean");
  return it->get<bool>();
}

Result<std::string> HfHparams::String(const char* key, std::optional<std::string> fallback) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) {
    if (fallback) return *fallback;
    return Error(std::string("missing field '") + key + "'");
  }
  if (!it->is_string()) return Error(std::string("field '") + key + "' is not a string");
  return it->get<std::string>();
}

namespace {

// eos_token_id may be an int or a list of ints.
Status AddEosIds(const nlohmann::json& j, const std::string& what, std::vector<int32_t>* out) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return Status::Ok();
  std::vector<nlohmann::json> items = it->is_array() ? it->get<std::vector<nlohmann::json>>() : std::vector<nlohmann::json>{*it};
  for (const auto& v : items) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT32_MAX) || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > INT32_MAX)
      return DataLoss(what + ": field 'eos_token_id' must be a non-negative integer or a list of them");
    int32_t id = static_cast<int32_t>(v.get<int64_t>());
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
  }
  return Status::Ok();
}

void AllLayers(ModelConfig* c) {
  const size_t n = c->n_layers > 0 && c->n_layers <= 4096 ? static_cast<size_t>(c->n_layers) : 0;
  c->rope_layers.assign(n, true);
  c->layer_kinds.assign(n, LayerKind::kAttention);
  c->layer_window.assign(n, 0);
}

}  // namespace

Status AddGenerationConfigEos(const nlohmann::json& j, const std::string& path, std::vector<int32_t>* eos) {
  if (!j.is_object()) return DataLoss("generation config '" + path + "': not a JSON object");
  return AddEosIds(j, "generation config '" + path + "'", eos);
}

// ---------------------------------------------------------------------------
// The llama-like decoder
// ---------------------------------------------------------------------------

Result<ModelConfig> ReadDecoderGguf(const GgufHparams& g, const std::string& arch) {
  const GgufFile& f = g.file();
  ModelConfig c;
  c.arch = arch;
  STRATA_ASSIGN_OR_RETURN(c.n_layers, g.Int("block_count"));
  if (c.n_layers <= 0 || c.n_layers > 4096) return g.Error("block_count", "= " + std::to_string(c.n_layers) + " is out of range");
  AllLayers(&c);
  STRATA_ASSIGN_OR_RETURN(c.hidden, g.Int("embedding_length"));
  STRATA_ASSIGN_OR_RETURN(c.ffn, g.Int("feed_forward_length"));
  STRATA_ASSIGN_OR_RETURN(c.n_heads, g.Int("attention.head_count"));
  // One value, or one per layer (LFM2: 0 for its convolution layers).
  if (g.Has("attention.head_count_kv")) {
    STRATA_ASSIGN_OR_RETURN(std::vector<int> kv, g.PerLayerInt("attention.head_count_kv", c.n_layers));
    for (int n : kv) {
      if (n == 0) continue;
      if (c.n_kv_heads != 0 && n != c.n_kv_heads)
        return Unimplemented("GGUF file '" + f.path() + "': layers with different kv head counts (" + std::to_string(c.n_kv_heads) +
                             " and " + std::to_string(n) + ") are not supported");
      c.n_kv_heads = n;
    }
  } else {
    c.n_kv_heads = c.n_heads;
  }
  STRATA_ASSIGN_OR_RETURN(c.head_dim, g.IntOr("attention.key_length", c.n_heads > 0 ? c.hidden / c.n_heads : 0));
  STRATA_ASSIGN_OR_RETURN(int value_length, g.IntOr("attention.value_length", c.head_dim));
  if (value_length != c.head_dim)
    return Unimplemented("GGUF file '" + f.path() + "': value_length " + std::to_string(value_length) + " differs from key_length " +
                         std::to_string(c.head_dim));
  STRATA_ASSIGN_OR_RETURN(c.n_ctx_train, g.IntOr("context_length", 4096));
  STRATA_ASSIGN_OR_RETURN(c.rms_eps, g.Float("attention.layer_norm_rms_epsilon"));
  STRATA_RETURN_IF_ERROR(ReadGgufRope(g, &c));
  if (g.Has("attention.sliding_window")) {
    STRATA_ASSIGN_OR_RETURN(int window, g.Int("attention.sliding_window"));
    if (window <= 0) return g.Error("attention.sliding_window", "= " + std::to_string(window) + " must be positive");
    c.layer_window.assign(c.layer_window.size(), window);
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

Result<ModelConfig> ReadDecoderHf(const HfHparams& h, const std::string& arch, const char* eps_key) {
  if (!h.json().is_object()) return h.Error("not a JSON object");
  ModelConfig c;
  c.arch = arch;
  STRATA_ASSIGN_OR_RETURN(c.n_layers, h.Int("num_hidden_layers"));
  if (c.n_layers <= 0 || c.n_layers > 4096) return h.Error("num_hidden_layers = " + std::to_string(c.n_layers) + " is out of range");
  AllLayers(&c);
  STRATA_ASSIGN_OR_RETURN(c.hidden, h.Int("hidden_size"));
  STRATA_ASSIGN_OR_RETURN(c.ffn, h.Int("intermediate_size"));
  STRATA_ASSIGN_OR_RETURN(c.n_heads, h.Int("num_attention_heads"));
  STRATA_ASSIGN_OR_RETURN(c.n_kv_heads, h.Int("num_key_value_heads", c.n_heads));
  STRATA_ASSIGN_OR_RETURN(c.head_dim, h.Int("head_dim", c.n_heads > 0 ? c.hidden / c.n_heads : 0));
  STRATA_ASSIGN_OR_RETURN(c.vocab, h.Int("vocab_size"));
  STRATA_ASSIGN_OR_RETURN(c.n_ctx_train, h.Int("max_position_embeddings", 4096));
  STRATA_ASSIGN_OR_RETURN(double eps, h.Float(eps_key, 1e-6));
  c.rms_eps = static_cast<float>(eps);
  STRATA_RETURN_IF_ERROR(ReadHfRope(h, &c));
  if (h.Has("hidden_act")) {
    STRATA_ASSIGN_OR_RETURN(std::string act, h.String("hidden_act"));
    if (act != "silu") return h.Unsupported("hidden_act '" + act + "' is not supported (silu only)");
  }
  STRATA_ASSIGN_OR_RETURN(c.tied_embeddings, h.Bool("tie_word_embeddings", false));
  if (auto it = h.json().find("bos_token_id"); it != h.json().end() && !it->is_null()) {
    // Checked against the vocabulary by Validate; a huge value must not wrap
    // into a valid-looking id.
    if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > INT32_MAX) || it->get<int64_t>() < 0 ||
        it->get<int64_t>() > INT32_MAX)
      return h.Error("field 'bos_token_id' must be a non-negative integer");
    c.bos_id = static_cast<int32_t>(it->get<int64_t>());
  }
  STRATA_RETURN_IF_ERROR(AddEosIds(h.json(), "config '" + h.path() + "'", &c.eos_ids));
  return c;
}

void WriteDecoderGguf(const ModelConfig& c, const std::string& a, GgufWriter* w) {
  w->SetU32(a + ".block_count", c.n_layers);
  w->SetU32(a + ".context_length", c.n_ctx_train);
  w->SetU32(a + ".embedding_length", c.hidden);
  w->SetU32(a + ".feed_forward_length", c.ffn);
  w->SetU32(a + ".attention.head_count", c.n_heads);
  w->SetU32(a + ".attention.head_count_kv", c.n_kv_heads);
  w->SetF32(a + ".rope.freq_base", c.rope.theta);
  w->SetF32(a + ".attention.layer_norm_rms_epsilon", c.rms_eps);
  w->SetU32(a + ".attention.key_length", c.head_dim);
  w->SetU32(a + ".attention.value_length", c.head_dim);
  w->SetU32(a + ".vocab_size", c.vocab);
  w->SetU32(a + ".rope.dimension_count", c.head_dim);
  if (c.rope.scaling == RopeScaling::kYarn) {
    w->SetString(a + ".rope.scaling.type", "yarn");
    w->SetF32(a + ".rope.scaling.factor", c.rope.factor);
    w->SetU32(a + ".rope.scaling.original_context_length", c.rope.original_ctx);
    w->SetF32(a + ".rope.scaling.yarn_beta_fast", c.rope.beta_fast);
    w->SetF32(a + ".rope.scaling.yarn_beta_slow", c.rope.beta_slow);
  }
}

// ---------------------------------------------------------------------------
// Rotary scaling
// ---------------------------------------------------------------------------

float YarnAttentionFactor(float factor, std::optional<double> mscale, std::optional<double> mscale_all_dim) {
  // transformers' get_mscale: 0.1 * m * ln(s) + 1 for s > 1.
  auto get_mscale = [](double s, double m) { return s <= 1.0 ? 1.0 : 0.1 * m * std::log(s) + 1.0; };
  if (mscale && mscale_all_dim && *mscale != 0.0 && *mscale_all_dim != 0.0)
    return static_cast<float>(get_mscale(factor, *mscale) / get_mscale(factor, *mscale_all_dim));
  return static_cast<float>(get_mscale(factor, 1.0));
}

Status ReadHfRope(const HfHparams& h, ModelConfig* c) {
  const nlohmann::json& j = h.json();
  // rope_theta: top level (older transformers) or inside rope_parameters
  // (newer), which may itself be keyed by layer type.
  const nlohmann::json* params = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    params = &*it;
    if (!params->contains("rope_theta") && params->contains("full_attention") && (*params)["full_attention"].is_object())
      params = &(*params)["full_attention"];
  }
  double theta = 10000.0;
  if (params) {
    STRATA_ASSIGN_OR_RETURN(theta, HfHparams(*params, h.path()).Float("rope_theta", theta));
  }
  if (h.Has("rope_theta")) {
    STRATA_ASSIGN_OR_RETURN(theta, h.Float("rope_theta"));
  }
  c->rope.theta = static_cast<float>(theta);
  c->rope.layout = RopeLayout::kNeox;
  const nlohmann::json* scaling = params;
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) scaling = &*it;
  if (scaling == nullptr) return Status::Ok();
  const HfHparams s(*scaling, h.path());
  std::string type = "default";
  for (const char* key : {"type", "rope_type"}) {
    if (!s.Has(key)) continue;
    auto t = s.String(key);
    if (!t.ok()) return h.Error(std::string("rope scaling field '") + key + "' is not a string");
    type = *t;
  }
  STRATA_ASSIGN_OR_RETURN(double partial, s.Float("partial_rotary_factor", 1.0));
  if (partial != 1.0) return h.Unsupported("partial_rotary_factor " + std::to_string(partial) + " is not supported");
  auto positive = [&](const char* key, std::optional<double> fallback) -> Result<float> {
    STRATA_ASSIGN_OR_RETURN(double v, s.Float(key, fallback));
    if (!(v > 0.0) || !std::isfinite(v) || v > 1e9)
      return h.Error(std::string("rope scaling '") + key + "' = " + std::to_string(v) + " must be positive and finite");
    return static_cast<float>(v);
  };
  if (type == "llama3") {
    c->rope.scaling = RopeScaling::kLlama3;
    STRATA_ASSIGN_OR_RETURN(c->rope.factor, positive("factor", std::nullopt));
    STRATA_ASSIGN_OR_RETURN(c->rope.low_freq_factor, positive("low_freq_factor", std::nullopt));
    STRATA_ASSIGN_OR_RETURN(c->rope.high_freq_factor, positive("high_freq_factor", std::nullopt));
    STRATA_ASSIGN_OR_RETURN(c->rope.original_ctx, s.Int("original_max_position_embeddings"));
  } else if (type == "yarn") {
    c->rope.scaling = RopeScaling::kYarn;
    STRATA_ASSIGN_OR_RETURN(c->rope.factor, positive("factor", std::nullopt));
    STRATA_ASSIGN_OR_RETURN(c->rope.original_ctx,
                            s.Int("original_max_position_embeddings",
                                  static_cast<int>(static_cast<double>(c->n_ctx_train) / c->rope.factor)));
    // beta_fast / beta_slow: 32 / 1 unless set (the paper's values).
    STRATA_ASSIGN_OR_RETURN(c->rope.beta_fast, positive("beta_fast", 32.0));
    STRATA_ASSIGN_OR_RETURN(c->rope.beta_slow, positive("beta_slow", 1.0));
    STRATA_ASSIGN_OR_RETURN(bool truncate, s.Bool("truncate", true));
    if (!truncate) return h.Unsupported("yarn rope scaling with truncate = false is not supported");
    if (s.Has("attention_factor")) {
      STRATA_ASSIGN_OR_RETURN(c->rope.attention_factor, positive("attention_factor", std::nullopt));
    } else {
      std::optional<double> mscale, mscale_all_dim;
      if (s.Has("mscale")) { STRATA_ASSIGN_OR_RETURN(mscale, s.Float("mscale")); }
      if (s.Has("mscale_all_dim")) { STRATA_ASSIGN_OR_RETURN(mscale_all_dim, s.Float("mscale_all_dim")); }
      c->rope.attention_factor = YarnAttentionFactor(c->rope.factor, mscale, mscale_all_dim);
    }
  } else if (type != "default") {
    return h.Unsupported("rope scaling '" + type + "' is not supported (strata implements llama3 and yarn)");
  }
  if (s.Has("llama_4_scaling_beta")) {
    STRATA_ASSIGN_OR_RETURN(double beta, s.Float("llama_4_scaling_beta"));
    if (!std::isfinite(beta)) return h.Error("rope parameter 'llama_4_scaling_beta' is not finite");
    c->attn_temperature_beta = static_cast<float>(beta);
    STRATA_ASSIGN_OR_RETURN(c->attn_temperature_length, s.Int("original_max_position_embeddings"));
  }
  return Status::Ok();
}

Status ReadGgufRope(const GgufHparams& g, ModelConfig* c) {
  const GgufFile& f = g.file();
  STRATA_ASSIGN_OR_RETURN(c->rope.theta, g.FloatOr("rope.freq_base", 10000.0f));
  if (g.Has("rope.dimension_count")) {
    STRATA_ASSIGN_OR_RETURN(int rope_dims, g.Int("rope.dimension_count"));
    if (rope_dims != c->head_dim)
      return Unimplemented("GGUF file '" + f.path() + "': partial rotary (rope.dimension_count " + std::to_string(rope_dims) +
                           " < head_dim " + std::to_string(c->head_dim) + ") is not supported");
  }
  std::string type = "none";
  if (g.Has("rope.scaling.type")) {
    STRATA_ASSIGN_OR_RETURN(type, f.GetString(g.prefix() + "rope.scaling.type"));
  }
  if (type == "yarn") {
    c->rope.scaling = RopeScaling::kYarn;
    STRATA_ASSIGN_OR_RETURN(c->rope.factor, g.Float("rope.scaling.factor"));
    STRATA_ASSIGN_OR_RETURN(c->rope.original_ctx, g.Int("rope.scaling.original_context_length"));
    STRATA_ASSIGN_OR_RETURN(c->rope.beta_fast, g.FloatOr("rope.scaling.yarn_beta_fast", 32.0f));
    STRATA_ASSIGN_OR_RETURN(c->rope.beta_slow, g.FloatOr("rope.scaling.yarn_beta_slow", 1.0f));
    // llama.cpp's converter stores Mistral's mscale_all_dim (= mscale) as
    // yarn_log_multiplier; without it the attention factor is YaRN's default.
    std::optional<double> mscale;
    if (g.Has("rope.scaling.yarn_log_multiplier")) {
      STRATA_ASSIGN_OR_RETURN(float m, g.Float("rope.scaling.yarn_log_multiplier"));
      mscale = m;
    }
    c->rope.attention_factor = YarnAttentionFactor(c->rope.factor, mscale, mscale);
  } else if (type != "none") {
    return Unimplemented("GGUF file '" + f.path() + "': rope scaling '" + type + "' is not supported (strata implements yarn)");
  }
  if (g.Has("attention.temperature_scale")) {
    STRATA_ASSIGN_OR_RETURN(c->attn_temperature_beta, g.Float("attention.temperature_scale"));
    STRATA_ASSIGN_OR_RETURN(c->attn_temperature_length,
                            g.IntOr("attention.temperature_length", c->rope.original_ctx > 0 ? c->rope.original_ctx : 0));
  }
  // Llama 3.1+ scaling as llama.cpp's converter stores it: a divisor per frequency.
  if (const GgufTensor* t = f.FindTensor("rope_freqs.weight")) {
    if (t->type != TensorType::kF32 || t->n_dims != 1 || t->ne[0] != c->head_dim / 2)
      return DataLoss("GGUF file '" + f.path() + "': tensor 'rope_freqs.weight' must be F32 [" + std::to_string(c->head_dim / 2) + "]");
    c->rope.freq_factors.resize(static_cast<size_t>(t->ne[0]));
    std::memcpy(c->rope.freq_factors.data(), t->data, t->nbytes);
  }
  return Status::Ok();
}

Status ReadHfLayerTypes(const HfHparams& h, bool allow_conv, bool window_applies, ModelConfig* c) {
  int window = 0;
  if (h.Has("sliding_window")) {
    STRATA_ASSIGN_OR_RETURN(window, h.Int("sliding_window"));
    if (window <= 0) return h.Error("sliding_window = " + std::to_string(window) + " must be positive");
  }
  auto it = h.json().find("layer_types");
  if (it == h.json().end() || it->is_null()) {
    if (window_applies) c->layer_window.assign(c->layer_window.size(), window);
    return Status::Ok();
  }
  if (!it->is_array() || static_cast<int>(it->size()) != c->n_layers)
    return h.Error("'layer_types' must be a list of " + std::to_string(c->n_layers) + " entries (num_hidden_layers)");
  for (int i = 0; i < c->n_layers; ++i) {
    const nlohmann::json& t = (*it)[static_cast<size_t>(i)];
    const std::string name = t.is_string() ? t.get<std::string>() : t.dump();
    if (name == "full_attention") {
      c->layer_kinds[i] = LayerKind::kAttention;
    } else if (name == "sliding_attention") {
      if (window <= 0) return h.Error("layer_types[" + std::to_string(i) + "] is 'sliding_attention' but 'sliding_window' is not set");
      c->layer_kinds[i] = LayerKind::kAttention;
      c->layer_window[i] = window;
    } else if (name == "conv" && allow_conv) {
      c->layer_kinds[i] = LayerKind::kShortConv;
    } else {
      return h.Unsupported("layer_types[" + std::to_string(i) + "] = " + (name.size() > 64 ? name.substr(0, 64) + "..." : name) +
                           " is not a layer type strata knows (" + (allow_conv ? "full_attention, sliding_attention, conv" :
                                                                                  "full_attention, sliding_attention") + ")");
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Tensor tables
// ---------------------------------------------------------------------------

void AddGlobalTensors(const ModelConfig& c, const HfBlockNames& n, std::vector<TensorSpec>* t) {
  const int64_t h = c.hidden, v = c.vocab;
  t->push_back({TensorRole::kTokenEmbedding, -1, "token_embd.weight", "model.embed_tokens.weight", {h, v}, true, {}});
  t->push_back({TensorRole::kOutputNorm, -1, std::string(n.output_norm_gguf) + ".weight", std::string(n.output_norm) + ".weight",
                {h}, true, {}});
  t->push_back({TensorRole::kOutput, -1, "output.weight", "lm_head.weight", {h, v}, !c.tied_embeddings, {}});
  if (!c.rope.freq_factors.empty())
    t->push_back({TensorRole::kRopeFreqs, -1, "rope_freqs.weight", "", {c.head_dim / 2}, true, {}});
}

void AddLayerTensors(const ModelConfig& c, int i, const HfBlockNames& n, std::vector<TensorSpec>* t) {
  const int64_t h = c.hidden, q = c.q_dim(), kv = c.kv_dim(), f = c.ffn, hd = c.head_dim;
  const std::string b = "blk." + std::to_string(i) + ".", m = "model.layers." + std::to_string(i) + ".";
  auto add = [&](TensorRole role, const std::string& gguf, const std::string& hf, std::vector<int64_t> ne) {
    t->push_back({role, i, b + gguf, m + hf, std::move(ne), true, {}});
  };
  auto w = [](const char* s) { return std::string(s) + ".weight"; };
  auto bias = [](const char* s) { return std::string(s) + ".bias"; };
  add(TensorRole::kAttnNorm, "attn_norm.weight", w(n.attn_norm), {h});
  if (c.layer_kinds[static_cast<size_t>(i)] == LayerKind::kAttention) {
    add(TensorRole::kAttnQ, "attn_q.weight", w(n.q), {h, q});
    add(TensorRole::kAttnK, "attn_k.weight", w(n.k), {h, kv});
    add(TensorRole::kAttnV, "attn_v.weight", w(n.v), {h, kv});
    add(TensorRole::kAttnOutput, "attn_output.weight", w(n.o), {q, h});
    if (c.qkv_bias) {
      add(TensorRole::kAttnQBias, "attn_q.bias", bias(n.q), {q});
      add(TensorRole::kAttnKBias, "attn_k.bias", bias(n.k), {kv});
      add(TensorRole::kAttnVBias, "attn_v.bias", bias(n.v), {kv});
    }
    if (c.out_bias) add(TensorRole::kAttnOutputBias, "attn_output.bias", bias(n.o), {h});
    if (c.qk_norm) {
      add(TensorRole::kAttnQNorm, "attn_q_norm.weight", w(n.q_norm), {hd});
      add(TensorRole::kAttnKNorm, "attn_k_norm.weight", w(n.k_norm), {hd});
    }
  } else {
    add(TensorRole::kConvInProj, "shortconv.in_proj.weight", w(n.conv_in), {h, 3 * h});
    // HF keeps Conv1d's [hidden, 1, kernel]; llama.cpp squeezes it to [hidden][kernel].
    add(TensorRole::kConvKernel, "shortconv.conv.weight", w(n.conv_kernel), {c.conv_kernel, h});
    add(TensorRole::kConvOutProj, "shortconv.out_proj.weight", w(n.conv_out), {h, h});
  }
  add(TensorRole::kFfnNorm, "ffn_norm.weight", w(n.ffn_norm), {h});
  if (c.is_moe()) {
    const int64_t e = c.n_experts, ef = c.expert_ffn;
    add(TensorRole::kFfnRouter, "ffn_gate_inp.weight", w(n.router), {h, e});
    auto experts = [&](TensorRole role, const char* gguf, const char* part, std::vector<int64_t> ne) {
      TensorSpec s{role, i, b + gguf, "", std::move(ne), true, {}};
      for (int x = 0; x < c.n_experts; ++x) s.hf_parts.push_back(m + n.experts + "." + std::to_string(x) + "." + part + ".weight");
      t->push_back(std::move(s));
    };
    experts(TensorRole::kFfnGateExps, "ffn_gate_exps.weight", n.expert_gate, {h, ef, e});
    experts(TensorRole::kFfnUpExps, "ffn_up_exps.weight", n.expert_up, {h, ef, e});
    experts(TensorRole::kFfnDownExps, "ffn_down_exps.weight", n.expert_down, {ef, h, e});
  } else {
    add(TensorRole::kFfnGate, "ffn_gate.weight", w(n.gate), {h, f});
    add(TensorRole::kFfnUp, "ffn_up.weight", w(n.up), {h, f});
    add(TensorRole::kFfnDown, "ffn_down.weight", w(n.down), {f, h});
    if (c.mlp_bias) {
      add(TensorRole::kFfnGateBias, "ffn_gate.bias", bias(n.gate), {f});
      add(TensorRole::kFfnUpBias, "ffn_up.bias", bias(n.up), {f});
      add(TensorRole::kFfnDownBias, "ffn_down.bias", bias(n.down), {h});
    }
  }
}

std::vector<TensorSpec> DecoderTable(const ModelConfig& c, const HfBlockNames& n) {
  std::vector<TensorSpec> t;
  AddGlobalTensors(c, n, &t);
  for (int i = 0; i < c.n_layers; ++i) AddLayerTensors(c, i, n, &t);
  return t;
}

}  // namespace strata
