// GGUF v2/v3 reader (llama.cpp's model file format), memory-mapped.
//
// Open() validates the whole header before anything trusts it: magic and
// version, key/value and tensor counts bounded by the file size, string and
// array lengths inside the file, value and tensor type ids from the known set,
// at most 4 dimensions with overflow-checked element counts, each tensor's
// data aligned (general.alignment, a power of two) and inside the data region,
// no duplicate keys or tensor names. Errors name the file and the problem.
//
//   STRATA_ASSIGN_OR_RETURN(auto file, GgufFile::Open(path));
//   const GgufTensor* t = file->FindTensor("blk.0.attn_q.weight");
//   auto theta = file->GetF32("smollm3.rope.freq_base");
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
struct GgufArray {
  GgufValueType elem_type;
  std::vector<GgufValue> items;
};
// One metadata value. Integers of any width are held widened; strings point
// into the mapping.
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
