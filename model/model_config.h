// The resolved, checked hyper-parameters of a decoder-only model, whatever
// file it came from. An architecture file (model/architectures/*.cc) fills it
// from GGUF metadata or an HF config.json; every rank holds the same copy, and
// the layer recipe (model/layer.h) reads only this.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace strata {

// How the two halves of a rotary pair are laid out inside a head.
enum class RopeLayout {
  kNeox,         // HF rotate_half: pairs (i, i + head_dim/2)
  kInterleaved,  // llama.cpp's GGUF (its converter permutes q/k rows): pairs (2i, 2i+1)
};

// How rotary frequencies are stretched for contexts past the training one.
enum class RopeScaling {
  kNone,
  kLlama3,  // Llama 3.1+: low frequencies divided by `factor`, a smooth ramp between
  kYarn,    // YaRN (Peng et al. 2023): ramped interpolation + an attention factor
};

struct RopeConfig {
  float theta = 10000.0f;
  RopeLayout layout = RopeLayout::kNeox;
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.0f;          // kLlama3, kYarn
  int original_ctx = 0;         // kLlama3, kYarn: the context the model was trained at
  float low_freq_factor = 1.0f;   // kLlama3
  float high_freq_factor = 4.0f;  // kLlama3
  float beta_fast = 32.0f;      // kYarn: the ramp's ends, in rotations
  float beta_slow = 1.0f;
  float attention_factor = 1.0f;  // kYarn: cos / sin are multiplied by it (transformers' attention_scaling)
  // Per-frequency divisors read from a GGUF's rope_freqs.weight (llama.cpp
  // stores Llama 3 scaling so); empty otherwise. [head_dim / 2]
  std::vector<float> freq_factors;
};

// What mixes tokens in a layer.
enum class LayerKind {
  kAttention,  // grouped-query attention over a KV cache
  kShortConv,  // LFM2's gated short convolution over a state of the last tokens
};

struct ModelConfig {
  std::string arch;  // the architecture's name in strata ("smollm3", "qwen3", "mixtral", ...)
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn = 0;       // SwiGLU width of dense layers
  int vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-6f;
  RopeConfig rope;
  // rope_layers[i]: layer i applies RoPE. SmolLM3's NoPE layers are false
  // (no_rope_layers[i] == 0 in its config.json).
  std::vector<bool> rope_layers;
  std::vector<LayerKind> layer_kinds;  // [n_layers]
  // Sliding-window attention: layer i attends to its last layer_window[i]
  // positions (itself included); 0 = the whole context. [n_layers]
  std::vector<int> layer_window;
  bool tied_embeddings = false;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;  // generation stops at any of these

  // Attention variants.
  bool qkv_bias = false;   // q/k/v projections have biases (Qwen2, Llama attention_bias)
  bool out_bias = false;   // the output projection has a bias (Llama attention_bias)
  bool qk_norm = false;    // per-head RMSNorm of q and k before RoPE (Qwen3, LFM2)
  // Ministral 3 (Llama 4's attention temperature): q *= 1 + beta * log(1 +
  // floor(pos / length)) for the positions past `length`. 0 = off.
  float attn_temperature_beta = 0.0f;
  int attn_temperature_length = 0;

  // Feed-forward variants.
  bool mlp_bias = false;   // gate / up / down have biases (Llama mlp_bias)
  int n_experts = 0;       // > 0: a mixture of SwiGLU experts in every layer
  int n_experts_used = 0;  // top-k experts per token
  int expert_ffn = 0;      // each expert's width
  bool expert_weights_norm = true;  // renormalize the top-k router probabilities to sum to 1

  // LFM2's short convolution.
  int conv_kernel = 0;     // conv_L_cache: taps of the depthwise causal convolution
  bool conv_bias = false;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  bool is_moe() const { return n_experts > 0; }
  bool has_attention() const;
  int n_attention_layers() const;
  // Checks the invariants the forward pass relies on.
  Status Validate(const std::string& source) const;
};

// A contiguous range of layers [first, last] (inclusive, global indices).
struct LayerRange {
  int first = 0;
  int last = -1;
  int count() const { return last - first + 1; }
  bool contains(int layer) const { return layer >= first && layer <= last; }
};

// Sizes the per-layer lists that are empty to n_layers with the plain
// decoder's values (attention, no window, RoPE): for configs built in code.
void FillDefaultLayerLists(ModelConfig* cfg);

const char* LayerKindName(LayerKind kind);
const char* RopeScalingName(RopeScaling scaling);

}  // namespace strata
