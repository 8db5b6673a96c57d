// ModelConfig invariants.
#include "model/model_config.h"

#include <algorithm>
#include <cmath>

namespace strata {

bool ModelConfig::has_attention() const { return n_attention_layers() > 0; }

int ModelConfig::n_attention_layers() const {
  return static_cast<int>(std::count(layer_kinds.begin(), layer_kinds.end(), LayerKind::kAttention));
}

void FillDefaultLayerLists(ModelConfig* c) {
  const size_t n = c->n_layers > 0 ? static_cast<size_t>(c->n_layers) : 0;
  if (c->layer_kinds.empty()) c->layer_kinds.assign(n, LayerKind::kAttention);
  if (c->layer_window.empty()) c->layer_window.assign(n, 0);
  if (c->rope_layers.empty()) c->rope_layers.assign(n, true);
}

const char* LayerKindName(LayerKind kind) { return kind == LayerKind::kAttention ? "attention" : "conv"; }

const char* RopeScalingName(RopeScaling scaling) {
  switch (scaling) {
    case RopeScaling::kNone: return "none";
    case RopeScaling::kLlama3: return "llama3";
    case RopeScaling::kYarn: return "yarn";
  }
  return "?";
}

Status ModelConfig::Validate(const std::string& source) const {
  auto bad = [&](const std::string& what) { return InvalidArgument(source + ": " + what); };
  auto positive_finite = [](float v) { return v > 0.0f && std::isfinite(v); };
  if (n_layers <= 0 || n_layers > 4096) return bad("layer count " + std::to_string(n_layers) + " is out of range");
  if (hidden <= 0 || hidden > (1 << 20)) return bad("hidden size " + std::to_string(hidden) + " is out of range");
  if (n_heads <= 0 || n_kv_heads <= 0) return bad("head counts must be positive");
  // Bounded so that q_dim() = n_heads * head_dim cannot overflow an int.
  if (n_heads > 65536) return bad("attention head count " + std::to_string(n_heads) + " is out of range");
  if (n_heads % n_kv_heads != 0)
    return bad("attention heads (" + std::to_string(n_heads) + ") are not a multiple of kv heads (" + std::to_string(n_kv_heads) + ")");
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024) return bad("head_dim " + std::to_string(head_dim) + " must be even and positive");
  if (ffn <= 0 || ffn > (1 << 22)) return bad("feed-forward size " + std::to_string(ffn) + " is out of range");
  if (vocab <= 0 || vocab > (1 << 24)) return bad("vocabulary size " + std::to_string(vocab) + " is out of range");
  if (!(rms_eps > 0.0f) || rms_eps > 1.0f) return bad("rms eps " + std::to_string(rms_eps) + " is out of range");
  if (!positive_finite(rope.theta)) return bad("rope theta " + std::to_string(rope.theta) + " must be positive and finite");
  if (q_dim() > (1 << 24)) return bad("attention width (heads x head_dim = " + std::to_string(q_dim()) + ") is out of range");
  if (bos_id < -1 || bos_id >= vocab) return bad("bos id " + std::to_string(bos_id) + " is outside the vocabulary");
  const size_t n = static_cast<size_t>(n_layers);
  if (rope_layers.size() != n)
    return bad("rope layer list has " + std::to_string(rope_layers.size()) + " entries for " + std::to_string(n_layers) + " layers");
  if (layer_kinds.size() != n)
    return bad("layer kind list has " + std::to_string(layer_kinds.size()) + " entries for " + std::to_string(n_layers) + " layers");
  if (layer_window.size() != n)
    return bad("sliding window list has " + std::to_string(layer_window.size()) + " entries for " + std::to_string(n_layers) + " layers");
  for (size_t i = 0; i < n; ++i)
    if (layer_window[i] < 0) return bad("layer " + std::to_string(i) + ": sliding window " + std::to_string(layer_window[i]) + " must be positive");
  for (int32_t id : eos_ids)
    if (id < 0 || id >= vocab) return bad("eos id " + std::to_string(id) + " is outside the vocabulary");
  switch (rope.scaling) {
    case RopeScaling::kNone: break;
    case RopeScaling::kLlama3:
      if (!positive_finite(rope.factor) || rope.factor < 1.0f) return bad("llama3 rope scaling factor " + std::to_string(rope.factor) + " must be >= 1");
      if (rope.original_ctx <= 0) return bad("llama3 rope scaling needs a positive original context length");
      if (!positive_finite(rope.low_freq_factor) || !positive_finite(rope.high_freq_factor) ||
          rope.high_freq_factor <= rope.low_freq_factor)
        return bad("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor");
      break;
    case RopeScaling::kYarn:
      if (!positive_finite(rope.factor)) return bad("yarn rope scaling factor " + std::to_string(rope.factor) + " must be positive and finite");
      if (rope.original_ctx <= 0) return bad("yarn rope scaling needs a positive original context length");
      if (!positive_finite(rope.beta_fast) || !positive_finite(rope.beta_slow))
        return bad("yarn beta_fast / beta_slow must be positive and finite");
      if (!positive_finite(rope.attention_factor)) return bad("yarn attention factor must be positive and finite");
      break;
  }
  if (!rope.freq_factors.empty() && static_cast<int>(rope.freq_factors.size()) != head_dim / 2)
    return bad("rope frequency factors have " + std::to_string(rope.freq_factors.size()) + " entries, expected head_dim / 2 = " +
               std::to_string(head_dim / 2));
  for (float f : rope.freq_factors)
    if (!positive_finite(f)) return bad("rope frequency factors must be positive and finite");
  if (attn_temperature_beta != 0.0f && (!std::isfinite(attn_temperature_beta) || attn_temperature_length <= 0))
    return bad("attention temperature scaling needs a finite beta and a positive length");
  if (n_experts < 0 || n_experts > 4096) return bad("expert count " + std::to_string(n_experts) + " is out of range");
  if (n_experts > 0) {
    if (n_experts_used <= 0 || n_experts_used > n_experts)
      return bad("experts used per token (" + std::to_string(n_experts_used) + ") must be between 1 and the expert count (" +
                 std::to_string(n_experts) + ")");
    if (expert_ffn <= 0 || expert_ffn > (1 << 22)) return bad("expert feed-forward size " + std::to_string(expert_ffn) + " is out of range");
  } else if (n_experts_used != 0) {
    return bad("experts used per token (" + std::to_string(n_experts_used) + ") without experts");
  }
  const bool has_conv = std::find(layer_kinds.begin(), layer_kinds.end(), LayerKind::kShortConv) != layer_kinds.end();
  if (has_conv && (conv_kernel < 1 || conv_kernel > 64)) return bad("short convolution kernel " + std::to_string(conv_kernel) + " is out of range");
  return Status::Ok();
}

}  // namespace strata
