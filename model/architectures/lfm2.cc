// LFM2 (HF "lfm2", GGUF "lfm2"): a hybrid of gated short-convolution layers
// and GQA attention layers (layer_types, or full_attn_idxs), each followed by
// a SwiGLU. The convolution layer: in_proj to (B, C, x), y = C * conv(B * x)
// with a depthwise causal convolution of conv_L_cache taps over the last
// tokens, then out_proj. Attention layers have per-head q / k RMSNorm
// (q_layernorm / k_layernorm) and NEOX rotary. The final norm is named
// embedding_norm (GGUF token_embd_norm) but applies after the last layer.
// The feed-forward width is adjusted from intermediate_size as transformers
// does (block_auto_adjust_ff_dim); llama.cpp's GGUF stores the result, and
// 0 kv heads for the convolution layers.
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {
namespace {

HfBlockNames Names() {
  HfBlockNames n;
  n.attn_norm = "operator_norm";
  n.o = "self_attn.out_proj";
  n.q_norm = "self_attn.q_layernorm";
  n.k_norm = "self_attn.k_layernorm";
  n.ffn_norm = "ffn_norm";
  n.gate = "feed_forward.w1";
  n.up = "feed_forward.w3";
  n.down = "feed_forward.w2";
  n.output_norm = "model.embedding_norm";
  n.output_norm_gguf = "token_embd_norm";
  return n;
}

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "lfm2");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "lfm2"));
  c.qk_norm = true;
  STRATA_ASSIGN_OR_RETURN(c.conv_kernel, g.Int("shortconv.l_cache"));
  // A layer with kv heads is an attention layer, one without a convolution.
  STRATA_ASSIGN_OR_RETURN(std::vector<int> kv, g.PerLayerInt("attention.head_count_kv", c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) c.layer_kinds[i] = kv[i] == 0 ? LayerKind::kShortConv : LayerKind::kAttention;
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;  // no attention layer at all
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "lfm2", "norm_eps"));
  c.qk_norm = true;
  STRATA_ASSIGN_OR_RETURN(c.tied_embeddings, h.Bool("tie_word_embeddings", true));
  STRATA_ASSIGN_OR_RETURN(c.conv_kernel, h.Int("conv_L_cache", 3));
  STRATA_ASSIGN_OR_RETURN(c.conv_bias, h.Bool("conv_bias", false));
  if (c.conv_bias) return h.Unsupported("conv_bias = true is not supported");
  if (h.Has("layer_types")) {
    STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/true, /*window_applies=*/false, &c));
  } else {
    auto it = j.find("full_attn_idxs");
    if (it == j.end() || !it->is_array()) return h.Error("needs 'layer_types' or 'full_attn_idxs'");
    c.layer_kinds.assign(static_cast<size_t>(c.n_layers), LayerKind::kShortConv);
    for (const auto& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.n_layers)
        return h.Error("full_attn_idxs holds " + v.dump() + ", not a layer index");
      c.layer_kinds[static_cast<size_t>(v.get<int64_t>())] = LayerKind::kAttention;
    }
  }
  // transformers' Lfm2MLP: 2/3 of intermediate_size, times the multiplier,
  // rounded up to a multiple of block_multiple_of.
  STRATA_ASSIGN_OR_RETURN(bool adjust, h.Bool("block_auto_adjust_ff_dim", false));
  if (adjust) {
    STRATA_ASSIGN_OR_RETURN(double multiplier, h.Float("block_ffn_dim_multiplier", 1.0));
    STRATA_ASSIGN_OR_RETURN(int multiple_of, h.Int("block_multiple_of", 256));
    if (!(multiplier > 0) || multiplier > 1e3 || multiple_of <= 0) return h.Error("block_ffn_dim_multiplier / block_multiple_of out of range");
    int64_t ff = 2 * static_cast<int64_t>(c.ffn) / 3;
    ff = static_cast<int64_t>(multiplier * static_cast<double>(ff));
    c.ffn = static_cast<int>((ff + multiple_of - 1) / multiple_of * multiple_of);
  }
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  for (int window : c.layer_window)
    if (window != 0) return Unimplemented("a sliding window cannot be expressed in llama.cpp's GGUF for lfm2");
  w->SetU32("lfm2.block_count", c.n_layers);
  w->SetU32("lfm2.context_length", c.n_ctx_train);
  w->SetU32("lfm2.embedding_length", c.hidden);
  w->SetU32("lfm2.feed_forward_length", c.ffn);
  w->SetU32("lfm2.attention.head_count", c.n_heads);
  std::vector<int32_t> kv;
  for (LayerKind k : c.layer_kinds) kv.push_back(k == LayerKind::kAttention ? c.n_kv_heads : 0);
  w->SetI32Array("lfm2.attention.head_count_kv", kv);
  w->SetF32("lfm2.rope.freq_base", c.rope.theta);
  w->SetF32("lfm2.attention.layer_norm_rms_epsilon", c.rms_eps);
  w->SetU32("lfm2.vocab_size", c.vocab);
  w->SetU32("lfm2.shortconv.l_cache", c.conv_kernel);
  if (c.rope.scaling != RopeScaling::kNone) return Unimplemented("rope scaling cannot be expressed in llama.cpp's GGUF for lfm2");
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, Names()); }

}  // namespace

const Architecture& Lfm2Architecture() {
  static const Architecture a{"lfm2", "lfm2", "lfm2", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/false};
  return a;
}

}  // namespace strata
