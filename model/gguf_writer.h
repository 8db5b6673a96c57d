// GGUF v3 writer: metadata key/values and tensors in, a file that
// model/gguf.h and llama.cpp read out. Used by `strata convert`, `quantize`,
// `make-model` and by the tests (Serialize() gives the bytes to corrupt).
// Runs on whichever process writes a model file (no MPI).
//
// Layout written (all little-endian):
//   "GGUF" u32 version=3 | u64 n_tensors | u64 n_kv
//   n_kv x (string key, u32 value type, value)       string = u64 length + bytes
//   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   zero padding to the alignment
//   tensor data, each tensor at an aligned offset from the start of the data
//   region and zero-padded to the alignment (as ggml writes it)
//
//   GgufWriter w;
//   w.SetString("general.architecture", "smollm3");
//   w.SetU32("smollm3.block_count", 36);
//   w.AddTensor("token_embd.weight", TensorType::kF32, {hidden, vocab}, bytes);
//   STRATA_RETURN_IF_ERROR(w.WriteFile(path));
//
// llama.cpp compatibility: its reader wants each tensor's offset to be the
// padded end of the previous one (written so), tensor names shorter than 64
// bytes (checked), and refuses arrays of arrays: the GGUF spec allows them and
// this writer and model/gguf.h support them, but files meant for llama.cpp
// must not use them.
//
// Keys keep their first insertion order; setting a key again replaces its
// value in place. Misuse (a tensor whose byte count does not match its shape,
// a duplicate tensor name, an array item of the wrong type) is a caller bug
// and aborts through STRATA_CHECK.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/gguf.h"

namespace strata {

class GgufWriter {
 public:
  // One metadata value of any GGUF type, arrays (also of arrays) included.
  struct Value {
    GgufValueType type = GgufValueType::kUint8;
    uint64_t u = 0;       // kUint8..kUint64, kBool (0/1)
    int64_t i = 0;        // kInt8..kInt64
    double f = 0;         // kFloat32, kFloat64
    std::string s;        // kString
    GgufValueType elem_type = GgufValueType::kUint8;  // kArray
    std::vector<Value> items;                          // kArray

    static Value U8(uint8_t v) { return Unsigned(GgufValueType::kUint8, v); }
    static Value I8(int8_t v) { return Signed(GgufValueType::kInt8, v); }
    static Value U16(uint16_t v) { return Unsigned(GgufValueType::kUint16, v); }
    static Value I16(int16_t v) { return Signed(GgufValueType::kInt16, v); }
    static Value U32(uint32_t v) { return Unsigned(GgufValueType::kUint32, v); }
    static Value I32(int32_t v) { return Signed(GgufValueType::kInt32, v); }
    static Value U64(uint64_t v) { return Unsigned(GgufValueType::kUint64, v); }
    static Value I64(int64_t v) { return Signed(GgufValueType::kInt64, v); }
    static Value F32(float v) { Value x; x.type = GgufValueType::kFloat32; x.f = v; return x; }
    static Value F64(double v) { Value x; x.type = GgufValueType::kFloat64; x.f = v; return x; }
    static Value Bool(bool v) { return Unsigned(GgufValueType::kBool, v ? 1 : 0); }
    static Value String(std::string v) { Value x; x.type = GgufValueType::kString; x.s = std::move(v); return x; }
    // Every item must have type `elem_type` (checked when written).
    static Value Array(GgufValueType elem_type, std::vector<Value> items) {
      Value x; x.type = GgufValueType::kArray; x.elem_type = elem_type; x.items = std::move(items); return x;
    }
    // A value read by GgufFile, for copying metadata from one file to another.
    static Value FromRead(const GgufValue& v);

   private:
    static Value Unsigned(GgufValueType t, uint64_t v) { Value x; x.type = t; x.u = v; return x; }
    static Value Signed(GgufValueType t, int64_t v) { Value x; x.type = t; x.i = v; return x; }
  };

  // Fills `out` (exactly the tensor's byte size) when the file is written;
  // lets a converter quantize tensor by tensor without holding them all.
  using DataSource = std::function<Status(std::span<uint8_t> out)>;

  // --- metadata ---
  void Set(const std::string& key, Value value);
  void SetU8(const std::string& key, uint8_t v) { Set(key, Value::U8(v)); }
  void SetI8(const std::string& key, int8_t v) { Set(key, Value::I8(v)); }
  void SetU16(const std::string& key, uint16_t v) { Set(key, Value::U16(v)); }
  void SetI16(const std::string& key, int16_t v) { Set(key, Value::I16(v)); }
  void SetU32(const std::string& key, uint32_t v) { Set(key, Value::U32(v)); }
  void SetI32(const std::string& key, int32_t v) { Set(key, Value::I32(v)); }
  void SetU64(const std::string& key, uint64_t v) { Set(key, Value::U64(v)); }
  void SetI64(const std::string& key, int64_t v) { Set(key, Value::I64(v)); }
  void SetF32(const std::string& key, float v) { Set(key, Value::F32(v)); }
  void SetF64(const std::string& key, double v) { Set(key, Value::F64(v)); }
  void SetBool(const std::string& key, bool v) { Set(key, Value::Bool(v)); }
  void SetString(const std::string& key, std::string v) { Set(key, Value::String(std::move(v))); }
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& v);
  void SetU32Array(const std::string& key, const std::vector<uint32_t>& v);
  void SetF32Array(const std::string& key, const std::vector<float>& v);
  void SetBoolArray(const std::string& key, const std::vector<bool>& v);
  // Removes a key (no-op when absent).
  void Erase(const std::string& key);
  bool Has(const std::string& key) const { return kv_index_.count(key) != 0; }

  // Power of two; sets general.alignment when not 32 (the GGUF default),
  // removes it when 32. Set("general.alignment", U32(power of two)) does the
  // same; an invalid general.alignment given to Set() (0, 3, a string) is
  // written as given while the layout keeps the previous alignment, which
  // makes files that readers must refuse (for tests).
  void SetAlignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }

  // --- tensors (written in the order added) ---
  // `ne` in ggml order (ne[0] = row length), 1..4 dims, each > 0, ne[0] a
  // multiple of the type's block; data.size() must equal the byte size.
  void AddTensor(std::string name, TensorType type, std::vector<int64_t> ne, std::vector<uint8_t> data);
  // Copies `data`.
  void AddTensor(std::string name, TensorType type, std::vector<int64_t> ne, std::span<const uint8_t> data);
  // Borrows `data`: it must stay valid until the last WriteFile/Serialize.
  void AddTensorView(std::string name, TensorType type, std::vector<int64_t> ne, std::span<const uint8_t> data);
  // Data produced at write time by `source`.
  void AddTensorSource(std::string name, TensorType type, std::vector<int64_t> ne, DataSource source);

  size_t n_tensors() const { return tensors_.size(); }
  size_t n_kv() const { return kv_.size(); }
  // Byte size of a tensor of `type` and `ne` (ggml order); error when the
  // shape is invalid or the size overflows.
  static Result<uint64_t> TensorBytes(TensorType type, const std::vector<int64_t>& ne);

  // Writes path + ".tmp", then renames it to `path`. Errors name the path.
  Status WriteFile(const std::string& path) const;
  // The same bytes in memory. Aborts if a DataSource fails (use WriteFile
  // for sources that can fail).
  std::vector<uint8_t> Serialize() const;

 private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
    uint64_t nbytes = 0;
    std::vector<uint8_t> owned;       // the bytes, when the writer owns them
    std::span<const uint8_t> view;    // else borrowed bytes, else ...
    DataSource source;                // ... produced at write time
  };
  Tensor& NewTensor(std::string name, TensorType type, std::vector<int64_t> ne);
  // Offset of each tensor in the data region, for the current alignment.
  std::vector<uint64_t> Offsets() const;
  // Header bytes (everything before the data region, padding included).
  std::vector<uint8_t> Header() const;
  // Calls `sink` with the data region in pieces.
  Status EmitData(const std::function<Status(const uint8_t*, size_t)>& sink) const;

  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace strata
