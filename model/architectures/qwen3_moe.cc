// Qwen3-MoE (HF "qwen3_moe", GGUF "qwen3moe"): Qwen3's attention with a
// mixture of SwiGLU experts in every layer: softmax over all experts' router
// logits, the top-k kept and, with norm_topk_prob (as in the released
// models; llama.cpp always does it), renormalized to sum to 1.
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {

Status ReadQwenWindows(const HfHparams& h, ModelConfig* c);
Status RefuseWindows(const ModelConfig& c, const char* gguf_arch);

namespace {

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "qwen3moe");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "qwen3moe"));
  c.qk_norm = true;
  STRATA_ASSIGN_OR_RETURN(c.n_experts, g.Int("expert_count"));
  STRATA_ASSIGN_OR_RETURN(c.n_experts_used, g.Int("expert_used_count"));
  STRATA_ASSIGN_OR_RETURN(c.expert_ffn, g.Int("expert_feed_forward_length"));
  STRATA_ASSIGN_OR_RETURN(c.expert_weights_norm, g.BoolOr("expert_weights_norm", true));
  if (c.n_experts == 0) return g.Error("expert_count", "is 0");
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "qwen3moe"));
  STRATA_RETURN_IF_ERROR(ReadQwenWindows(h, &c));
  c.qk_norm = true;
  STRATA_ASSIGN_OR_RETURN(bool attention_bias, h.Bool("attention_bias", false));
  c.qkv_bias = c.out_bias = attention_bias;
  STRATA_ASSIGN_OR_RETURN(c.n_experts, h.Int("num_experts"));
  STRATA_ASSIGN_OR_RETURN(c.n_experts_used, h.Int("num_experts_per_tok"));
  STRATA_ASSIGN_OR_RETURN(c.expert_ffn, h.Int("moe_intermediate_size"));
  STRATA_ASSIGN_OR_RETURN(c.expert_weights_norm, h.Bool("norm_topk_prob", false));
  if (c.n_experts == 0) return h.Error("num_experts is 0");
  // Dense layers between the sparse ones would need a per-layer feed-forward kind.
  STRATA_ASSIGN_OR_RETURN(int sparse_step, h.Int("decoder_sparse_step", 1));
  if (sparse_step != 1) return h.Unsupported("decoder_sparse_step " + std::to_string(sparse_step) + " is not supported (1 only)");
  if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null() && !(it->is_array() && it->empty()))
    return h.Unsupported("mlp_only_layers (dense layers among the experts) is not supported");
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  STRATA_RETURN_IF_ERROR(RefuseWindows(c, "qwen3moe"));
  if (!c.expert_weights_norm)
    return Unimplemented("norm_topk_prob = false cannot be expressed in llama.cpp's GGUF for qwen3moe (it always renormalizes)");
  WriteDecoderGguf(c, "qwen3moe", w);
  w->SetU32("qwen3moe.expert_count", c.n_experts);
  w->SetU32("qwen3moe.expert_used_count", c.n_experts_used);
  w->SetU32("qwen3moe.expert_feed_forward_length", c.expert_ffn);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& Qwen3MoeArchitecture() {
  static const Architecture a{"qwen3moe", "qwen3_moe", "qwen3moe", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/false};
  return a;
}

}  // namespace strata
