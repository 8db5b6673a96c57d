// The decoder layer recipe (layer.h) and loading a layer's weights by role.
#include "model/layer.h"

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {

std::vector<MatrixView*> LayerWeights::Matrices() {
  std::vector<MatrixView*> m;
  if (kind == LayerKind::kAttention) m = {&attn.wq, &attn.wk, &attn.wv, &attn.wo};
  else m = {&conv.in_proj, &conv.out_proj};
  if (moe.gate.empty()) {
    for (MatrixView* v : {&mlp.gate, &mlp.up, &mlp.down}) m.push_back(v);
  } else {
    m.push_back(&moe.router);
    for (auto* set : {&moe.gate, &moe.up, &moe.down})
      for (MatrixView& v : *set) m.push_back(&v);
  }
  return m;
}

Result<MatrixView> MatrixOf(const WeightTensor& t) {
  if (t.ne.size() != 2 || t.data == nullptr) return Internal("tensor '" + t.name + "' is not a matrix");
  STRATA_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(t.type, t.ne[0]));
  return MatrixView{t.type, t.data, t.ne[0], t.ne[1], row_bytes};
}

Result<std::vector<float>> VectorOf(const WeightTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.ne) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  STRATA_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(t.type, t.row_length()));
  for (int64_t r = 0; r < t.total_rows(); ++r) DequantizeRow(t.type, t.Row(r, row_bytes), v.data() + r * t.row_length(), t.row_length());
  return v;
}

Result<LayerWeights> LoadLayerWeights(const ModelFiles& model, int layer) {
  const ModelConfig& cfg = model.config();
  LayerWeights w;
  w.layer = layer;
  w.kind = cfg.layer_kinds[layer];
  auto matrix = [&](TensorRole role, MatrixView* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(role, layer));
    STRATA_ASSIGN_OR_RETURN(*out, MatrixOf(t));
    return Status::Ok();
  };
  auto vec = [&](TensorRole role, std::vector<float>* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(role, layer));
    STRATA_ASSIGN_OR_RETURN(*out, VectorOf(t));
    return Status::Ok();
  };
  // Optional pieces are present when the table lists them (the config says so).
  auto optional_vec = [&](TensorRole role, std::vector<float>* out) -> Status {
    return model.HasRole(role, layer) ? vec(role, out) : Status::Ok();
  };
  auto experts = [&](TensorRole role, std::vector<MatrixView>* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(role, layer));
    STRATA_ASSIGN_OR_RETURN(uint64_t row_bytes, RowBytes(t.type, t.ne[0]));
    for (int64_t e = 0; e < t.ne.back(); ++e) {
      STRATA_ASSIGN_OR_RETURN(MatrixView m, MatrixOf(t.Slice(e, row_bytes)));
      out->push_back(m);
    }
    return Status::Ok();
  };
  STRATA_RETURN_IF_ERROR(vec(TensorRole::kAttnNorm, &w.mixer_norm));
  STRATA_RETURN_IF_ERROR(vec(TensorRole::kFfnNorm, &w.ffn_norm));
  if (w.kind == LayerKind::kAttention) {
    AttentionWeights& a = w.attn;
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kAttnQ, &a.wq));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kAttnK, &a.wk));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kAttnV, &a.wv));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kAttnOutput, &a.wo));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnQBias, &a.bq));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnKBias, &a.bk));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnVBias, &a.bv));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnOutputBias, &a.bo));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnQNorm, &a.q_norm));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kAttnKNorm, &a.k_norm));
    a.use_rope = cfg.rope_layers[layer];
    a.window = cfg.layer_window[layer];
  } else {
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kConvInProj, &w.conv.in_proj));
    STRATA_RETURN_IF_ERROR(vec(TensorRole::kConvKernel, &w.conv.kernel));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kConvOutProj, &w.conv.out_proj));
  }
  if (cfg.is_moe()) {
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kFfnRouter, &w.moe.router));
    STRATA_RETURN_IF_ERROR(experts(TensorRole::kFfnGateExps, &w.moe.gate));
    STRATA_RETURN_IF_ERROR(experts(TensorRole::kFfnUpExps, &w.moe.up));
    STRATA_RETURN_IF_ERROR(experts(TensorRole::kFfnDownExps, &w.moe.down));
  } else {
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kFfnGate, &w.mlp.gate));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kFfnUp, &w.mlp.up));
    STRATA_RETURN_IF_ERROR(matrix(TensorRole::kFfnDown, &w.mlp.down));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kFfnGateBias, &w.mlp.b_gate));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kFfnUpBias, &w.mlp.b_up));
    STRATA_RETURN_IF_ERROR(optional_vec(TensorRole::kFfnDownBias, &w.mlp.b_down));
  }
  return w;
}

namespace {

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

void LayerForward(const ModelConfig& cfg, const LayerWeights& w, const std::vector<SequenceSpan>& spans, const RopeTable& rope,
                  float* x, LayerScratch& s, ThreadPool* pool) {
  int64_t n = 0;
  for (const SequenceSpan& sp : spans) n += sp.n_tok;
  const int64_t hidden = cfg.hidden;
  Grow(s.norm, n * hidden);
  Grow(s.out, n * hidden);
  const BlockContext ctx{cfg, spans, n, rope, s.blocks, pool};
  auto residual = [&](const std::vector<float>& norm_weight, auto&& block) {
    for (int64_t t = 0; t < n; ++t) RmsNorm(x + t * hidden, norm_weight.data(), s.norm.data() + t * hidden, hidden, cfg.rms_eps);
    block(s.norm.data(), s.out.data());
    for (int64_t i = 0; i < n * hidden; ++i) x[i] += s.out[i];
  };
  residual(w.mixer_norm, [&](const float* in, float* out) {
    if (w.kind == LayerKind::kAttention) AttentionBlock(ctx, w.attn, in, out);
    else ShortConvBlock(ctx, w.conv, in, out);
  });
  residual(w.ffn_norm, [&](const float* in, float* out) {
    if (cfg.is_moe()) MoeBlock(ctx, w.moe, in, out);
    else SwiGluBlock(ctx, w.mlp, in, out);
  });
}

}  // namespace strata
