// Mixtral (HF "mixtral"; GGUF "llama" with <arch>.expert_count, as llama.cpp
// writes it): the Mistral decoder whose feed-forward is a mixture of SwiGLU
// experts. A router scores every expert per token; the top-k (softmax over
// all, the k largest renormalized to sum to 1 -- the softmax over the chosen
// logits, as transformers computes it) are run and summed with those weights.
// GGUF stacks the experts into 3-D tensors ffn_{gate,up,down}_exps; HF keeps
// block_sparse_moe.experts.<e>.w1 (gate), w3 (up), w2 (down).
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {

// Called by llama.cc's reader for a "llama" GGUF with experts.
Result<ModelConfig> MixtralConfigFromLlamaGguf(const GgufFile& file, ModelConfig c) {
  GgufHparams g(file, "llama");
  c.arch = "mixtral";
  STRATA_ASSIGN_OR_RETURN(c.n_experts, g.Int("expert_count"));
  STRATA_ASSIGN_OR_RETURN(c.n_experts_used, g.Int("expert_used_count"));
  c.expert_ffn = c.ffn;
  if (c.n_experts == 0) return g.Error("expert_count", "is 0");
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

namespace {

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "mixtral"));
  STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/false, /*window_applies=*/true, &c));
  STRATA_ASSIGN_OR_RETURN(c.n_experts, h.Int("num_local_experts"));
  STRATA_ASSIGN_OR_RETURN(c.n_experts_used, h.Int("num_experts_per_tok"));
  if (c.n_experts == 0) return h.Error("num_local_experts is 0");
  c.expert_ffn = c.ffn;
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  WriteDecoderGguf(c, "llama", w);
  w->SetU32("llama.expert_count", c.n_experts);
  w->SetU32("llama.expert_used_count", c.n_experts_used);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) {
  HfBlockNames n;
  n.router = "block_sparse_moe.gate";
  n.experts = "block_sparse_moe.experts";
  n.expert_gate = "w1";
  n.expert_up = "w3";
  n.expert_down = "w2";
  return DecoderTable(c, n);
}

}  // namespace

const Architecture& MixtralArchitecture() {
  static const Architecture a{"mixtral", "mixtral", "llama", nullptr, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/true};
  return a;
}

}  // namespace strata
