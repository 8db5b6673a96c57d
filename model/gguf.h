// GGUF v2/v3 reader (llama.cpp's model file format), memory-mapped; every rank
// opens the model this way. Version 1 (32-bit counts, 2023) is refused, as
// llama.cpp refuses it.
//
// Open() validates the whole header before anything trusts it: magic and
// version, key/value and tensor counts bounded by the file size, string and
// array lengths inside the file, value and tensor type ids from the known set,
// at most 4 dimensions with overflow-checked element counts, each tensor's
// data aligned (general.alignment, a power of two) and inside the data region,
// no duplicate keys or tensor names. Errors name the file and the problem.
//
// Memory: Open() allocates a fixed amount per key (a map node, the key, one
// GgufValue) and per tensor, never per array element: arrays stay encoded in
// the mapping and are decoded on access. A key takes at least 14 bytes of
// file and a tensor 33, so what Open() allocates is bounded by ~12x the
// header's size however the file is crafted.
//
//   STRATA_ASSIGN_OR_RETURN(auto file, GgufFile::Open(path));
//   const GgufTensor* t = file->FindTensor("blk.0.attn_q.weight");
//   auto theta = file->GetFloat("smollm3.rope.freq_base");
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/mapped_file.h"

namespace strata {

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* GgufValueTypeName(GgufValueType t);

struct GgufValue;
// An array value: its encoded elements, a span of the mapping checked when
// the file was opened (lengths in bounds, bools 0 or 1, nesting depth), so
// decoding them cannot fail.
struct GgufArray {
  GgufValueType elem_type = GgufValueType::kUint8;
  uint64_t count = 0;    // number of elements
  std::string_view raw;  // the `count` elements as the file stores them (little-endian)
  // Decodes every element. Allocates sizeof(GgufValue) per element: for long
  // arrays of scalars prefer GgufFile's typed getters. Nested arrays come
  // back still encoded (one level per call).
  std::vector<GgufValue> Items() const;
};
// One metadata value. Integers of any width are held widened; strings and
// arrays point into the mapping.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string_view, GgufArray> v;
};

struct GgufTensor {
  std::string_view name;
  TensorType type;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] is the row length
  uint64_t offset = 0;           // from the start of the data region
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint64_t file_size() const { return file_->size(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  // Bytes from the start of the file to the start of the data region: the
  // header (metadata + tensor table) a fingerprint hashes.
  const uint8_t* header_bytes() const { return file_->data(); }

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufValue* Find(std::string_view key) const;
  const GgufTensor* FindTensor(std::string_view name) const;

  // Typed getters: NotFound when absent, DataLoss naming the key when the
  // stored type does not convert (integers convert between widths when the
  // value fits).
  Result<std::string> GetString(std::string_view key) const;
  Result<uint64_t> GetUint(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  Result<std::vector<std::string_view>> GetStringArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  Result<std::vector<double>> GetFloatArray(std::string_view key) const;

 private:
  GgufFile() = default;
  Status Parse();
  Status Fail(const std::string& what) const;

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue, std::less<>> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string_view, size_t, std::less<>> tensor_index_;
};

}  // namespace strata
