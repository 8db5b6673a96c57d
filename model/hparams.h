// The pieces the architecture files (model/architectures/*.cc) are built
// from: checked readers of GGUF keys and HF config fields, the hyper-parameters
// every llama-like decoder shares (read and written), rotary scaling
// parameters, and the tensor-table rows of the shared blocks (attention,
// SwiGLU, mixture of experts, short convolution). Used on every rank when a
// model is opened, and by convert / make-model when one is written.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "model/architecture.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/model_config.h"

namespace strata {

// ---------------------------------------------------------------------------
// GGUF keys "<prefix>.<key>" with errors naming the file and the key.
// ---------------------------------------------------------------------------
class GgufHparams {
 public:
  GgufHparams(const GgufFile& file, std::string prefix) : f_(file), p_(std::move(prefix) + ".") {}
  const GgufFile& file() const { return f_; }
  const std::string& prefix() const { return p_; }
  bool Has(const std::string& key) const { return f_.Find(p_ + key) != nullptr; }
  Result<int> Int(const std::string& key) const;  // present, 0 .. 2^30
  Result<int> IntOr(const std::string& key, int fallback) const;
  Result<float> Float(const std::string& key) const;
  Result<float> FloatOr(const std::string& key, float fallback) const;
  Result<bool> BoolOr(const std::string& key, bool fallback) const;
  // A key llama.cpp writes either as one integer or as one per layer.
  Result<std::vector<int>> PerLayerInt(const std::string& key, int n_layers) const;
  Status Error(const std::string& key, const std::string& what) const;

 private:
  const GgufFile& f_;
  std::string p_;
};

// ---------------------------------------------------------------------------
// HF config.json fields with errors naming the file and the field.
// ---------------------------------------------------------------------------
class HfHparams {
 public:
  HfHparams(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {}
  const nlohmann::json& json() const { return j_; }
  const std::string& path() const { return path_; }
  bool Has(const char* key) const;  // present and not null
  Result<int> Int(const char* key, std::optional<int> fallback = std::nullopt) const;  // 0 .. 2^30
  Result<double> Float(const char* key, std::optional<double> fallback = std::nullopt) const;
  Result<bool> Bool(const char* key, bool fallback) const;
  Result<std::string> String(const char* key, std::optional<std::string> fallback = std::nullopt) const;
  Status Error(const std::string& what) const;  // DataLoss naming the file
  Status Unsupported(const std::string& what) const;  // Unimplemented naming the file

 private:
  const nlohmann::json& j_;
  std::string path_;
};

// ---------------------------------------------------------------------------
// The llama-like decoder's hyper-parameters (every architecture here starts
// from them): layer count, widths, heads, eps, rope theta, vocabulary, tied
// embeddings, bos / eos. Sets every layer to full attention with RoPE.
// ---------------------------------------------------------------------------
Result<ModelConfig> ReadDecoderGguf(const GgufHparams& g, const std::string& arch);
// `eps_key`: "rms_norm_eps" ("norm_eps" for LFM2).
Result<ModelConfig> ReadDecoderHf(const HfHparams& h, const std::string& arch, const char* eps_key = "rms_norm_eps");
// Writes what ReadDecoderGguf reads under "<gguf_arch>.": block_count,
// context_length, embedding_length, feed_forward_length, head counts,
// rope.freq_base, layer_norm_rms_epsilon, key / value length, vocab_size,
// rope.dimension_count -- and the rope scaling keys.
void WriteDecoderGguf(const ModelConfig& c, const std::string& gguf_arch, GgufWriter* w);

// Rotary scaling from config.json (rope_scaling, or rope_parameters keyed by
// layer type or not): none, llama3 or yarn; anything else is Unimplemented.
// Also reads rope_theta. Ministral 3's llama_4_scaling_beta goes to
// cfg->attn_temperature_*.
Status ReadHfRope(const HfHparams& h, ModelConfig* cfg);
// The same from GGUF "<arch>.rope.*" keys (and a rope_freqs.weight tensor).
Status ReadGgufRope(const GgufHparams& g, ModelConfig* cfg);
// The YaRN attention factor transformers derives from factor, mscale and mscale_all_dim.
float YarnAttentionFactor(float factor, std::optional<double> mscale, std::optional<double> mscale_all_dim);

// Sliding windows: from config.json's layer_types ("full_attention",
// "sliding_attention", and "conv" where `allow_conv`), else `sliding_window`
// on every layer when `window_applies`. Fills layer_window and layer_kinds.
Status ReadHfLayerTypes(const HfHparams& h, bool allow_conv, bool window_applies, ModelConfig* cfg);

// ---------------------------------------------------------------------------
// Tensor-table rows of the shared blocks. HF names are relative to
// "model.layers.<i>." and "model."; GGUF names are llama.cpp's.
// ---------------------------------------------------------------------------
struct HfBlockNames {
  // Attention.
  const char* attn_norm = "input_layernorm";
  const char* q = "self_attn.q_proj";
  const char* k = "self_attn.k_proj";
  const char* v = "self_attn.v_proj";
  const char* o = "self_attn.o_proj";
  const char* q_norm = "self_attn.q_norm";
  const char* k_norm = "self_attn.k_norm";
  // Feed-forward.
  const char* ffn_norm = "post_attention_layernorm";
  const char* gate = "mlp.gate_proj";
  const char* up = "mlp.up_proj";
  const char* down = "mlp.down_proj";
  // Mixture of experts: the router and each expert's "<experts>.<e>.<gate|up|down>".
  const char* router = "mlp.gate";
  const char* experts = "mlp.experts";
  const char* expert_gate = "gate_proj";
  const char* expert_up = "up_proj";
  const char* expert_down = "down_proj";
  // Short convolution.
  const char* conv_in = "conv.in_proj";
  const char* conv_kernel = "conv.conv";
  const char* conv_out = "conv.out_proj";
  // Global.
  const char* output_norm = "model.norm";
  const char* output_norm_gguf = "output_norm";
};

// token_embd, the final norm, output (optional when tied) and rope_freqs
// (when the config has frequency factors).
void AddGlobalTensors(const ModelConfig& c, const HfBlockNames& n, std::vector<TensorSpec>* t);
// The mixer of layer i (attention or short convolution, by cfg.layer_kinds)
// with its norm, then its feed-forward (dense or experts) with its norm.
void AddLayerTensors(const ModelConfig& c, int i, const HfBlockNames& n, std::vector<TensorSpec>* t);
// Every layer and the global tensors.
std::vector<TensorSpec> DecoderTable(const ModelConfig& c, const HfBlockNames& n);

}  // namespace strata
