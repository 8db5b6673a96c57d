// Qwen2 (HF "qwen2", GGUF "qwen2"): the llama-like decoder with biases on the
// q / k / v projections (not on o), NEOX rotary (llama.cpp keeps HF's row
// order), and optional sliding windows (layer_types, or use_sliding_window on
// the layers from max_window_layers on).
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {

// Qwen's sliding windows: layer_types when given, else use_sliding_window
// with max_window_layers (qwen3.cc and qwen3_moe.cc use it too).
Status ReadQwenWindows(const HfHparams& h, ModelConfig* c) {
  STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/false, /*window_applies=*/false, c));
  STRATA_ASSIGN_OR_RETURN(bool use_sliding, h.Bool("use_sliding_window", false));
  if (!use_sliding || h.Has("layer_types")) return Status::Ok();
  STRATA_ASSIGN_OR_RETURN(int window, h.Int("sliding_window"));
  STRATA_ASSIGN_OR_RETURN(int from, h.Int("max_window_layers", 0));
  if (window <= 0) return h.Error("sliding_window must be positive");
  for (int i = from; i < c->n_layers; ++i) c->layer_window[i] = window;
  return Status::Ok();
}

Status RefuseWindows(const ModelConfig& c, const char* gguf_arch) {
  for (int window : c.layer_window)
    if (window != 0) return Unimplemented(std::string("a sliding window cannot be expressed in llama.cpp's GGUF for ") + gguf_arch);
  return Status::Ok();
}

namespace {

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "qwen2");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "qwen2"));
  c.qkv_bias = true;
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "qwen2"));
  STRATA_RETURN_IF_ERROR(ReadQwenWindows(h, &c));
  c.qkv_bias = true;
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  STRATA_RETURN_IF_ERROR(RefuseWindows(c, "qwen2"));
  WriteDecoderGguf(c, "qwen2", w);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& Qwen2Architecture() {
  static const Architecture a{"qwen2", "qwen2", "qwen2", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/false};
  return a;
}

}  // namespace strata
