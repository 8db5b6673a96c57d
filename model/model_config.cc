// ModelConfig invariants.
#include "model/model_config.h"

#include <cmath>

namespace strata {

Status ModelConfig::Validate(const std::string& source) const {
  auto bad = [&](const std::string& what) { return InvalidArgument(source + ": " + what); };
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
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) return bad("rope theta " + std::to_string(rope_theta) + " must be positive and finite");
  if (q_dim() > (1 << 24)) return bad("attention width (heads x head_dim = " + std::to_string(q_dim()) + ") is out of range");
  if (bos_id < -1 || bos_id >= vocab) return bad("bos id " + std::to_string(bos_id) + " is outside the vocabulary");
  if (static_cast<int>(rope_layers.size()) != n_layers)
    return bad("rope layer list has " + std::to_string(rope_layers.size()) + " entries for " + std::to_string(n_layers) + " layers");
  for (int32_t id : eos_ids)
    if (id < 0 || id >= vocab) return bad("eos id " + std::to_string(id) + " is outside the vocabulary");
  return Status::Ok();
}

}  // namespace strata
