// safetensors reader: header validation, the contiguity check of the data
// region, and the sharded index. Runs on every rank that loads an HF
// directory. Every number taken from a header is checked before it is used;
// nlohmann::json is asked to parse only after the bytes are known to be
// bounded, valid UTF-8 and shallow, and none of its exceptions escape.
#include "model/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <tuple>

#include <nlohmann/json.hpp>

#include "model/untrusted_json.h"

namespace strata {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian; strata assumes a little-endian host");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit
constexpr uint64_t kMaxIndexBytes = 100ull << 20;
// A valid header nests 3 deep ({name: {shape: [..]}}); anything much deeper
// is hostile.
constexpr int kMaxHeaderJsonDepth = 8;

// The closed list of safetensors dtypes. Sizes are in bits because the
// sub-byte float formats (F4, F6_*) exist; a tensor's bit count must then be
// a whole number of bytes.
struct Dtype {
  const char* name;
  uint64_t bits;
  bool loadable;     // strata computes with it
  TensorType type;   // when loadable
};
constexpr Dtype kDtypes[] = {
    {"F32", 32, true, TensorType::kF32},      {"F16", 16, true, TensorType::kF16},
    {"BF16", 16, true, TensorType::kBF16},    {"F64", 64, false, TensorType::kF32},
    {"I64", 64, false, TensorType::kF32},     {"U64", 64, false, TensorType::kF32},
    {"I32", 32, false, TensorType::kF32},     {"U32", 32, false, TensorType::kF32},
    {"I16", 16, false, TensorType::kF32},     {"U16", 16, false, TensorType::kF32},
    {"I8", 8, false, TensorType::kF32},       {"U8", 8, false, TensorType::kF32},
    {"BOOL", 8, false, TensorType::kF32},     {"F8_E4M3", 8, false, TensorType::kF32},
    {"F8_E5M2", 8, false, TensorType::kF32},  {"F8_E8M0", 8, false, TensorType::kF32},
    {"C64", 64, false, TensorType::kF32},     {"F4", 4, false, TensorType::kF32},
    {"F6_E2M3", 6, false, TensorType::kF32},  {"F6_E3M2", 6, false, TensorType::kF32},
};

const Dtype* FindDtype(const std::string& name) {
  for (const Dtype& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// stat() distinguishes "missing" (kNotFound) from the errors MappedFile reports.
Status CheckExists(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(what + " '" + path + "' does not exist");
    return IoError("cannot stat " + what + " '" + path + "': " + std::strerror(errno));
  }
  return Status::Ok();
}

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Non-negative JSON integer that fits int64 (what shapes and offsets are).
bool GetCount(const nlohmann::json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  uint64_t u = v.get<uint64_t>();
  if (u > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = u;
  return true;
}

struct ParsedFile {
  std::vector<SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Validates one mapped file and lists its tensors.
Status ParseFile(const MappedFile& f, ParsedFile* out) {
  const std::string what = "safetensors file '" + f.path() + "'";
  auto fail = [&](const std::string& m) { return DataLoss(what + ": " + m); };
  const uint64_t size = f.size();
  if (size < 8) return fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, f.data(), 8);
  if (header_len > kMaxHeaderBytes)
    return fail("header length " + std::to_string(header_len) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len > size - 8)
    return fail("header length " + std::to_string(header_len) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  if (header_len == 0) return fail("header is empty");
  std::string_view text(reinterpret_cast<const char*>(f.data()) + 8, header_len);
  STRATA_ASSIGN_OR_RETURN(nlohmann::json header, ParseUntrustedJson(text, what + ": header", kMaxHeaderJsonDepth));

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  struct Span { uint64_t begin, end; size_t index; };
  std::vector<Span> spans;
  std::string unsupported;  // first tensor whose dtype strata does not load
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return fail("__metadata__ is not a JSON object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) return fail("__metadata__ value for " + QuoteUntrusted(m.key()) + " is not a string");
        out->metadata.emplace(m.key(), m.value().get<std::string>());
      }
      continue;
    }
    if (name.empty()) return fail("a tensor has an empty name");
    const std::string tn = "tensor " + QuoteUntrusted(name);
    if (!entry.is_object()) return fail(tn + ": entry is not a JSON object");
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) return fail(tn + ": missing string field 'dtype'");
    const std::string dtype_name = dt->get<std::string>();
    const Dtype* dtype = FindDtype(dtype_name);
    if (dtype == nullptr) return fail(tn + ": unknown dtype " + QuoteUntrusted(dtype_name));

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) return fail(tn + ": missing array field 'shape'");
    SafetensorsTensor t;
    t.name = name;
    t.file = f.path();
    t.type = dtype->type;
    uint64_t elems = 1;
    bool overflow = false;
    for (const nlohmann::json& d : *sh) {
      uint64_t dim;
      if (!GetCount(d, &dim)) return fail(tn + ": shape entry " + d.dump() + " is not a non-negative integer");
      t.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && elems > UINT64_MAX / dim) overflow = true;
      else elems *= dim;
    }
    // A zero dimension makes the product 0 whatever came before it.
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) { elems = 0; overflow = false; }
    if (overflow || (elems != 0 && elems > UINT64_MAX / dtype->bits))
      return fail(tn + ": byte size of shape " + ShapeText(t.shape) + " overflows 64 bits");
    const uint64_t bits = elems * dtype->bits;
    if (bits % 8 != 0)
      return fail(tn + ": shape " + ShapeText(t.shape) + " of " + dtype->name + " is not a whole number of bytes");
    t.nbytes = bits / 8;

    auto off = entry.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == entry.end() || !off->is_array() || off->size() != 2 || !GetCount((*off)[0], &begin) || !GetCount((*off)[1], &end))
      return fail(tn + ": 'data_offsets' is not a pair of non-negative integers");
    if (begin > end)
      return fail(tn + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] begin after end");
    if (end - begin != t.nbytes)
      return fail(tn + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                  std::to_string(end - begin) + " bytes, but " + dtype->name + " " + ShapeText(t.shape) + " needs " +
                  std::to_string(t.nbytes));
    if (end > data_size)
      return fail(tn + ": data_offsets end " + std::to_string(end) + " runs past the end of the data region (" +
                  std::to_string(data_size) + " bytes)");
    t.data = f.data() + data_start + begin;
    if (!dtype->loadable && unsupported.empty()) unsupported = tn + " has dtype " + dtype->name;
    spans.push_back({begin, end, out->tensors.size()});
    out->tensors.push_back(std::move(t));
  }

  // The tensors must tile the data region: sorted by offset, each starts
  // where the previous ended, and the last ends at the end of the file.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t expected = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    if (s.begin > expected)
      return fail("bytes [" + std::to_string(expected) + ", " + std::to_string(s.begin) +
                  ") of the data region belong to no tensor (gap before tensor " + QuoteUntrusted(out->tensors[s.index].name) + ")");
    if (s.begin < expected)
      return fail("tensor " + QuoteUntrusted(out->tensors[s.index].name) + " data [" + std::to_string(s.begin) + ", " +
                  std::to_string(s.end) + ") overlaps tensor " + QuoteUntrusted(out->tensors[spans[i - 1].index].name));
    expected = s.end;
  }
  if (expected != data_size)
    return fail(std::to_string(data_size - expected) + " bytes after the last tensor (data region is " +
                std::to_string(data_size) + " bytes, tensors cover " + std::to_string(expected) + ")");
  if (!unsupported.empty())
    return Unimplemented(what + ": " + unsupported + " (strata loads F32, F16 and BF16)");
  return Status::Ok();
}

// A shard name from an index must stay inside the index's directory.
bool SafeRelativeName(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.find('\0') != std::string::npos) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    if (name.compare(start, slash - start, "..") == 0 && slash - start == 2) return false;
    start = slash + 1;
  }
  return true;
}

void SortByName(std::vector<SafetensorsTensor>* tensors) {
  std::sort(tensors->begin(), tensors->end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.name < b.name; });
}

}  // namespace

Result<std::unique_ptr<SafetensorsModel>> SafetensorsModel::OpenFile(const std::string& path) {
  STRATA_RETURN_IF_ERROR(CheckExists(path, "safetensors file"));
  STRATA_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  ParsedFile parsed;
  STRATA_RETURN_IF_ERROR(ParseFile(*mapped, &parsed));
  std::unique_ptr<SafetensorsModel> m(new SafetensorsModel());
  m->files_.push_back(std::move(mapped));
  m->tensors_ = std::move(parsed.tensors);
  m->metadata_ = std::move(parsed.metadata);
  SortByName(&m->tensors_);
  return m;
}

Result<std::unique_ptr<SafetensorsModel>> SafetensorsModel::OpenIndex(const std::string& index_path) {
  const std::string what = "safetensors index '" + index_path + "'";
  STRATA_RETURN_IF_ERROR(CheckExists(index_path, "safetensors index"));
  STRATA_ASSIGN_OR_RETURN(auto index_file, MappedFile::Open(index_path));
  if (index_file->size() > kMaxIndexBytes)
    return DataLoss(what + ": " + std::to_string(index_file->size()) + " bytes, more than the limit of " + std::to_string(kMaxIndexBytes));
  std::string_view text(reinterpret_cast<const char*>(index_file->data()), index_file->size());
  STRATA_ASSIGN_OR_RETURN(nlohmann::json index, ParseUntrustedJson(text, what));
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) return DataLoss(what + ": missing object 'weight_map'");
  if (wm->empty()) return DataLoss(what + ": 'weight_map' lists no tensors");
  auto md = index.find("metadata");
  if (md != index.end() && !md->is_object() && !md->is_null()) return DataLoss(what + ": 'metadata' is not a JSON object");

  std::map<std::string, std::string> shard_of;  // tensor name -> shard file name
  std::map<std::string, std::string> first_tensor_of;  // shard -> a tensor it should hold (for messages)
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (it.key().empty()) return DataLoss(what + ": weight_map has an empty tensor name");
    if (!it.value().is_string()) return DataLoss(what + ": weight_map entry for tensor " + QuoteUntrusted(it.key()) + " is not a string");
    std::string shard = it.value().get<std::string>();
    if (!SafeRelativeName(shard))
      return DataLoss(what + ": shard file name " + QuoteUntrusted(shard) + " (for tensor " + QuoteUntrusted(it.key()) +
                      ") is not a plain relative name inside the model directory");
    first_tensor_of.emplace(shard, it.key());
    shard_of.emplace(it.key(), std::move(shard));
  }

  // All shards must exist before any is parsed, so a missing one is reported
  // as missing rather than as a tensor that seems to be in the wrong shard.
  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  for (const auto& [shard, example] : first_tensor_of) {
    const std::string shard_path = (dir / shard).string();
    if (IsFile(shard_path)) continue;
    Status st = CheckExists(shard_path, "shard");
    if (st.ok()) return DataLoss(what + ": shard '" + shard_path + "' is not a regular file");
    return Status(st.kind(), what + ": shard " + QuoteUntrusted(shard) + " (holding tensor " + QuoteUntrusted(example) + ") is missing: " + st.message());
  }
  std::unique_ptr<SafetensorsModel> m(new SafetensorsModel());
  std::vector<SafetensorsTensor> all;
  for (const auto& entry : first_tensor_of) {
    const std::string& shard = entry.first;
    const std::string shard_path = (dir / shard).string();
    STRATA_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(shard_path));
    ParsedFile parsed;
    STRATA_RETURN_IF_ERROR(ParseFile(*mapped, &parsed));
    for (SafetensorsTensor& t : parsed.tensors) {
      auto it = shard_of.find(t.name);
      if (it == shard_of.end())
        return DataLoss(what + ": shard '" + shard_path + "' holds tensor " + QuoteUntrusted(t.name) + " that the index does not list");
      if (it->second != shard)
        return DataLoss(what + ": tensor " + QuoteUntrusted(t.name) + " is in shard " + QuoteUntrusted(shard) + " but the index places it in " +
                        QuoteUntrusted(it->second));
      all.push_back(std::move(t));
    }
    for (auto& [k, v] : parsed.metadata) m->metadata_.emplace(k, v);
    m->files_.push_back(std::move(mapped));
  }
  SortByName(&all);
  // Every listed tensor must be found in its shard (a shard cannot hold a
  // name twice, so equal counts after the checks above mean all are present).
  for (const auto& [name, shard] : shard_of) {
    auto pos = std::lower_bound(all.begin(), all.end(), name, [](const SafetensorsTensor& t, const std::string& n) { return t.name < n; });
    if (pos == all.end() || pos->name != name)
      return DataLoss(what + ": tensor " + QuoteUntrusted(name) + " is listed in the index but absent from shard " + QuoteUntrusted(shard));
  }
  m->tensors_ = std::move(all);
  return m;
}

Result<std::unique_ptr<SafetensorsModel>> SafetensorsModel::OpenDir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return NotFound("model directory '" + dir + "' does not exist");
  const std::string single = (std::filesystem::path(dir) / "model.safetensors").string();
  if (IsFile(single)) return OpenFile(single);
  const std::string index = (std::filesystem::path(dir) / "model.safetensors.index.json").string();
  if (IsFile(index)) return OpenIndex(index);
  return NotFound("model directory '" + dir + "' has neither model.safetensors nor model.safetensors.index.json");
}

const SafetensorsTensor* SafetensorsModel::Find(std::string_view name) const {
  auto pos = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                              [](const SafetensorsTensor& t, std::string_view n) { return std::string_view(t.name) < n; });
  return pos != tensors_.end() && pos->name == name ? &*pos : nullptr;
}

std::vector<std::string> SafetensorsModel::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

}  // namespace strata
