// GGUF reader. Every count, length and offset read from the file is checked
// against the bytes that remain before it is used, so a hostile header can
// neither read out of bounds nor make us allocate more than the file could
// describe. Arrays are validated here but stay encoded in the mapping
// (GgufArray::raw); they are decoded only when asked for.
#include "model/gguf.h"

#include <algorithm>
#include <cstring>

namespace strata {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;  // nested arrays deeper than this are rejected

// Size in bytes of a scalar value type (0 for string/array).
uint64_t ScalarSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    default: return 0;
  }
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Sequential reader over the mapped header with bounds checks.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  bool Read(void* out, uint64_t n) {
    if (n > remaining()) return false;
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return true;
  }
  bool Skip(uint64_t n) {
    if (n > remaining()) return false;
    pos_ += n;
    return true;
  }
  template <class T>
  bool Get(T* v) { return Read(v, sizeof(T)); }
  // The bytes [from, pos()).
  std::string_view Span(uint64_t from) const {
    return std::string_view(reinterpret_cast<const char*>(data_ + from), pos_ - from);
  }
  bool GetString(std::string_view* s) {
    uint64_t len = 0;
    if (!Get(&len) || len > remaining()) return false;
    *s = std::string_view(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return true;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

}  // namespace

const char* GgufValueTypeName(GgufValueType t) {
  static const char* kNames[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                 "bool", "string", "array", "uint64", "int64", "float64"};
  uint32_t i = static_cast<uint32_t>(t);
  return i < sizeof(kNames) / sizeof(kNames[0]) ? kNames[i] : "unknown";
}

Status GgufFile::Fail(const std::string& what) const {
  return DataLoss("GGUF file '" + file_->path() + "': " + what);
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->file_ = std::move(mapped);
  STRATA_RETURN_IF_ERROR(f->Parse());
  return f;
}

namespace {

// Reads one value of type `t`. An array is walked to validate every element
// (recursively) and kept as its encoded span: nothing here allocates.
bool ReadValue(Cursor& c, GgufValueType t, int depth, GgufValue* out, std::string* err) {
  out->type = t;
  switch (t) {
    case GgufValueType::kUint8: { uint8_t v; if (!c.Get(&v)) break; out->v = uint64_t{v}; return true; }
    case GgufValueType::kInt8: { int8_t v; if (!c.Get(&v)) break; out->v = int64_t{v}; return true; }
    case GgufValueType::kUint16: { uint16_t v; if (!c.Get(&v)) break; out->v = uint64_t{v}; return true; }
    case GgufValueType::kInt16: { int16_t v; if (!c.Get(&v)) break; out->v = int64_t{v}; return true; }
    case GgufValueType::kUint32: { uint32_t v; if (!c.Get(&v)) break; out->v = uint64_t{v}; return true; }
    case GgufValueType::kInt32: { int32_t v; if (!c.Get(&v)) break; out->v = int64_t{v}; return true; }
    case GgufValueType::kUint64: { uint64_t v; if (!c.Get(&v)) break; out->v = v; return true; }
    case GgufValueType::kInt64: { int64_t v; if (!c.Get(&v)) break; out->v = v; return true; }
    case GgufValueType::kFloat32: { float v; if (!c.Get(&v)) break; out->v = double{v}; return true; }
    case GgufValueType::kFloat64: { double v; if (!c.Get(&v)) break; out->v = v; return true; }
    case GgufValueType::kBool: {
      uint8_t v;
      if (!c.Get(&v)) break;
      if (v > 1) { *err = "bool value " + std::to_string(v) + " is neither 0 nor 1"; return false; }
      out->v = v == 1;
      return true;
    }
    case GgufValueType::kString: {
      std::string_view s;
      if (!c.GetString(&s)) { *err = "string length runs past the end of the file"; return false; }
      out->v = s;
      return true;
    }
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayDepth) { *err = "arrays nested deeper than " + std::to_string(kMaxArrayDepth); return false; }
      uint32_t et;
      uint64_t n = 0;
      if (!c.Get(&et)) break;
      if (!KnownValueType(et)) { *err = "array of unknown value type " + std::to_string(et); return false; }
      if (!c.Get(&n)) break;
      GgufValueType elem = static_cast<GgufValueType>(et);
      // Every element takes at least one byte (strings: a length field,
      // arrays: a type and a count), so a count larger than the remaining
      // bytes is corrupt: refuse it before walking.
      const uint64_t min_elem = ScalarSize(elem) ? ScalarSize(elem) : (elem == GgufValueType::kString ? 8 : 12);
      if (n > c.remaining() / min_elem) {
        *err = "array of " + std::to_string(n) + " " + GgufValueTypeName(elem) + " values does not fit in the file";
        return false;
      }
      const uint64_t start = c.pos();
      if (ScalarSize(elem) != 0 && elem != GgufValueType::kBool) {
        c.Skip(n * ScalarSize(elem));  // in bounds: checked above
      } else {
        GgufValue item;
        for (uint64_t i = 0; i < n; ++i)
          if (!ReadValue(c, elem, depth + 1, &item, err)) return false;
      }
      out->v = GgufArray{elem, n, c.Span(start)};
      return true;
    }
  }
  *err = std::string(GgufValueTypeName(t)) + " value runs past the end of the file";
  return false;
}

// Calls fn(const GgufValue&) on each element of an array validated at Open.
template <class Fn>
void ForEachItem(const GgufArray& a, Fn fn) {
  Cursor c(reinterpret_cast<const uint8_t*>(a.raw.data()), a.raw.size());
  GgufValue item;
  std::string err;
  for (uint64_t i = 0; i < a.count; ++i) {
    // Depth 0: the nesting below this array was bounded when the file was opened.
    STRATA_CHECK_MSG(ReadValue(c, a.elem_type, 0, &item, &err), "GGUF array changed after validation: " + err);
    fn(item);
  }
}

}  // namespace

Status GgufFile::Parse() {
  const uint64_t size = file_->size();
  Cursor c(file_->data(), size);
  uint32_t magic = 0;
  if (!c.Get(&magic)) return Fail("file is too short to be GGUF (" + std::to_string(size) + " bytes)");
  if (magic != kGgufMagic) return Fail("bad magic (not a GGUF file)");
  if (!c.Get(&version_)) return Fail("truncated before the version");
  // Version 1 used 32-bit counts and lengths; llama.cpp dropped it in 2023
  // and no current converter writes it.
  if (version_ == 1) return Fail("GGUF version 1 is not supported");
  if (version_ < 2 || version_ > 3) return Fail("unsupported GGUF version " + std::to_string(version_) + " (strata reads 2 and 3)");
  uint64_t n_tensors = 0, n_kv = 0;
  if (!c.Get(&n_tensors) || !c.Get(&n_kv)) return Fail("truncated before the tensor and metadata counts");
  // A key/value pair needs at least 8 (key length) + 1 (a non-empty key) +
  // 4 (type) + 1 bytes; a tensor info at least 8 + 1 + 4 + 8 + 4 + 8. These
  // bounds are also what keeps Open()'s allocations proportional to the file.
  if (n_kv > c.remaining() / 14) return Fail("metadata count " + std::to_string(n_kv) + " is larger than the file can hold");
  if (n_tensors > c.remaining() / 33) return Fail("tensor count " + std::to_string(n_tensors) + " is larger than the file can hold");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string_view key;
    if (!c.GetString(&key)) return Fail("metadata key " + std::to_string(i) + ": length runs past the end of the file");
    if (key.empty()) return Fail("metadata key " + std::to_string(i) + " is empty");
    uint32_t t;
    if (!c.Get(&t)) return Fail("metadata " + QuoteUntrusted(key) + ": truncated before its type");
    if (!KnownValueType(t)) return Fail("metadata " + QuoteUntrusted(key) + ": unknown value type " + std::to_string(t));
    GgufValue value;
    std::string err;
    if (!ReadValue(c, static_cast<GgufValueType>(t), 0, &value, &err)) return Fail("metadata " + QuoteUntrusted(key) + ": " + err);
    if (kv_.count(key)) return Fail("duplicate metadata key " + QuoteUntrusted(key));
    kv_.emplace(std::string(key), std::move(value));
  }

  if (const GgufValue* a = Find("general.alignment")) {
    if (a->type != GgufValueType::kUint32) return Fail(std::string("general.alignment has type ") + GgufValueTypeName(a->type) + ", expected uint32");
    uint64_t al = std::get<uint64_t>(a->v);
    if (al == 0 || (al & (al - 1)) != 0) return Fail("general.alignment " + std::to_string(al) + " is not a power of two");
    alignment_ = al;
  }

  tensors_.resize(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor& t = tensors_[i];
    if (!c.GetString(&t.name)) return Fail("tensor " + std::to_string(i) + ": name runs past the end of the file");
    if (t.name.empty()) return Fail("tensor " + std::to_string(i) + " has an empty name");
    std::string tn = "tensor " + QuoteUntrusted(t.name);
    uint32_t n_dims;
    if (!c.Get(&n_dims)) return Fail(tn + ": truncated before its dimensions");
    if (n_dims == 0 || n_dims > kMaxDims) return Fail(tn + ": " + std::to_string(n_dims) + " dimensions (1..4 allowed)");
    t.n_dims = static_cast<int>(n_dims);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne;
      if (!c.Get(&ne)) return Fail(tn + ": truncated in its shape");
      if (ne == 0 || ne > static_cast<uint64_t>(INT64_MAX)) return Fail(tn + ": dimension " + std::to_string(d) + " is " + std::to_string(ne));
      if (elems > static_cast<uint64_t>(INT64_MAX) / ne) return Fail(tn + ": element count overflows 64 bits");
      elems *= ne;
      t.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t type_id;
    if (!c.Get(&type_id)) return Fail(tn + ": truncated before its type");
    const TypeTraits* tt = FindTypeTraits(type_id);
    if (tt == nullptr) return Fail(tn + ": unknown tensor type id " + std::to_string(type_id));
    t.type = tt->type;
    if (t.ne[0] % tt->block_elems != 0)
      return Fail(tn + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " + tt->name + " block (" + std::to_string(tt->block_elems) + ")");
    uint64_t blocks = elems / static_cast<uint64_t>(tt->block_elems);
    if (blocks > UINT64_MAX / static_cast<uint64_t>(tt->block_bytes)) return Fail(tn + ": byte size overflows 64 bits");
    t.nbytes = blocks * static_cast<uint64_t>(tt->block_bytes);
    if (!c.Get(&t.offset)) return Fail(tn + ": truncated before its offset");
    if (t.offset % alignment_ != 0) return Fail(tn + ": data offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(alignment_));
    if (tensor_index_.count(t.name)) return Fail("duplicate tensor name " + QuoteUntrusted(t.name));
    tensor_index_.emplace(t.name, i);
  }

  // The data region starts at the next multiple of the alignment.
  uint64_t pos = c.pos();
  uint64_t pad = (alignment_ - pos % alignment_) % alignment_;
  if (n_tensors > 0 && pad > size - pos) return Fail("truncated before the tensor data");
  // A file without tensors (a vocabulary-only GGUF) may end before the
  // padding; its data region is then empty and starts at the end of the file,
  // so that [0, data_offset()) is always inside the mapping.
  data_offset_ = std::min(pos + pad, size);
  const uint64_t data_size = size - data_offset_;
  // Tensors must lie inside the data region and must not overlap.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  spans.reserve(tensors_.size());
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      return Fail("tensor " + QuoteUntrusted(t.name) + ": data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                  ") runs past the end of the file (data region is " + std::to_string(data_size) + " bytes)");
    t.data = file_->data() + data_offset_ + t.offset;
    spans.emplace_back(t.offset, t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i - 1].first + spans[i - 1].second > spans[i].first)
      return Fail("tensor data regions overlap at offset " + std::to_string(spans[i].first));
  return Status::Ok();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Status WrongType(const std::string& path, std::string_view key, GgufValueType got, const char* want) {
  return DataLoss("GGUF file '" + path + "': metadata '" + std::string(key) + "' has type " + GgufValueTypeName(got) +
                  ", expected " + want);
}

}  // namespace

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  if (v->type != GgufValueType::kString) return WrongType(path(), key, v->type, "string");
  return std::string(std::get<std::string_view>(v->v));
}

Result<uint64_t> GgufFile::GetUint(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  if (auto* u = std::get_if<uint64_t>(&v->v)) return *u;
  if (auto* i = std::get_if<int64_t>(&v->v)) {
    if (*i >= 0) return static_cast<uint64_t>(*i);
    return DataLoss("GGUF file '" + path() + "': metadata '" + std::string(key) + "' is negative (" + std::to_string(*i) + ")");
  }
  return WrongType(path(), key, v->type, "an unsigned integer");
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  if (auto* i = std::get_if<int64_t>(&v->v)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v->v)) {
    if (*u <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(*u);
    return DataLoss("GGUF file '" + path() + "': metadata '" + std::string(key) + "' does not fit int64");
  }
  return WrongType(path(), key, v->type, "an integer");
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  if (auto* d = std::get_if<double>(&v->v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v->v)) return static_cast<double>(*i);
  if (auto* u = std::get_if<uint64_t>(&v->v)) return static_cast<double>(*u);
  return WrongType(path(), key, v->type, "a number");
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  if (auto* b = std::get_if<bool>(&v->v)) return *b;
  return WrongType(path(), key, v->type, "bool");
}

Result<std::vector<std::string_view>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  const GgufArray* a = std::get_if<GgufArray>(&v->v);
  if (!a || a->elem_type != GgufValueType::kString) return WrongType(path(), key, v->type, "array of string");
  std::vector<std::string_view> out;
  out.reserve(a->count);  // 16 bytes per element, each of which takes >= 8 in the file
  ForEachItem(*a, [&](const GgufValue& x) { out.push_back(std::get<std::string_view>(x.v)); });
  return out;
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  const GgufArray* a = std::get_if<GgufArray>(&v->v);
  if (!a || ScalarSize(a->elem_type) == 0 || a->elem_type == GgufValueType::kFloat32 ||
      a->elem_type == GgufValueType::kFloat64 || a->elem_type == GgufValueType::kBool)
    return WrongType(path(), key, v->type, "array of integers");
  std::vector<int64_t> out;
  out.reserve(a->count);
  bool too_big = false;  // a uint64 element above INT64_MAX must not wrap negative
  ForEachItem(*a, [&](const GgufValue& x) {
    if (auto* i = std::get_if<int64_t>(&x.v)) {
      out.push_back(*i);
    } else {
      uint64_t u = std::get<uint64_t>(x.v);
      too_big |= u > static_cast<uint64_t>(INT64_MAX);
      out.push_back(static_cast<int64_t>(u));
    }
  });
  if (too_big) return DataLoss("GGUF file '" + path() + "': metadata '" + std::string(key) + "' holds a value that does not fit int64");
  return out;
}

Result<std::vector<double>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) return NotFound("GGUF file '" + path() + "': no metadata '" + std::string(key) + "'");
  const GgufArray* a = std::get_if<GgufArray>(&v->v);
  if (!a || (a->elem_type != GgufValueType::kFloat32 && a->elem_type != GgufValueType::kFloat64))
    return WrongType(path(), key, v->type, "array of floats");
  std::vector<double> out;
  out.reserve(a->count);
  ForEachItem(*a, [&](const GgufValue& x) { out.push_back(std::get<double>(x.v)); });
  return out;
}

std::vector<GgufValue> GgufArray::Items() const {
  std::vector<GgufValue> out;
  out.reserve(count);
  ForEachItem(*this, [&](const GgufValue& x) { out.push_back(x); });
  return out;
}

}  // namespace strata
