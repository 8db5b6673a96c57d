// The decoder layer: x += Attn(RmsNorm(x)); x += SwiGLU(RmsNorm(x)).
// Matches transformers' LlamaDecoderLayer / SmolLM3DecoderLayer in float32.
#include "model/decoder.h"

#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {

Result<MatrixView> MatrixOf(const WeightTensor& t) {
  if (t.ne.size() != 2) return Internal("tensor '" + t.name + "' is not a matrix");
  STRATA_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(t.type, t.ne[0]));
  return MatrixView{t.type, t.data, t.ne[0], t.ne[1], row_bytes};
}

Result<std::vector<float>> VectorOf(const WeightTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.ne) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  DequantizeRow(t.type, t.data, v.data(), n);
  return v;
}

Result<LayerWeights> LoadLayerWeights(const ModelFiles& model, int layer) {
  const ModelConfig& cfg = model.config();
  LayerWeights w;
  w.layer = layer;
  w.use_rope = cfg.rope_layers[layer];
  const std::string b = "blk." + std::to_string(layer) + ".";
  auto matrix = [&](const char* name, MatrixView* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.Tensor(b + name));
    STRATA_ASSIGN_OR_RETURN(*out, MatrixOf(t));
    return Status::Ok();
  };
  auto vec = [&](const char* name, std::vector<float>* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.Tensor(b + name));
    STRATA_ASSIGN_OR_RETURN(*out, VectorOf(t));
    return Status::Ok();
  };
  STRATA_RETURN_IF_ERROR(vec("attn_norm.weight", &w.attn_norm));
  STRATA_RETURN_IF_ERROR(vec("ffn_norm.weight", &w.ffn_norm));
  STRATA_RETURN_IF_ERROR(matrix("attn_q.weight", &w.wq));
  STRATA_RETURN_IF_ERROR(matrix("attn_k.weight", &w.wk));
  STRATA_RETURN_IF_ERROR(matrix("attn_v.weight", &w.wv));
  STRATA_RETURN_IF_ERROR(matrix("attn_output.weight", &w.wo));
  STRATA_RETURN_IF_ERROR(matrix("ffn_gate.weight", &w.gate));
  STRATA_RETURN_IF_ERROR(matrix("ffn_up.weight", &w.up));
  STRATA_RETURN_IF_ERROR(matrix("ffn_down.weight", &w.down));
  return w;
}

namespace {

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

void DecoderLayerForward(const ModelConfig& cfg, const LayerWeights& w, const std::vector<SequenceSpan>& spans,
                         float* x, DecoderScratch& s, ThreadPool* pool) {
  int64_t n = 0;
  for (const SequenceSpan& sp : spans) n += sp.n_tok;
  const int64_t hidden = cfg.hidden, q_dim = cfg.q_dim(), kv_dim = cfg.kv_dim(), ffn = cfg.ffn;
  Grow(s.norm, n * hidden);
  Grow(s.q, n * q_dim);
  Grow(s.k, n * kv_dim);
  Grow(s.v, n * kv_dim);
  Grow(s.attn, n * q_dim);
  Grow(s.proj, n * hidden);
  Grow(s.gate, n * ffn);
  Grow(s.up, n * ffn);

  // Attention block.
  for (int64_t t = 0; t < n; ++t) RmsNorm(x + t * hidden, w.attn_norm.data(), s.norm.data() + t * hidden, hidden, cfg.rms_eps);
  MatMul(w.wq, s.norm.data(), n, s.q.data(), pool);
  MatMul(w.wk, s.norm.data(), n, s.k.data(), pool);
  MatMul(w.wv, s.norm.data(), n, s.v.data(), pool);
  const AttentionShape shape{cfg.n_heads, cfg.n_kv_heads, cfg.head_dim};
  int64_t row = 0;
  for (const SequenceSpan& sp : spans) {
    for (int64_t t = 0; t < sp.n_tok; ++t) {
      const int64_t pos = sp.pos0 + t;
      float* qt = s.q.data() + (row + t) * q_dim;
      float* kt = s.k.data() + (row + t) * kv_dim;
      if (w.use_rope) {
        if (cfg.rope_layout == RopeLayout::kNeox) {
          RopeNeox(qt, cfg.n_heads, cfg.head_dim, pos, cfg.rope_theta);
          RopeNeox(kt, cfg.n_kv_heads, cfg.head_dim, pos, cfg.rope_theta);
        } else {
          RopeInterleaved(qt, cfg.n_heads, cfg.head_dim, pos, cfg.rope_theta);
          RopeInterleaved(kt, cfg.n_kv_heads, cfg.head_dim, pos, cfg.rope_theta);
        }
      }
      std::memcpy(sp.k_cache + pos * kv_dim, kt, sizeof(float) * kv_dim);
      std::memcpy(sp.v_cache + pos * kv_dim, s.v.data() + (row + t) * kv_dim, sizeof(float) * kv_dim);
    }
    CausalAttention(shape, s.q.data() + row * q_dim, sp.k_cache, sp.v_cache, sp.pos0, sp.n_tok,
                    s.attn.data() + row * q_dim, pool);
    row += sp.n_tok;
  }
  MatMul(w.wo, s.attn.data(), n, s.proj.data(), pool);
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += s.proj[i];

  // Feed-forward block (SwiGLU).
  for (int64_t t = 0; t < n; ++t) RmsNorm(x + t * hidden, w.ffn_norm.data(), s.norm.data() + t * hidden, hidden, cfg.rms_eps);
  MatMul(w.gate, s.norm.data(), n, s.gate.data(), pool);
  MatMul(w.up, s.norm.data(), n, s.up.data(), pool);
  SiluMul(s.gate.data(), s.up.data(), s.gate.data(), n * ffn);
  MatMul(w.down, s.gate.data(), n, s.proj.data(), pool);
  for (int64_t i = 0; i < n * hidden; ++i) x[i] += s.proj[i];
}

}  // namespace strata
