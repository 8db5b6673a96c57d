// An opened model: a GGUF file or an HF directory (config.json +
// safetensors + tokenizer files), resolved into a ModelConfig and a checked
// tensor table. Runs on every rank; opening reads only headers, and a tensor's
// bytes are touched only when a stage loads it.
//
//   STRATA_ASSIGN_OR_RETURN(auto model, ModelFiles::Open(path));
//   STRATA_ASSIGN_OR_RETURN(WeightTensor q, model->Tensor("blk.3.attn_q.weight"));
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/architecture.h"
#include "model/gguf.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

namespace strata {

// A tensor's bytes in the mapping, shape in ggml order (ne[0] = row length).
// Usually contiguous at `data`; a stack of HF tensors (the experts of a
// mixture, one 2-D tensor each in the checkpoint) is a list of slices along
// the outermost dimension instead.
struct WeightTensor {
  std::string name;  // GGUF name ("blk.3.attn_q.weight"), whatever the file format
  TensorType type = TensorType::kF32;
  std::vector<int64_t> ne;
  const uint8_t* data = nullptr;        // contiguous tensors
  std::vector<const uint8_t*> slices;  // stacked ones: slice i of ne.back()
  uint64_t nbytes = 0;
  int64_t rows() const { return ne.size() > 1 ? ne[1] : 1; }
  int64_t row_length() const { return ne.empty() ? 0 : ne[0]; }
  // Rows over every dimension past the first.
  int64_t total_rows() const;
  // Start of row r (of total_rows()) whose stored size is row_bytes.
  const uint8_t* Row(int64_t r, uint64_t row_bytes) const;
  // Slice i of the outermost dimension (an expert's matrix) as a 2-D tensor.
  WeightTensor Slice(int64_t i, uint64_t row_bytes) const;
};

// An HF directory's hyper-parameters: `dir`/config.json resolved by its
// architecture, plus generation_config.json's eos ids when present. Also
// returns config.json re-serialized (for the fingerprint) when asked.
Result<ModelConfig> ReadHfConfig(const std::string& dir, std::string* config_text = nullptr);

// Rotary scaling chosen on the command line instead of the model's own
// (llama.cpp's --rope-scaling / --rope-scale / --yarn-orig-ctx).
struct RopeOverride {
  std::string scaling;   // "" = the model's own; "none" or "yarn"
  float factor = 0.0f;   // yarn: how many times the original context
  int original_ctx = 0;  // yarn: the context the model was trained at (0 = its context_length)
  bool active() const { return !scaling.empty(); }
};

class ModelFiles {
 public:
  enum class Format { kGguf, kHfDirectory };

  // `path`: a .gguf file or a directory with config.json. Validates the
  // header, the config and every tensor's presence, shape and type.
  static Result<std::unique_ptr<ModelFiles>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  Format format() const { return format_; }
  const char* format_name() const { return format_ == Format::kGguf ? "gguf" : "hf"; }
  const ModelConfig& config() const { return config_; }
  const std::vector<TensorSpec>& tensor_table() const { return table_; }
  const GgufFile* gguf() const { return gguf_.get(); }

  // A tensor of the table by GGUF name; NotFound when absent (an optional
  // tensor such as output.weight of a tied model).
  Result<WeightTensor> Tensor(const std::string& gguf_name) const;
  bool HasTensor(const std::string& gguf_name) const;
  // The tensor of a role (and layer, -1 for global ones) in the table;
  // NotFound when the table has none or the file lacks an optional one.
  Result<WeightTensor> TensorOf(TensorRole role, int layer = -1) const;
  bool HasRole(TensorRole role, int layer = -1) const;
  // Bytes of the weights of layer `i` (all its tensors), of the embedding and
  // of the lm_head (0 bytes when tied: it is the embedding).
  uint64_t LayerBytes(int layer) const;
  uint64_t EmbeddingBytes() const;
  uint64_t OutputBytes() const;

  // Replaces the model's rotary scaling (every rank applies the same one);
  // the trained context becomes original_ctx * factor. Errors name the flag.
  Status ApplyRopeOverride(const RopeOverride& o);

  Result<VocabSpec> LoadVocab() const;
  // The chat template the model ships (GGUF tokenizer.chat_template, or
  // chat_template.jinja / tokenizer_config.json's chat_template).
  std::optional<std::string> ChatTemplate() const;
  // Size of the model files plus a hash of their headers (metadata and tensor
  // table): equal fingerprints mean the same model on every rank.
  std::string Fingerprint() const;

 private:
  ModelFiles() = default;
  Status OpenGguf();
  Status OpenHfDirectory();
  Status CheckTensorTable();

  std::string path_;
  Format format_ = Format::kGguf;
  ModelConfig config_;
  std::vector<TensorSpec> table_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsModel> safetensors_;
  std::map<std::string, WeightTensor, std::less<>> tensors_;  // by GGUF name
  std::string fingerprint_;
};

}  // namespace strata
