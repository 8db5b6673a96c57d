// Mistral (HF "mistral"): the llama-like decoder with sliding-window
// attention on every layer (`sliding_window`; null = full attention).
//
// llama.cpp's converter writes Mistral as a "llama" GGUF without the window,
// so such a file runs as llama.cpp runs it: full attention (convert says so).
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {
namespace {

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "mistral"));
  STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/false, /*window_applies=*/true, &c));
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  WriteDecoderGguf(c, "llama", w);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& MistralArchitecture() {
  static const Architecture a{"mistral", "mistral", "llama", nullptr, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/true};
  return a;
}

}  // namespace strata
