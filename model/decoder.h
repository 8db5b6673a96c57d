// The llama-family decoder layer recipe (SmolLM3, Llama), built from the
// shared blocks in kernels/: RmsNorm, RoPE, grouped-query attention, SwiGLU.
// Runs on the stage that owns the layer.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/matmul.h"
#include "model/model_config.h"
#include "model/model_files.h"

namespace strata {

// Weights of one layer, pointing into the mapped model file. Norm weights are
// converted to float32 at load (they are small).
struct LayerWeights {
  int layer = 0;                 // global index
  bool use_rope = true;          // false for SmolLM3's NoPE layers
  std::vector<float> attn_norm;  // [hidden]
  std::vector<float> ffn_norm;   // [hidden]
  MatrixView wq;                 // [q_dim rows][hidden]
  MatrixView wk;                 // [kv_dim rows][hidden]
  MatrixView wv;                 // [kv_dim rows][hidden]
  MatrixView wo;                 // [hidden rows][q_dim]
  MatrixView gate;               // [ffn rows][hidden]
  MatrixView up;                 // [ffn rows][hidden]
  MatrixView down;               // [hidden rows][ffn]
};

// A matrix view of a 2-D weight tensor.
Result<MatrixView> MatrixOf(const WeightTensor& t);
// A float32 copy of a 1-D (norm) tensor.
Result<std::vector<float>> VectorOf(const WeightTensor& t);
Result<LayerWeights> LoadLayerWeights(const ModelFiles& model, int layer);

// One sequence's run of tokens inside a batch, with its KV cache for the
// current layer: rows pos0 .. pos0 + n_tok - 1 are written, 0 .. pos0 + n_tok - 1 read.
struct SequenceSpan {
  int64_t pos0;
  int64_t n_tok;
  float* k_cache;  // [n_ctx][kv_dim] f32
  float* v_cache;  // [n_ctx][kv_dim] f32
};

// Scratch buffers reused across layers (grown as needed).
struct DecoderScratch {
  std::vector<float> norm, q, k, v, attn, proj, gate, up;
};

// x: [n_tokens][hidden], the residual stream, updated in place. The tokens of
// span i follow those of span i-1.
void DecoderLayerForward(const ModelConfig& cfg, const LayerWeights& w, const std::vector<SequenceSpan>& spans,
                         float* x, DecoderScratch& scratch, ThreadPool* pool);

}  // namespace strata
