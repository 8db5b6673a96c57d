// Opening a model (GGUF file or HF directory) on any rank: header-only
// validation of config and tensor table; tensor bytes stay untouched until a
// stage asks for them.
#include "model/model_files.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/hparams.h"
#include "model/untrusted_json.h"

namespace strata {
namespace {

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads a whole (small) text file.
Result<std::string> ReadText(const std::string& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open '" + path + "'");
  in.seekg(0, std::ios::end);
  auto size = static_cast<uint64_t>(in.tellg());
  if (size > max_bytes) return DataLoss("'" + path + "' is " + std::to_string(size) + " bytes, more than the limit of " + std::to_string(max_bytes));
  in.seekg(0);
  std::string s(size, '\0');
  in.read(s.data(), static_cast<std::streamsize>(size));
  if (!in) return IoError("cannot read '" + path + "'");
  return s;
}

// FNV-1a 64, enough to tell two model files apart.
uint64_t Fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string ShapeText(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? "," : "") + std::to_string(ne[i]);
  return s + "]";
}

// Shapes compare equal when they differ only by dimensions of 1, which never
// change the memory layout (HF keeps Conv1d's [hidden, 1, kernel]).
bool SameShape(std::vector<int64_t> a, std::vector<int64_t> b) {
  std::erase(a, 1);
  std::erase(b, 1);
  return a == b;
}

}  // namespace

Result<std::unique_ptr<ModelFiles>> ModelFiles::Open(const std::string& path) {
  std::unique_ptr<ModelFiles> m(new ModelFiles());
  m->path_ = path;
  if (IsDirectory(path)) {
    m->format_ = Format::kHfDirectory;
    STRATA_RETURN_IF_ERROR(m->OpenHfDirectory());
  } else if (IsFile(path)) {
    m->format_ = Format::kGguf;
    STRATA_RETURN_IF_ERROR(m->OpenGguf());
  } else {
    return NotFound("model '" + path + "' does not exist (expected a .gguf file or an HF model directory)");
  }
  STRATA_RETURN_IF_ERROR(m->CheckTensorTable());
  return m;
}

Status ModelFiles::OpenGguf() {
  STRATA_ASSIGN_OR_RETURN(gguf_, GgufFile::Open(path_));
  auto arch = gguf_->GetString("general.architecture");
  if (!arch.ok()) return DataLoss("GGUF file '" + path_ + "': no general.architecture");
  const Architecture* a = FindArchitectureByGgufName(*arch);
  if (a == nullptr)
    return Unimplemented("GGUF file '" + path_ + "': architecture '" + *arch + "' is not supported (strata runs " +
                         SupportedArchitectures() + ")");
  STRATA_ASSIGN_OR_RETURN(config_, a->config_from_gguf(*gguf_));
  for (const GgufTensor& t : gguf_->tensors()) {
    WeightTensor w;
    w.name = std::string(t.name);
    w.type = t.type;
    w.ne.assign(t.ne, t.ne + t.n_dims);
    w.data = t.data;
    w.nbytes = t.nbytes;
    tensors_.emplace(w.name, std::move(w));
  }
  fingerprint_ = std::to_string(gguf_->file_size()) + "-" + [&] {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(Fnv1a(gguf_->header_bytes(), gguf_->data_offset())));
    return std::string(buf);
  }();
  return Status::Ok();
}

Result<ModelConfig> ReadHfConfig(const std::string& dir, std::string* config_text) {
  const std::string config_path = dir + "/config.json";
  if (!IsFile(config_path)) return NotFound("model directory '" + dir + "' has no config.json");
  STRATA_ASSIGN_OR_RETURN(nlohmann::json cfg, ReadUntrustedJsonFile(config_path, "config"));
  auto mt = cfg.find("model_type");
  if (mt == cfg.end() || !mt->is_string()) return DataLoss("config '" + config_path + "': missing string field 'model_type'");
  const Architecture* a = FindArchitectureByHfType(mt->get<std::string>());
  if (a == nullptr)
    return Unimplemented("config '" + config_path + "': model_type '" + mt->get<std::string>() + "' is not supported (strata runs " +
                         SupportedArchitectures() + ")");
  STRATA_ASSIGN_OR_RETURN(ModelConfig config, a->config_from_hf(cfg, config_path));
  const std::string gen_path = dir + "/generation_config.json";
  if (IsFile(gen_path)) {
    STRATA_ASSIGN_OR_RETURN(nlohmann::json gen, ReadUntrustedJsonFile(gen_path, "generation config"));
    STRATA_RETURN_IF_ERROR(AddGenerationConfigEos(gen, gen_path, &config.eos_ids));
    STRATA_RETURN_IF_ERROR(config.Validate("generation config '" + gen_path + "'"));
  }
  if (config_text) *config_text = cfg.dump();  // depth bounded by ReadUntrustedJsonFile
  return config;
}

Status ModelFiles::OpenHfDirectory() {
  std::string config_text;
  STRATA_ASSIGN_OR_RETURN(config_, ReadHfConfig(path_, &config_text));
  STRATA_ASSIGN_OR_RETURN(safetensors_, SafetensorsModel::OpenDir(path_));
  // Map HF names to the table's GGUF names (an expert's tensor to its slice
  // of a stacked one); safetensors shapes are row-major (outermost first),
  // ggml's are innermost first.
  struct Target {
    std::string gguf_name;
    int part = -1;  // slice index of a stacked tensor
    int n_parts = 0;
  };
  std::map<std::string, Target> hf_to_gguf;
  for (const TensorSpec& s : TensorTableOf(config_)) {
    if (s.hf_parts.empty()) {
      if (!s.hf_name.empty()) hf_to_gguf[s.hf_name] = {s.gguf_name};
      continue;
    }
    for (size_t i = 0; i < s.hf_parts.size(); ++i)
      hf_to_gguf[s.hf_parts[i]] = {s.gguf_name, static_cast<int>(i), static_cast<int>(s.hf_parts.size())};
  }
  uint64_t h = Fnv1a(config_text.data(), config_text.size());
  uint64_t total = 0;
  std::map<std::string, std::vector<const SafetensorsTensor*>> stacks;  // GGUF name -> parts in order
  for (const SafetensorsTensor& t : safetensors_->tensors()) {
    auto it = hf_to_gguf.find(t.name);
    total += t.nbytes;
    std::string desc = t.name + ":" + TypeName(t.type) + ShapeText(t.shape);
    h = Fnv1a(desc.data(), desc.size(), h);
    if (it != hf_to_gguf.end() && it->second.part >= 0) {
      auto& parts = stacks[it->second.gguf_name];
      parts.resize(static_cast<size_t>(it->second.n_parts), nullptr);
      parts[static_cast<size_t>(it->second.part)] = &t;
      continue;
    }
    std::string name = it != hf_to_gguf.end() ? it->second.gguf_name : t.name;
    WeightTensor w;
    w.name = name;
    w.type = t.type;
    w.ne.assign(t.shape.rbegin(), t.shape.rend());
    w.data = t.data;
    w.nbytes = t.nbytes;
    // A checkpoint could hold both an HF name and the GGUF name it maps to
    // ("model.norm.weight" and "output_norm.weight"): which one is used must
    // not depend on the order of a map, so such a file is refused.
    if (!tensors_.emplace(name, std::move(w)).second)
      return DataLoss("model directory '" + path_ + "': tensors '" + t.name + "' and '" + name +
                      "' are the same weight under two names");
  }
  // Stacked tensors: every part present, all of one type and shape.
  for (const auto& [name, parts] : stacks) {
    const SafetensorsTensor* first = nullptr;
    WeightTensor w;
    w.name = name;
    for (size_t i = 0; i < parts.size(); ++i) {
      const SafetensorsTensor* p = parts[i];
      if (p == nullptr) {
        for (const auto& [hf, target] : hf_to_gguf)
          if (target.gguf_name == name && target.part == static_cast<int>(i))
            return DataLoss("model directory '" + path_ + "': required tensor '" + hf + "' is missing");
        return DataLoss("model directory '" + path_ + "': a part of tensor '" + name + "' is missing");
      }
      if (first == nullptr) {
        first = p;
        w.type = p->type;
        w.ne.assign(p->shape.rbegin(), p->shape.rend());
      } else if (p->type != first->type || p->shape != first->shape) {
        return DataLoss("model directory '" + path_ + "': tensor '" + p->name + "' (" + TypeName(p->type) + ShapeText(p->shape) +
                        ") differs from '" + first->name + "' (" + TypeName(first->type) + ShapeText(first->shape) +
                        "), which it is stacked with");
      }
      w.slices.push_back(p->data);
      w.nbytes += p->nbytes;
    }
    w.ne.push_back(static_cast<int64_t>(parts.size()));
    if (tensors_.count(name)) return DataLoss("model directory '" + path_ + "': tensor '" + name + "' appears twice");
    tensors_.emplace(name, std::move(w));
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  fingerprint_ = std::to_string(total) + "-" + buf;
  return Status::Ok();
}

Status ModelFiles::CheckTensorTable() {
  table_ = TensorTableOf(config_);
  const std::string where = format_ == Format::kGguf ? "GGUF file '" + path_ + "'" : "model directory '" + path_ + "'";
  std::set<std::string, std::less<>> expected;
  for (const TensorSpec& s : table_) {
    expected.insert(s.gguf_name);
    auto it = tensors_.find(s.gguf_name);
    const std::string shown = format_ == Format::kGguf  ? s.gguf_name
                              : s.hf_parts.empty()    ? s.hf_name
                                                      : s.hf_parts.front() + " (and the other experts)";
    if (it == tensors_.end()) {
      if (s.required) return DataLoss(where + ": required tensor '" + shown + "' is missing");
      continue;
    }
    WeightTensor& w = it->second;
    if (!SameShape(w.ne, s.ne)) {
      std::vector<int64_t> got = w.ne, want = s.ne;
      if (format_ == Format::kHfDirectory) {  // show HF's own (row-major) order
        got.assign(w.ne.rbegin(), w.ne.rend());
        want.assign(s.ne.rbegin(), s.ne.rend());
      }
      return DataLoss(where + ": tensor '" + shown + "': shape " + ShapeText(got) + ", expected " + ShapeText(want) +
                      " from the model's hyper-parameters");
    }
    if (!Traits(w.type).computable)
      return Unimplemented(where + ": tensor '" + shown + "' has type " + TypeName(w.type) + ", which strata cannot compute");
    w.ne = s.ne;  // the table's form of an equal shape ([kernel, 1, hidden] -> [kernel, hidden])
    if (!w.slices.empty() && w.ne.size() != 3)
      return DataLoss(where + ": tensor '" + shown + "' is stacked from parts but is not 3-D");
  }
  for (const auto& [name, w] : tensors_) {
    if (expected.count(name)) continue;
    // Buffers some exporters leave in checkpoints; they carry no weights we use.
    if (name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0) continue;
    return DataLoss(where + ": unexpected tensor '" + name + "' (not part of a " + config_.arch + " model of this shape)");
  }
  return Status::Ok();
}

int64_t WeightTensor::total_rows() const {
  int64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
  return rows;
}

const uint8_t* WeightTensor::Row(int64_t r, uint64_t row_bytes) const {
  if (slices.empty()) return data + static_cast<uint64_t>(r) * row_bytes;
  const int64_t per_slice = total_rows() / static_cast<int64_t>(slices.size());
  return slices[static_cast<size_t>(r / per_slice)] + static_cast<uint64_t>(r % per_slice) * row_bytes;
}

WeightTensor WeightTensor::Slice(int64_t i, uint64_t row_bytes) const {
  WeightTensor s;
  s.name = name + "[" + std::to_string(i) + "]";
  s.type = type;
  s.ne.assign(ne.begin(), ne.end() - 1);
  const int64_t rows = s.total_rows();
  s.data = Row(i * rows, row_bytes);
  s.nbytes = static_cast<uint64_t>(rows) * row_bytes;
  return s;
}

Result<WeightTensor> ModelFiles::TensorOf(TensorRole role, int layer) const {
  for (const TensorSpec& s : table_)
    if (s.role == role && s.layer == layer) return Tensor(s.gguf_name);
  return NotFound("model '" + path_ + "': no " + TensorRoleName(role) + " tensor" +
                  (layer >= 0 ? " in layer " + std::to_string(layer) : std::string()));
}

bool ModelFiles::HasRole(TensorRole role, int layer) const { return TensorOf(role, layer).ok(); }

Result<WeightTensor> ModelFiles::Tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFound("model '" + path_ + "': no tensor '" + name + "'");
  return it->second;
}

bool ModelFiles::HasTensor(const std::string& name) const { return tensors_.count(name) != 0; }

uint64_t ModelFiles::LayerBytes(int layer) const {
  uint64_t total = 0;
  for (const TensorSpec& s : table_)
    if (s.layer == layer)
      if (auto it = tensors_.find(s.gguf_name); it != tensors_.end()) total += it->second.nbytes;
  return total;
}

uint64_t ModelFiles::EmbeddingBytes() const {
  auto t = TensorOf(TensorRole::kTokenEmbedding);
  return t.ok() ? t->nbytes : 0;
}

uint64_t ModelFiles::OutputBytes() const {
  if (config_.tied_embeddings) return 0;
  auto t = TensorOf(TensorRole::kOutput);
  return t.ok() ? t->nbytes : 0;
}

Status ModelFiles::ApplyRopeOverride(const RopeOverride& o) {
  if (!o.active()) return Status::Ok();
  ModelConfig c = config_;
  if (o.scaling == "none") {
    c.rope.scaling = RopeScaling::kNone;
  } else if (o.scaling == "yarn") {
    if (o.factor == 0.0f) return InvalidArgument("--rope-scaling yarn needs --rope-scale F (the factor the context grows by)");
    if (!(o.factor > 0.0f) || !std::isfinite(o.factor) || o.factor > 1e4)
      return InvalidArgument("--rope-scale " + std::to_string(o.factor) + ": a YaRN factor must be positive (and at most 1e4)");
    if (o.original_ctx < 0) return InvalidArgument("--yarn-orig-ctx " + std::to_string(o.original_ctx) + " must be positive");
    c.rope.scaling = RopeScaling::kYarn;
    c.rope.factor = o.factor;
    c.rope.original_ctx = o.original_ctx > 0 ? o.original_ctx : config_.n_ctx_train;
    c.rope.beta_fast = 32.0f;
    c.rope.beta_slow = 1.0f;
    c.rope.attention_factor = YarnAttentionFactor(o.factor, std::nullopt, std::nullopt);
    c.rope.freq_factors.clear();
    c.n_ctx_train = static_cast<int>(std::min<double>(static_cast<double>(c.rope.original_ctx) * o.factor, 1 << 30));
  } else {
    return InvalidArgument("--rope-scaling '" + o.scaling + "': expected none or yarn");
  }
  STRATA_RETURN_IF_ERROR(c.Validate("model '" + path_ + "' with --rope-scaling " + o.scaling));
  config_ = std::move(c);
  return Status::Ok();
}

Result<VocabSpec> ModelFiles::LoadVocab() const {
  if (format_ == Format::kGguf) return LoadVocabFromGguf(*gguf_);
  return LoadVocabFromTokenizerJson(path_);
}

std::optional<std::string> ModelFiles::ChatTemplate() const {
  if (format_ == Format::kGguf) {
    auto t = gguf_->GetString("tokenizer.chat_template");
    if (t.ok()) return *t;
    return std::nullopt;
  }
  if (auto t = ReadText(path_ + "/chat_template.jinja", 1u << 20); t.ok()) return *t;
  if (auto j = ReadUntrustedJsonFile(path_ + "/tokenizer_config.json", "tokenizer config"); j.ok()) {
    auto it = j->find("chat_template");
    if (it != j->end() && it->is_string()) return it->get<std::string>();
  }
  return std::nullopt;
}

std::string ModelFiles::Fingerprint() const { return fingerprint_; }

}  // namespace strata
