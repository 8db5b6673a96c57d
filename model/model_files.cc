// Opening a model (GGUF file or HF directory) on any rank: header-only
// validation of config and tensor table; tensor bytes stay untouched until a
// stage asks for them.
#include "model/model_files.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

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

// Shapes compare equal when they differ only by trailing 1s.
bool SameShape(std::vector<int64_t> a, std::vector<int64_t> b) {
  while (!a.empty() && a.back() == 1) a.pop_back();
  while (!b.empty() && b.back() == 1) b.pop_back();
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
  // Map HF names to the table's GGUF names; safetensors shapes are row-major
  // (outermost first), ggml's are innermost first.
  std::map<std::string, std::string> hf_to_gguf;
  for (const TensorSpec& s : DecoderTensorTable(config_)) hf_to_gguf[s.hf_name] = s.gguf_name;
  uint64_t h = Fnv1a(config_text.data(), config_text.size());
  uint64_t total = 0;
  for (const SafetensorsTensor& t : safetensors_->tensors()) {
    auto it = hf_to_gguf.find(t.name);
    std::string name = it != hf_to_gguf.end() ? it->second : t.name;
    WeightTensor w;
    w.name = name;
    w.type = t.type;
    w.ne.assign(t.shape.rbegin(), t.shape.rend());
    w.data = t.data;
    w.nbytes = t.nbytes;
    total += t.nbytes;
    std::string desc = t.name + ":" + TypeName(t.type) + ShapeText(t.shape);
    h = Fnv1a(desc.data(), desc.size(), h);
    // A checkpoint could hold both an HF name and the GGUF name it maps to
    // ("model.norm.weight" and "output_norm.weight"): which one is used must
    // not depend on the order of a map, so such a file is refused.
    if (!tensors_.emplace(name, std::move(w)).second)
      return DataLoss("model directory '" + path_ + "': tensors '" + t.name + "' and '" + name +
                      "' are the same weight under two names");
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  fingerprint_ = std::to_string(total) + "-" + buf;
  return Status::Ok();
}

Status ModelFiles::CheckTensorTable() {
  table_ = DecoderTensorTable(config_);
  const std::string where = format_ == Format::kGguf ? "GGUF file '" + path_ + "'" : "model directory '" + path_ + "'";
  std::set<std::string, std::less<>> expected;
  for (const TensorSpec& s : table_) {
    expected.insert(s.gguf_name);
    auto it = tensors_.find(s.gguf_name);
    const std::string shown = format_ == Format::kGguf ? s.gguf_name : s.hf_name;
    if (it == tensors_.end()) {
      if (s.required) return DataLoss(where + ": required tensor '" + shown + "' is missing");
      continue;
    }
    const WeightTensor& w = it->second;
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
  }
  for (const auto& [name, w] : tensors_) {
    if (expected.count(name)) continue;
    // Buffers some exporters leave in checkpoints; they carry no weights we use.
    if (name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0) continue;
    return DataLoss(where + ": unexpected tensor '" + name + "' (not part of a " + config_.arch + " model of this shape)");
  }
  return Status::Ok();
}

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
  auto it = tensors_.find("token_embd.weight");
  return it == tensors_.end() ? 0 : it->second.nbytes;
}

uint64_t ModelFiles::OutputBytes() const {
  if (config_.tied_embeddings) return 0;
  auto it = tensors_.find("output.weight");
  return it == tensors_.end() ? 0 : it->second.nbytes;
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
