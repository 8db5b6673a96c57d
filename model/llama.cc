// Llama (1/2/3 without rope scaling): the same decoder recipe as SmolLM3 with
// RoPE in every layer and, usually, an untied lm_head.
#include <nlohmann/json.hpp>

#include "model/architecture.h"

namespace strata {

Result<ModelConfig> LlamaConfigFromGguf(const GgufFile& file) {
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, LlamaFamilyConfigFromGguf(file, "llama"));
  STRATA_RETURN_IF_ERROR(c.Validate("GGUF file '" + file.path() + "'"));
  return c;
}

Result<ModelConfig> LlamaConfigFromHf(const nlohmann::json& j, const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(ModelConfig c, LlamaFamilyConfigFromHf(j, path, "llama"));
  STRATA_RETURN_IF_ERROR(c.Validate("config '" + path + "'"));
  return c;
}

}  // namespace strata
