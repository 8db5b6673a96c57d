// A decoder layer: its weights (loaded by tensor role from the
// architecture's table) and the recipe that runs it. Every architecture here
// shares one recipe, pre-norm residual blocks:
//   x += Mixer(RmsNorm(x))   mixer: attention, or LFM2's short convolution
//   x += Ffn(RmsNorm(x))     ffn: SwiGLU, or a mixture of SwiGLU experts
// which is transformers' LlamaDecoderLayer, Qwen3DecoderLayer,
// MixtralDecoderLayer, Lfm2DecoderLayer... An architecture whose block
// structure differs (post-norms, parallel blocks) adds its recipe here.
// Runs on the stage that owns the layer.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "model/blocks.h"
#include "model/model_files.h"

namespace strata {

struct LayerWeights {
  int layer = 0;                 // global index
  LayerKind kind = LayerKind::kAttention;
  std::vector<float> mixer_norm; // [hidden] before attention / convolution
  std::vector<float> ffn_norm;   // [hidden]
  AttentionWeights attn;         // kAttention
  ShortConvWeights conv;         // kShortConv
  SwiGluWeights mlp;             // dense feed-forward
  MoeWeights moe;                // mixture of experts (cfg.is_moe())
  // Every matrix of the layer (the stage may move them to its own memory).
  std::vector<MatrixView*> Matrices();
};

// A matrix view of a 2-D weight tensor.
Result<MatrixView> MatrixOf(const WeightTensor& t);
// A float32 copy of a 1-D tensor (norms, biases, small kernels).
Result<std::vector<float>> VectorOf(const WeightTensor& t);
Result<LayerWeights> LoadLayerWeights(const ModelFiles& model, int layer);

// Buffers reused across layers (grown as needed).
struct LayerScratch {
  std::vector<float> norm, out;
  BlockScratch blocks;
};

// x: [ctx.n_tok][hidden], the residual stream, updated in place. The tokens
// of span i follow those of span i-1; each span's state is this layer's.
void LayerForward(const ModelConfig& cfg, const LayerWeights& w, const std::vector<SequenceSpan>& spans, const RopeTable& rope,
                  float* x, LayerScratch& scratch, ThreadPool* pool);

}  // namespace strata
