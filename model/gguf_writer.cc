// GGUF v3 writer (see gguf_writer.h for the layout). The header is built in
// memory; tensor data is streamed to the file tensor by tensor, so a
// converter's peak memory is one tensor, not the model.
#include "model/gguf_writer.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

namespace strata {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF is written little-endian; strata assumes a little-endian host");

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
const char* const kAlignmentKey = "general.alignment";
constexpr size_t kMaxTensorName = 64;  // ggml's GGML_MAX_NAME, terminator included

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

class Bytes {
 public:
  explicit Bytes(std::vector<uint8_t>* out) : out_(out) {}
  template <class T>
  void Put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_->insert(out_->end(), b, b + sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    out_->insert(out_->end(), s.begin(), s.end());
  }

 private:
  std::vector<uint8_t>* out_;
};

void CheckUnsignedFits(const GgufWriter::Value& v, uint64_t max) {
  STRATA_CHECK_MSG(v.u <= max, std::string(GgufValueTypeName(v.type)) + " value " + std::to_string(v.u) + " out of range");
}
void CheckSignedFits(const GgufWriter::Value& v, int64_t min, int64_t max) {
  STRATA_CHECK_MSG(v.i >= min && v.i <= max, std::string(GgufValueTypeName(v.type)) + " value " + std::to_string(v.i) + " out of range");
}

void PutValue(Bytes& b, const GgufWriter::Value& v) {
  switch (v.type) {
    case GgufValueType::kUint8: CheckUnsignedFits(v, UINT8_MAX); b.Put<uint8_t>(static_cast<uint8_t>(v.u)); return;
    case GgufValueType::kInt8: CheckSignedFits(v, INT8_MIN, INT8_MAX); b.Put<int8_t>(static_cast<int8_t>(v.i)); return;
    case GgufValueType::kUint16: CheckUnsignedFits(v, UINT16_MAX); b.Put<uint16_t>(static_cast<uint16_t>(v.u)); return;
    case GgufValueType::kInt16: CheckSignedFits(v, INT16_MIN, INT16_MAX); b.Put<int16_t>(static_cast<int16_t>(v.i)); return;
    case GgufValueType::kUint32: CheckUnsignedFits(v, UINT32_MAX); b.Put<uint32_t>(static_cast<uint32_t>(v.u)); return;
    case GgufValueType::kInt32: CheckSignedFits(v, INT32_MIN, INT32_MAX); b.Put<int32_t>(static_cast<int32_t>(v.i)); return;
    case GgufValueType::kUint64: b.Put<uint64_t>(v.u); return;
    case GgufValueType::kInt64: b.Put<int64_t>(v.i); return;
    case GgufValueType::kFloat32: b.Put<float>(static_cast<float>(v.f)); return;
    case GgufValueType::kFloat64: b.Put<double>(v.f); return;
    case GgufValueType::kBool: CheckUnsignedFits(v, 1); b.Put<uint8_t>(static_cast<uint8_t>(v.u)); return;
    case GgufValueType::kString: b.PutString(v.s); return;
    case GgufValueType::kArray:
      b.Put<uint32_t>(static_cast<uint32_t>(v.elem_type));
      b.Put<uint64_t>(v.items.size());
      for (const GgufWriter::Value& item : v.items) {
        STRATA_CHECK_MSG(item.type == v.elem_type, std::string("array of ") + GgufValueTypeName(v.elem_type) + " holds a " +
                                                       GgufValueTypeName(item.type));
        PutValue(b, item);
      }
      return;
  }
  STRATA_CHECK_MSG(false, "unknown GGUF value type " + std::to_string(static_cast<uint32_t>(v.type)));
}

}  // namespace

GgufWriter::Value GgufWriter::Value::FromRead(const GgufValue& r) {
  Value v;
  v.type = r.type;
  if (auto* u = std::get_if<uint64_t>(&r.v)) v.u = *u;
  else if (auto* i = std::get_if<int64_t>(&r.v)) v.i = *i;
  else if (auto* d = std::get_if<double>(&r.v)) v.f = *d;
  else if (auto* b = std::get_if<bool>(&r.v)) v.u = *b ? 1 : 0;
  else if (auto* s = std::get_if<std::string_view>(&r.v)) v.s = std::string(*s);
  else if (auto* a = std::get_if<GgufArray>(&r.v)) {
    v.elem_type = a->elem_type;
    v.items.reserve(a->count);
    for (const GgufValue& item : a->Items()) v.items.push_back(FromRead(item));
  }
  return v;
}

void GgufWriter::Set(const std::string& key, Value value) {
  STRATA_CHECK_MSG(!key.empty(), "GGUF metadata key is empty");
  if (key == kAlignmentKey && value.type == GgufValueType::kUint32 && value.u != 0 && value.u <= UINT32_MAX &&
      (value.u & (value.u - 1)) == 0)
    alignment_ = static_cast<uint32_t>(value.u);
  auto it = kv_index_.find(key);
  if (it != kv_index_.end()) {
    kv_[it->second].second = std::move(value);
    return;
  }
  kv_index_.emplace(key, kv_.size());
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::Erase(const std::string& key) {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) return;
  kv_.erase(kv_.begin() + static_cast<std::ptrdiff_t>(it->second));
  kv_index_.clear();
  for (size_t i = 0; i < kv_.size(); ++i) kv_index_.emplace(kv_[i].first, i);
}

namespace {

// One GGUF array of `elem_type` from v's items, each made a value by `make`.
template <typename T, typename Make>
GgufWriter::Value ArrayOf(GgufValueType elem_type, const std::vector<T>& v, Make make) {
  std::vector<GgufWriter::Value> items;
  items.reserve(v.size());
  for (const auto& x : v) items.push_back(make(x));
  return GgufWriter::Value::Array(elem_type, std::move(items));
}

}  // namespace

void GgufWriter::SetStringArray(const std::string& key, const std::vector<std::string>& v) {
  Set(key, ArrayOf(GgufValueType::kString, v, Value::String));
}
void GgufWriter::SetI32Array(const std::string& key, const std::vector<int32_t>& v) {
  Set(key, ArrayOf(GgufValueType::kInt32, v, Value::I32));
}
void GgufWriter::SetU32Array(const std::string& key, const std::vector<uint32_t>& v) {
  Set(key, ArrayOf(GgufValueType::kUint32, v, Value::U32));
}
void GgufWriter::SetF32Array(const std::string& key, const std::vector<float>& v) {
  Set(key, ArrayOf(GgufValueType::kFloat32, v, Value::F32));
}
void GgufWriter::SetBoolArray(const std::string& key, const std::vector<bool>& v) {
  Set(key, ArrayOf(GgufValueType::kBool, v, Value::Bool));
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  STRATA_CHECK_MSG(alignment != 0 && (alignment & (alignment - 1)) == 0,
                   "GGUF alignment " + std::to_string(alignment) + " is not a power of two");
  alignment_ = alignment;
  if (alignment == kDefaultAlignment) Erase(kAlignmentKey);
  else Set(kAlignmentKey, Value::U32(alignment));
}

Result<uint64_t> GgufWriter::TensorBytes(TensorType type, const std::vector<int64_t>& ne) {
  if (ne.empty() || ne.size() > 4) return InvalidArgument(std::to_string(ne.size()) + " dimensions (1..4 allowed)");
  for (size_t d = 0; d < ne.size(); ++d)
    if (ne[d] <= 0) return InvalidArgument("dimension " + std::to_string(d) + " is " + std::to_string(ne[d]));
  STRATA_ASSIGN_OR_RETURN(uint64_t bytes, RowBytes(type, ne[0]));
  for (size_t d = 1; d < ne.size(); ++d) {
    const uint64_t n = static_cast<uint64_t>(ne[d]);
    if (bytes > UINT64_MAX / n) return InvalidArgument("byte size overflows 64 bits");
    bytes *= n;
  }
  return bytes;
}

GgufWriter::Tensor& GgufWriter::NewTensor(std::string name, TensorType type, std::vector<int64_t> ne) {
  STRATA_CHECK_MSG(!name.empty(), "GGUF tensor name is empty");
  STRATA_CHECK_MSG(name.size() < kMaxTensorName, "GGUF tensor name '" + name + "' is " + std::to_string(name.size()) +
                                                     " bytes; llama.cpp allows at most " + std::to_string(kMaxTensorName - 1));
  STRATA_CHECK_MSG(tensor_index_.count(name) == 0, "duplicate GGUF tensor '" + name + "'");
  Result<uint64_t> bytes = TensorBytes(type, ne);
  STRATA_CHECK_MSG(bytes.ok(), "GGUF tensor '" + name + "': " + bytes.status().message());
  tensor_index_.emplace(name, tensors_.size());
  Tensor& t = tensors_.emplace_back();
  t.name = std::move(name);
  t.type = type;
  t.ne = std::move(ne);
  t.nbytes = *bytes;
  return t;
}

void GgufWriter::AddTensor(std::string name, TensorType type, std::vector<int64_t> ne, std::vector<uint8_t> data) {
  Tensor& t = NewTensor(std::move(name), type, std::move(ne));
  STRATA_CHECK_MSG(data.size() == t.nbytes, "GGUF tensor '" + t.name + "': " + std::to_string(data.size()) +
                                                " bytes given, its shape needs " + std::to_string(t.nbytes));
  t.owned = std::move(data);
}

void GgufWriter::AddTensor(std::string name, TensorType type, std::vector<int64_t> ne, std::span<const uint8_t> data) {
  AddTensor(std::move(name), type, std::move(ne), std::vector<uint8_t>(data.begin(), data.end()));
}

void GgufWriter::AddTensorView(std::string name, TensorType type, std::vector<int64_t> ne, std::span<const uint8_t> data) {
  Tensor& t = NewTensor(std::move(name), type, std::move(ne));
  STRATA_CHECK_MSG(data.size() == t.nbytes, "GGUF tensor '" + t.name + "': " + std::to_string(data.size()) +
                                                " bytes given, its shape needs " + std::to_string(t.nbytes));
  t.view = data;
}

void GgufWriter::AddTensorSource(std::string name, TensorType type, std::vector<int64_t> ne, DataSource source) {
  STRATA_CHECK_MSG(static_cast<bool>(source), "GGUF tensor '" + name + "': empty data source");
  Tensor& t = NewTensor(std::move(name), type, std::move(ne));
  t.source = std::move(source);
}

std::vector<uint64_t> GgufWriter::Offsets() const {
  std::vector<uint64_t> offsets;
  offsets.reserve(tensors_.size());
  uint64_t pos = 0;
  for (const Tensor& t : tensors_) {
    offsets.push_back(pos);
    pos += AlignUp(t.nbytes, alignment_);
  }
  return offsets;
}

std::vector<uint8_t> GgufWriter::Header() const {
  std::vector<uint8_t> out;
  Bytes b(&out);
  b.Put<uint32_t>(kGgufMagic);
  b.Put<uint32_t>(kGgufVersion);
  b.Put<uint64_t>(tensors_.size());
  b.Put<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    b.PutString(key);
    b.Put<uint32_t>(static_cast<uint32_t>(value.type));
    PutValue(b, value);
  }
  const std::vector<uint64_t> offsets = Offsets();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    b.PutString(t.name);
    b.Put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) b.Put<uint64_t>(static_cast<uint64_t>(n));
    b.Put<uint32_t>(static_cast<uint32_t>(t.type));
    b.Put<uint64_t>(offsets[i]);
  }
  out.resize(AlignUp(out.size(), alignment_), 0);
  return out;
}

Status GgufWriter::EmitData(const std::function<Status(const uint8_t*, size_t)>& sink) const {
  static const uint8_t kZeros[256] = {};
  std::vector<uint8_t> produced;
  for (const Tensor& t : tensors_) {
    const uint8_t* data;
    if (t.source) {
      produced.assign(t.nbytes, 0);
      Status st = t.source(std::span<uint8_t>(produced.data(), produced.size()));
      if (!st.ok()) return st.WithContext("tensor '" + t.name + "'");
      data = produced.data();
    } else {
      data = t.owned.empty() ? t.view.data() : t.owned.data();
    }
    STRATA_RETURN_IF_ERROR(sink(data, t.nbytes));
    for (uint64_t pad = AlignUp(t.nbytes, alignment_) - t.nbytes; pad > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof kZeros));
      STRATA_RETURN_IF_ERROR(sink(kZeros, n));
      pad -= n;
    }
  }
  return Status::Ok();
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  std::vector<uint8_t> out = Header();
  Status st = EmitData([&](const uint8_t* p, size_t n) {
    out.insert(out.end(), p, p + n);
    return Status::Ok();
  });
  STRATA_CHECK_MSG(st.ok(), st.ToString());
  return out;
}

Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return IoError("cannot create '" + tmp + "' (for '" + path + "'): " + std::strerror(errno));
  auto abandon = [&](Status st) {
    if (f != nullptr) std::fclose(f);
    std::remove(tmp.c_str());
    return st;
  };
  auto sink = [&](const uint8_t* p, size_t n) -> Status {
    if (n != 0 && std::fwrite(p, 1, n, f) != n) return IoError("cannot write '" + tmp + "': " + std::strerror(errno));
    return Status::Ok();
  };
  const std::vector<uint8_t> header = Header();
  if (Status st = sink(header.data(), header.size()); !st.ok()) return abandon(st);
  if (Status st = EmitData(sink); !st.ok()) return abandon(st.WithContext("writing GGUF file '" + path + "'"));
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
    return abandon(IoError("cannot flush '" + tmp + "': " + std::strerror(errno)));
  const int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) return abandon(IoError("cannot close '" + tmp + "': " + std::strerror(errno)));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return abandon(IoError("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno)));
  return Status::Ok();
}

}  // namespace strata
