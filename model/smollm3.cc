// SmolLM3: the llama decoder with NoPE layers (no rotary embedding in every
// 4th layer by default) and tied embeddings. Hyper-parameters from GGUF
// ("smollm3.*" keys) or HF config.json.
//
// Which layers use RoPE: transformers' SmolLM3 defines it. `no_rope_layers[i]
// == 1` means layer i APPLIES RoPE, 0 means NoPE. Without the list,
// `no_rope_layer_interval` (default 4) makes layers 3, 7, 11, ... NoPE;
// llama.cpp's GGUF carries no list and uses that rule.
#include <nlohmann/json.hpp>

#include "model/architecture.h"

namespace strata {
namespace {

constexpr int kDefaultNoRopeInterval = 4;

std::vector<bool> RopeLayersByInterval(int n_layers, int interval) {
  std::vector<bool> r(n_layers, true);
  for (int i = 0; i < n_layers; ++i) r[i] = (i + 1) % interval != 0;
  return r;
}

}  // namespace

Result<ModelConfig> Smollm3ConfigFromGguf(const GgufFile& file) {
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, LlamaFamilyConfigFromGguf(file, "smollm3"));
  int interval = kDefaultNoRopeInterval;
  if (file.Find("smollm3.no_rope_layer_interval")) {
    STRATA_ASSIGN_OR_RETURN(uint64_t v, file.GetUint("smollm3.no_rope_layer_interval"));
    if (v == 0 || v > 4096) return DataLoss("GGUF file '" + file.path() + "': smollm3.no_rope_layer_interval " + std::to_string(v) + " is out of range");
    interval = static_cast<int>(v);
  }
  c.rope_layers = RopeLayersByInterval(c.n_layers, interval);
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> Smollm3ConfigFromHf(const nlohmann::json& j, const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, LlamaFamilyConfigFromHf(j, path, "smollm3"));
  // SmolLM3Config ties the embeddings unless told otherwise.
  if (!j.contains("tie_word_embeddings")) c.tied_embeddings = true;
  if (auto it = j.find("no_rope_layers"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return DataLoss("config '" + path + "': field 'no_rope_layers' is not a list");
    if (static_cast<int>(it->size()) != c.n_layers)
      return DataLoss("config '" + path + "': 'no_rope_layers' has " + std::to_string(it->size()) + " entries, expected " +
                      std::to_string(c.n_layers) + " (num_hidden_layers)");
    for (int i = 0; i < c.n_layers; ++i) {
      const auto& v = (*it)[i];
      // get<int64_t>, not get<int>: 2^32 + 1 must not pass as 1.
      if (!v.is_number_integer() || (v.get<int64_t>() != 0 && v.get<int64_t>() != 1))
        return DataLoss("config '" + path + "': no_rope_layers[" + std::to_string(i) + "] must be 0 or 1");
      c.rope_layers[i] = v.get<int64_t>() == 1;
    }
  } else {
    int interval = kDefaultNoRopeInterval;
    if (auto iv = j.find("no_rope_layer_interval"); iv != j.end() && !iv->is_null()) {
      if (!iv->is_number_integer() || iv->get<int64_t>() <= 0 || iv->get<int64_t>() > 4096)
        return DataLoss("config '" + path + "': field 'no_rope_layer_interval' must be a positive integer");
      interval = iv->get<int>();
    }
    c.rope_layers = RopeLayersByInterval(c.n_layers, interval);
  }
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

}  // namespace strata
