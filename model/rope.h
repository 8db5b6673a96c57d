// Rotary position embeddings of a model (RopeConfig): the frequencies, as
// transformers computes them in float32 (default, Llama 3 and YaRN scaling,
// or llama.cpp's per-frequency divisors), and the cos / sin of the positions
// of a batch, computed once per batch for all of a stage's layers and for
// both q and k. Runs on every rank that holds an attention layer.
//
//   RopeTable rope(cfg.rope, cfg.head_dim);
//   rope.Fill(positions);                 // once per batch
//   RopeRotate(q_t, n_heads, head_dim, rope.cos(t), rope.sin(t), neox);
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model_config.h"

namespace strata {

// inv_freq[i], i < head_dim / 2 (transformers' RotaryEmbedding inv_freq).
std::vector<float> RopeInvFreq(const RopeConfig& rope, int head_dim);

class RopeTable {
 public:
  RopeTable(const RopeConfig& rope, int head_dim);
  // cos / sin of angle float(positions[t]) * inv_freq[i] (float32), times
  // the YaRN attention factor, for every t.
  void Fill(std::span<const int64_t> positions);
  const float* cos(int64_t t) const { return cos_.data() + t * half_; }
  const float* sin(int64_t t) const { return sin_.data() + t * half_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  std::vector<float> inv_freq_;
  float attention_factor_ = 1.0f;
  int half_ = 0;
  std::vector<float> cos_, sin_;  // [n positions][head_dim / 2]
};

}  // namespace strata
