// SmolLM3 (HF "smollm3", GGUF "smollm3"): the llama-like decoder with NoPE
// layers (no rotary embedding in every 4th layer by default), tied
// embeddings, and YaRN for its long-context setting.
//
// Which layers use RoPE: transformers' SmolLM3 defines it. `no_rope_layers[i]
// == 1` means layer i APPLIES RoPE, 0 means NoPE. Without the list,
// `no_rope_layer_interval` (default 4) makes layers 3, 7, 11, ... NoPE;
// llama.cpp's GGUF carries no list and uses that rule.
#include "model/architecture.h"
#include "model/hparams.h"

namespace strata {
namespace {

constexpr int kDefaultNoRopeInterval = 4;

std::vector<bool> RopeLayersByInterval(int n_layers, int interval) {
  std::vector<bool> r(n_layers, true);
  for (int i = 0; i < n_layers; ++i) r[i] = (i + 1) % interval != 0;
  return r;
}

Result<ModelConfig> FromGguf(const GgufFile& file) {
  GgufHparams g(file, "smollm3");
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderGguf(g, "smollm3"));
  c.rope.layout = RopeLayout::kInterleaved;  // llama.cpp permutes attn_q / attn_k rows
  int interval = kDefaultNoRopeInterval;
  if (g.Has("no_rope_layer_interval")) {
    STRATA_ASSIGN_OR_RETURN(interval, g.Int("no_rope_layer_interval"));
    if (interval == 0 || interval > 4096)
      return g.Error("no_rope_layer_interval", std::to_string(interval) + " is out of range");
  }
  c.rope_layers = RopeLayersByInterval(c.n_layers, interval);
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> FromHf(const nlohmann::json& j, const std::string& path) {
  HfHparams h(j, path);
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, ReadDecoderHf(h, "smollm3"));
  STRATA_RETURN_IF_ERROR(ReadHfLayerTypes(h, /*allow_conv=*/false, /*window_applies=*/false, &c));
  // SmolLM3Config ties the embeddings unless told otherwise.
  STRATA_ASSIGN_OR_RETURN(c.tied_embeddings, h.Bool("tie_word_embeddings", true));
  STRATA_ASSIGN_OR_RETURN(bool attention_bias, h.Bool("attention_bias", false));
  c.qkv_bias = c.out_bias = attention_bias;
  STRATA_ASSIGN_OR_RETURN(c.mlp_bias, h.Bool("mlp_bias", false));
  if (auto it = j.find("no_rope_layers"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return h.Error("field 'no_rope_layers' is not a list");
    if (static_cast<int>(it->size()) != c.n_layers)
      return h.Error("'no_rope_layers' has " + std::to_string(it->size()) + " entries, expected " + std::to_string(c.n_layers) +
                     " (num_hidden_layers)");
    for (int i = 0; i < c.n_layers; ++i) {
      const auto& v = (*it)[i];
      // get<int64_t>, not get<int>: 2^32 + 1 must not pass as 1.
      if (!v.is_number_integer() || (v.get<int64_t>() != 0 && v.get<int64_t>() != 1))
        return h.Error("no_rope_layers[" + std::to_string(i) + "] must be 0 or 1");
      c.rope_layers[i] = v.get<int64_t>() == 1;
    }
  } else {
    int interval = kDefaultNoRopeInterval;
    if (auto iv = j.find("no_rope_layer_interval"); iv != j.end() && !iv->is_null()) {
      if (!iv->is_number_integer() || iv->get<int64_t>() <= 0 || iv->get<int64_t>() > 4096)
        return h.Error("field 'no_rope_layer_interval' must be a positive integer");
      interval = iv->get<int>();
    }
    c.rope_layers = RopeLayersByInterval(c.n_layers, interval);
  }
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

// llama.cpp's GGUF marks NoPE layers only by the fixed rule (every 4th
// layer); other patterns, and sliding windows, cannot be described.
Status WriteGguf(const ModelConfig& c, GgufWriter* w) {
  for (int i = 0; i < c.n_layers; ++i) {
    if (c.rope_layers[i] != ((i + 1) % kDefaultNoRopeInterval != 0))
      return Unimplemented("layer " + std::to_string(i) + (c.rope_layers[i] ? " uses" : " skips") +
                           " RoPE, which llama.cpp's GGUF for smollm3 cannot express");
    if (c.layer_window[i] != 0)
      return Unimplemented("layer " + std::to_string(i) + " has a sliding window, which llama.cpp's GGUF for smollm3 cannot express");
  }
  WriteDecoderGguf(c, "smollm3", w);
  return Status::Ok();
}

std::vector<TensorSpec> Table(const ModelConfig& c) { return DecoderTable(c, HfBlockNames{}); }

}  // namespace

const Architecture& SmolLM3Architecture() {
  static const Architecture a{"smollm3", "smollm3", "smollm3", FromGguf, FromHf, WriteGguf, Table, /*gguf_permutes_qk=*/true};
  return a;
}

}  // namespace strata
