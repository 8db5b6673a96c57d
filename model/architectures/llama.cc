// Llama 1/2/3 (HF model_type "llama", GGUF "llama"): the llama-like decoder
// with RoPE in every layer; Llama 3.1+ rope scaling ("llama3": from
// config.json, or llama.cpp's rope_freqs.weight divisors in a GGUF);
// attention_bias (q/k/v/o) and mlp_bias (gate/up/down).
//
// A GGUF "llama" file with <arch>.expert_count is Mixtral (llama.cpp writes it
// so): it is read here and becomes the "mixtral" architecture (mixtral.cc).
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {

Result<ModelConfig> MixtralConfigFromLlamaGguf(const GgufFile& file, ModelConfig c);

namespace {

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "llama");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "llama"));
  // llama.cpp's converter permutes attn_q / attn_k rows so that rotary pairs are adjacent.
  c.rope.layout = RopeLayout::kInterleaved;
  if (g.Has("expert_count")) return MixtralConfigFromLlamaGguf(file, std::move(c));
  c.qkv_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.out_bias = file.FindTensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = file.FindTensor("blk.0.ffn_gate.bias") != nullptr;
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "llama"));
  STRATA_ASSIGN_OR_RETURN(bool attention_bias, h.Bool("attention_bias", false));
  c.qkv_bias = c.out_bias = attention_bias;
  STRATA_ASSIGN_OR_RETURN(c.mlp_bias, h.Bool("mlp_bias", false));
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  WriteDecoderGguf(c, "llama", w);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& LlamaArchitecture() {
  static const Architecture a{"llama", "llama", "llama", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/true};
  return a;
}

}  // namespace strata
