// The resolved, checked hyper-parameters of a decoder-only model, whatever
// file it came from. Architecture files (smollm3.cc, llama.cc) fill it from
// GGUF metadata or an HF config.json; every rank holds the same copy.
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

struct ModelConfig {
  std::string arch;  // "smollm3", "llama"
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn = 0;
  int vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeLayout rope_layout = RopeLayout::kNeox;
  // rope_layers[i]: layer i applies RoPE. SmolLM3's NoPE layers are false
  // (no_rope_layers[i] == 0 in its config.json).
  std::vector<bool> rope_layers;
  bool tied_embeddings = false;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;  // generation stops at any of these

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
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

}  // namespace strata
