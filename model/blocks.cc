// The shared blocks (blocks.h), in float32 as transformers computes them:
// LlamaAttention / Qwen3Attention / Lfm2Attention / Ministral3Attention,
// Lfm2ShortConv.slow_forward, LlamaMLP, MixtralSparseMoeBlock /
// Qwen3MoeSparseMoeBlock.
#include "model/blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {
namespace {

template <class T>
T* Grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// y[t][i] += b[i] (nn.Linear's bias, added after the product).
void AddBias(float* y, const std::vector<float>& b, int64_t n_tok) {
  if (b.empty()) return;
  const int64_t n = static_cast<int64_t>(b.size());
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t i = 0; i < n; ++i) y[t * n + i] += b[i];
}

// Rows of a KV cache are allocated in steps of this many positions (the
// reserved room doubles, so a growing cache is moved only a few times); a
// ring (a window's) in steps of kRingStep, since it never grows with the
// sequence. The step is small because new rows are zero-filled: a new
// sequence's first token on a SmolLM3-3B stage of 21 layers wrote 21 MiB of
// zeros at 256 rows, and a decode micro-batch of 4 new sequences started
// 40-130 ms late.
constexpr int64_t kCacheStep = 32;
constexpr int64_t kRingStep = 64;

int64_t RoundUp(int64_t n, int64_t step) { return (n + step - 1) / step * step; }

// Rows a KV cache needs for a batch at pos0 of n_tok tokens: every position
// for full attention; for a window, the window - 1 positions before the
// batch and the batch's own.
int64_t KvRowsNeeded(int window, int64_t pos0, int64_t n_tok, int64_t n_ctx) {
  if (window <= 0) return std::min(n_ctx, RoundUp(pos0 + n_tok, kCacheStep));
  return std::min(n_ctx, RoundUp(window - 1 + n_tok, kRingStep));
}

}  // namespace

void PrepareLayerState(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t pos0, int64_t n_tok,
                       int64_t n_ctx, LayerState* state) {
  if (kind == LayerKind::kShortConv) {
    const size_t n = static_cast<size_t>(cfg.conv_kernel - 1) * cfg.hidden;
    if (state->conv.rows.size() != n) state->conv.rows.assign(n, 0.0f);
    return;
  }
  KvCache& kv = state->kv;
  if (kv.capacity == 0) {
    kv.type = kv_type;
    kv.row_bytes = *RowBytes(kv_type, cfg.kv_dim());  // CheckKvType vetted the shape
  }
  const int64_t need = KvRowsNeeded(window, pos0, n_tok, n_ctx);
  if (need <= kv.capacity) return;
  const uint64_t row = kv.row_bytes;
  if (window <= 0 || kv.capacity == 0) {
    // Rows are positions (p % capacity == p): growing keeps them in place.
    // Room doubles (a long prompt's cache is copied a few times, not once
    // per step) but never past n_ctx, which the memory check counted.
    const int64_t allocated = static_cast<int64_t>(kv.k.capacity() / row);
    if (window <= 0 && need > allocated) {
      const auto rows = static_cast<size_t>(std::max(need, std::min(n_ctx, 2 * allocated)));
      kv.k.reserve(rows * row);
      kv.v.reserve(rows * row);
    }
    kv.k.resize(static_cast<size_t>(need * row));
    kv.v.resize(static_cast<size_t>(need * row));
    kv.capacity = need;
    return;
  }
  // A ring grows: the positions still in reach move to their new rows.
  std::vector<uint8_t> k(static_cast<size_t>(need * row)), v(static_cast<size_t>(need * row));
  for (int64_t p = std::max<int64_t>(0, pos0 - window + 1); p < pos0; ++p) {
    std::memcpy(k.data() + (p % need) * row, kv.k.data() + (p % kv.capacity) * row, row);
    std::memcpy(v.data() + (p % need) * row, kv.v.data() + (p % kv.capacity) * row, row);
  }
  kv.k = std::move(k);
  kv.v = std::move(v);
  kv.capacity = need;
}

void ClearLayerState(LayerState* state) {
  state->kv.k.clear();
  state->kv.v.clear();
  state->kv.capacity = 0;
  state->conv.rows.clear();
}

uint64_t LayerStateBytes(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t n_ctx, int64_t max_batch) {
  if (kind == LayerKind::kShortConv) return static_cast<uint64_t>(cfg.conv_kernel - 1) * cfg.hidden * sizeof(float);
  const int64_t rows = window <= 0 ? n_ctx : std::min(n_ctx, RoundUp(window - 1 + max_batch, kRingStep));
  auto row = RowBytes(kv_type, cfg.kv_dim());
  return static_cast<uint64_t>(rows) * (row.ok() ? *row : 0) * 2;
}

bool LayerStateKeepsPrefix(LayerKind kind, int window, int64_t length, int64_t keep) {
  if (keep < 0 || keep > length) return false;
  if (keep == length) return true;
  if (kind == LayerKind::kShortConv) return false;
  return window <= 0 || length <= window;
}

LayerState CopyLayerStatePrefix(const LayerState& state, int window, int64_t keep, int64_t n_ctx) {
  if (window > 0 || state.kv.capacity == 0) return state;
  LayerState out;
  out.conv = state.conv;
  const KvCache& kv = state.kv;
  const int64_t rows = std::min(kv.capacity, std::min(n_ctx, RoundUp(std::max<int64_t>(keep, 1), kCacheStep)));
  const auto bytes = static_cast<std::ptrdiff_t>(rows * static_cast<int64_t>(kv.row_bytes));
  out.kv.type = kv.type;
  out.kv.row_bytes = kv.row_bytes;
  out.kv.k.assign(kv.k.begin(), kv.k.begin() + bytes);
  out.kv.v.assign(kv.v.begin(), kv.v.begin() + bytes);
  out.kv.capacity = rows;
  return out;
}

uint64_t LayerStateBytesAt(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t n_ctx,
                           int64_t length) {
  if (kind == LayerKind::kShortConv || window > 0) return LayerStateBytes(cfg, kind, window, kv_type, n_ctx);
  auto row = RowBytes(kv_type, cfg.kv_dim());
  return static_cast<uint64_t>(std::min(n_ctx, RoundUp(std::max<int64_t>(length, 1), kCacheStep))) * (row.ok() ? *row : 0) * 2;
}

Result<TensorType> ParseKvType(const std::string& name) {
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0})
    if (name == KvTypeName(t)) return t;
  return InvalidArgument("--kv-type '" + name + "': expected f32, f16, bf16 or q8_0");
}

const char* KvTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32: return "f32";
    case TensorType::kF16: return "f16";
    case TensorType::kBF16: return "bf16";
    case TensorType::kQ8_0: return "q8_0";
    default: return "?";
  }
}

Status CheckKvType(const ModelConfig& cfg, TensorType type) {
  if (!IsKvType(type))
    return InvalidArgument(std::string("KV cache type ") + Traits(type).name + " is not one of f32, f16, bf16, q8_0");
  if (cfg.head_dim % Traits(type).block_elems != 0)
    return InvalidArgument(std::string("a ") + Traits(type).name + " KV cache needs head_dim to be a multiple of " +
                           std::to_string(Traits(type).block_elems) + "; this model's head_dim is " + std::to_string(cfg.head_dim));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------

void AttentionBlock(const BlockContext& ctx, const AttentionWeights& w, const float* x, float* out) {
  const ModelConfig& c = ctx.cfg;
  BlockScratch& s = ctx.scratch;
  const int64_t n = ctx.n_tok, q_dim = c.q_dim(), kv_dim = c.kv_dim(), hd = c.head_dim;
  float* q = Grow(s.q, n * q_dim);
  float* k = Grow(s.k, n * kv_dim);
  float* v = Grow(s.v, n * kv_dim);
  float* attn = Grow(s.attn, n * q_dim);
  MatMul(w.wq, x, n, q, ctx.pool);
  MatMul(w.wk, x, n, k, ctx.pool);
  MatMul(w.wv, x, n, v, ctx.pool);
  AddBias(q, w.bq, n);
  AddBias(k, w.bk, n);
  AddBias(v, w.bv, n);
  // Per-head RMSNorm of q and k (Qwen3's q_norm, LFM2's q_layernorm), before RoPE.
  if (!w.q_norm.empty())
    for (int64_t h = 0; h < n * c.n_heads; ++h) RmsNorm(q + h * hd, w.q_norm.data(), q + h * hd, hd, c.rms_eps);
  if (!w.k_norm.empty())
    for (int64_t h = 0; h < n * c.n_kv_heads; ++h) RmsNorm(k + h * hd, w.k_norm.data(), k + h * hd, hd, c.rms_eps);
  const bool neox = c.rope.layout == RopeLayout::kNeox;
  int64_t row = 0;
  for (const SequenceSpan& sp : ctx.spans) {
    for (int64_t t = 0; t < sp.n_tok; ++t, ++row) {
      float* qt = q + row * q_dim;
      float* kt = k + row * kv_dim;
      if (w.use_rope) {
        RopeRotate(qt, c.n_heads, static_cast<int>(hd), ctx.rope.cos(row), ctx.rope.sin(row), neox);
        RopeRotate(kt, c.n_kv_heads, static_cast<int>(hd), ctx.rope.cos(row), ctx.rope.sin(row), neox);
      }
      const int64_t pos = sp.pos0 + t;
      if (c.attn_temperature_beta != 0.0f) {
        // Ministral 3: 1 + beta * log(1 + floor(pos / length)), in float32.
        const float scale = 1.0f + c.attn_temperature_beta *
                                       std::log(1.0f + std::floor(static_cast<float>(pos) / static_cast<float>(c.attn_temperature_length)));
        for (int64_t i = 0; i < q_dim; ++i) qt[i] *= scale;
      }
      KvCache& kv = sp.state->kv;
      const uint64_t slot = static_cast<uint64_t>(pos % kv.capacity) * kv.row_bytes;
      QuantizeRow(kv.type, kt, kv.k.data() + slot, kv_dim);
      QuantizeRow(kv.type, v + row * kv_dim, kv.v.data() + slot, kv_dim);
    }
  }
  const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim};
  row = 0;
  for (const SequenceSpan& sp : ctx.spans) {
    const KvCache& kv = sp.state->kv;
    CausalAttention(shape, q + row * q_dim, KvView{kv.type, kv.k.data(), kv.v.data(), kv.row_bytes, kv.capacity}, sp.pos0,
                    sp.n_tok, w.window, attn + row * q_dim, ctx.pool);
    row += sp.n_tok;
  }
  MatMul(w.wo, attn, n, out, ctx.pool);
  AddBias(out, w.bo, n);
}

// ---------------------------------------------------------------------------
// Gated short convolution (LFM2)
// ---------------------------------------------------------------------------

void ShortConvBlock(const BlockContext& ctx, const ShortConvWeights& w, const float* x, float* out) {
  const ModelConfig& c = ctx.cfg;
  BlockScratch& s = ctx.scratch;
  const int64_t n = ctx.n_tok, h = c.hidden, taps = c.conv_kernel, hist_rows = taps - 1;
  float* bcx = Grow(s.bcx, n * 3 * h);
  float* y = Grow(s.attn, n * h);
  MatMul(w.in_proj, x, n, bcx, ctx.pool);  // per token: B, C, x
  std::vector<float> seq;                  // [hist_rows + span tokens][h]: the state, then B*x of the span
  int64_t row = 0;
  for (const SequenceSpan& sp : ctx.spans) {
    std::vector<float>& state = sp.state->conv.rows;
    seq.resize(static_cast<size_t>((hist_rows + sp.n_tok) * h));
    std::copy(state.begin(), state.end(), seq.begin());
    for (int64_t t = 0; t < sp.n_tok; ++t) {
      const float* b = bcx + (row + t) * 3 * h;
      float* bx = seq.data() + (hist_rows + t) * h;
      for (int64_t i = 0; i < h; ++i) bx[i] = b[i] * b[2 * h + i];
    }
    for (int64_t t = 0; t < sp.n_tok; ++t) {
      const float* cgate = bcx + (row + t) * 3 * h + h;
      float* yt = y + (row + t) * h;
      for (int64_t i = 0; i < h; ++i) {
        const float* kernel = w.kernel.data() + i * taps;
        float sum = 0.0f;
        for (int64_t j = 0; j < taps; ++j) sum += kernel[j] * seq[static_cast<size_t>((t + j) * h + i)];
        yt[i] = cgate[i] * sum;
      }
    }
    // The last hist_rows rows of B*x (the state, for a short span) become the state.
    std::copy(seq.end() - static_cast<int64_t>(state.size()), seq.end(), state.begin());
    row += sp.n_tok;
  }
  MatMul(w.out_proj, y, n, out, ctx.pool);
}

// ---------------------------------------------------------------------------
// Feed-forward
// ---------------------------------------------------------------------------

void SwiGluBlock(const BlockContext& ctx, const SwiGluWeights& w, const float* x, float* out) {
  BlockScratch& s = ctx.scratch;
  const int64_t n = ctx.n_tok, f = w.gate.n_out;
  float* gate = Grow(s.gate, n * f);
  float* up = Grow(s.up, n * f);
  MatMul(w.gate, x, n, gate, ctx.pool);
  MatMul(w.up, x, n, up, ctx.pool);
  AddBias(gate, w.b_gate, n);
  AddBias(up, w.b_up, n);
  SiluMul(gate, up, gate, n * f);
  MatMul(w.down, gate, n, out, ctx.pool);
  AddBias(out, w.b_down, n);
}

// The router picks each token's top-k experts (softmax over all of them, the
// k most probable, renormalized when expert_weights_norm); each expert then
// runs once over all the tokens that chose it (its weights read once per
// batch), and a token's output is the weighted sum of its experts' outputs
// added in expert order from zero, as transformers' index_add_ does.
void MoeBlock(const BlockContext& ctx, const MoeWeights& w, const float* x, float* out) {
  const ModelConfig& c = ctx.cfg;
  BlockScratch& s = ctx.scratch;
  const int64_t n = ctx.n_tok, h = c.hidden, n_exp = c.n_experts, top_k = c.n_experts_used, ef = c.expert_ffn;
  float* logits = Grow(s.router, n * n_exp);
  int32_t* chosen = Grow(s.chosen, n * top_k);
  float* weights = Grow(s.weights, n * top_k);
  MatMul(w.router, x, n, logits, ctx.pool);
  std::vector<int32_t> order(static_cast<size_t>(n_exp));
  for (int64_t t = 0; t < n; ++t) {
    float* p = logits + t * n_exp;
    Softmax(p, n_exp);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) sum += p[order[j]];
    for (int64_t j = 0; j < top_k; ++j) {
      chosen[t * top_k + j] = order[j];
      weights[t * top_k + j] = c.expert_weights_norm ? p[order[j]] / sum : p[order[j]];
    }
  }
  std::fill(out, out + n * h, 0.0f);
  std::vector<int64_t>& rows = s.rows_of_expert;
  for (int32_t e = 0; e < n_exp; ++e) {
    rows.clear();  // (token, slot) pairs as t * top_k + j
    for (int64_t i = 0; i < n * top_k; ++i)
      if (chosen[i] == e) rows.push_back(i);
    if (rows.empty()) continue;
    const int64_t m = static_cast<int64_t>(rows.size());
    float* ex = Grow(s.expert_x, m * h);
    float* eg = Grow(s.expert_gate, m * ef);
    float* eu = Grow(s.expert_up, m * ef);
    float* eo = Grow(s.expert_out, m * h);
    for (int64_t r = 0; r < m; ++r) std::memcpy(ex + r * h, x + (rows[r] / top_k) * h, sizeof(float) * h);
    MatMul(w.gate[e], ex, m, eg, ctx.pool);
    MatMul(w.up[e], ex, m, eu, ctx.pool);
    SiluMul(eg, eu, eg, m * ef);
    MatMul(w.down[e], eg, m, eo, ctx.pool);
    for (int64_t r = 0; r < m; ++r) {
      const float wt = weights[rows[r]];
      float* o = out + (rows[r] / top_k) * h;
      const float* y = eo + r * h;
      for (int64_t i = 0; i < h; ++i) o[i] += y[i] * wt;
    }
  }
}

}  // namespace strata
