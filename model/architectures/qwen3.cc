// Qwen3 (HF "qwen3", GGUF "qwen3"): the llama-like decoder with an explicit
// head_dim (q width need not equal hidden), a per-head RMSNorm of q and k
// before RoPE (q_norm / k_norm over head_dim), NEOX rotary, attention_bias.
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {

Status ReadQwenWindows(const HfHparams& h, ModelConfig* c);
Status RefuseWindows(const ModelConfig& c, const char* gguf_arch);

namespace {

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "qwen3");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "qwen3"));
  c.qk_norm = true;
  c.qkv_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.out_bias = file.FindTensor("blk.0.attn_output.bias") != nullptr;
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "qwen3"));
  STRATA_RETURN_IF_ERROR(ReadQwenWindows(h, &c));
  c.qk_norm = true;
  STRATA_ASSIGN_OR_RETURN(bool attention_bias, h.Bool("attention_bias", false));
  c.qkv_bias = c.out_bias = attention_bias;
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  STRATA_RETURN_IF_ERROR(RefuseWindows(c, "qwen3"));
  WriteDecoderGguf(c, "qwen3", w);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& Qwen3Architecture() {
  static const Architecture a{"qwen3", "qwen3", "qwen3", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/false};
  return a;
}

}  // namespace strata
