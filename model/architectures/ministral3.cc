// Ministral 3 (HF "ministral3", GGUF "mistral3"): the Mistral decoder with
// YaRN rope scaling (factor, original context, beta_fast / beta_slow,
// mscale) and Llama 4's attention temperature: q *= 1 + beta * log(1 +
// floor(pos / original context)) (rope_parameters.llama_4_scaling_beta; GGUF
// attention.temperature_scale).
#include <cmath>

#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {
namespace {

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "mistral3");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "ministral3"));
  c.rope.layout = RopeLayout::kInterleaved;  // llama.cpp permutes attn_q / attn_k rows
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "ministral3"));
  STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/false, /*window_applies=*/true, &c));
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  for (int window : c.layer_window)
    if (window != 0) return Unimplemented("a sliding window cannot be expressed in llama.cpp's GGUF for mistral3");
  WriteDecoderGguf(c, "mistral3", w);
  if (c.rope.scaling == RopeScaling::kYarn) {
    // llama.cpp's reader takes yarn_log_multiplier as both mscale and
    // mscale_all_dim (an attention factor of 1); without it, YaRN's default.
    const float plain = YarnAttentionFactor(c.rope.factor, std::nullopt, std::nullopt);
    if (c.rope.attention_factor == 1.0f)
      w->SetF32("mistral3.rope.scaling.yarn_log_multiplier", 1.0f);
    else if (c.rope.attention_factor != plain)
      return Unimplemented("a YaRN attention factor of " + std::to_string(c.rope.attention_factor) +
                           " cannot be expressed in llama.cpp's GGUF for mistral3");
  }
  if (c.attn_temperature_beta != 0.0f) {
    if (c.attn_temperature_length != c.rope.original_ctx)
      return Unimplemented("an attention temperature length other than the original context cannot be expressed in llama.cpp's GGUF");
    w->SetF32("mistral3.attention.temperature_scale", c.attn_temperature_beta);
  }
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& Ministral3Architecture() {
  static const Architecture a{"ministral3", "ministral3", "mistral3", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/true};
  return a;
}

}  // namespace strata
