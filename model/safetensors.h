// safetensors reader (Hugging Face checkpoints), memory-mapped; one file or a
// sharded set described by model.safetensors.index.json. Used by every rank
// that loads an HF directory: each rank maps all shards but touches only the
// pages of its own layers.
//
// File layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]},
// plus an optional "__metadata__" string -> string map), then the data region.
// Offsets are relative to the data region. Nothing in the header is trusted
// until it is checked: the header length is bounded and inside the file, the
// JSON is valid UTF-8 and shallow, dtypes come from a closed list, byte sizes
// are overflow-checked against the offsets, and the tensors tile the data
// region exactly (no gaps, no overlap, nothing after the last one).
//
// Only F32, F16 and BF16 are loaded; other valid dtypes (I8, F64, F8_*, ...)
// give kUnimplemented. Data pointers point into the mapping and are NOT
// necessarily aligned (the header length is arbitrary): read through memcpy
// or byte loads.
//
//   STRATA_ASSIGN_OR_RETURN(auto st, SafetensorsModel::OpenDir(dir));
//   const SafetensorsTensor* e = st->Find("model.embed_tokens.weight");
//   // e->type == TensorType::kBF16, e->shape == {vocab, hidden}
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/mapped_file.h"

namespace strata {

struct SafetensorsTensor {
  std::string name;
  TensorType type = TensorType::kF32;  // kF32, kF16 or kBF16
  std::vector<int64_t> shape;          // as stored: row-major, outermost first
  const uint8_t* data = nullptr;       // into the mapping; unaligned
  uint64_t nbytes = 0;
  std::string file;  // path of the file that holds it
};

class SafetensorsModel {
 public:
  // `dir`/model.safetensors when present (as transformers prefers it), else
  // `dir`/model.safetensors.index.json and the shards it lists.
  static Result<std::unique_ptr<SafetensorsModel>> OpenDir(const std::string& dir);
  // One .safetensors file.
  static Result<std::unique_ptr<SafetensorsModel>> OpenFile(const std::string& path);
  // A sharded set from its index file; shard names are relative to the
  // index's directory and may not leave it.
  static Result<std::unique_ptr<SafetensorsModel>> OpenIndex(const std::string& index_path);

  SafetensorsModel(const SafetensorsModel&) = delete;
  SafetensorsModel& operator=(const SafetensorsModel&) = delete;

  // nullptr when absent. O(log n).
  const SafetensorsTensor* Find(std::string_view name) const;
  // All tensors, sorted by name (so a sharded and an unsharded copy of the
  // same checkpoint list them identically).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // "__metadata__" of every file, merged (the first file listing a key wins).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Paths of the mapped files, in the order they were opened.
  std::vector<std::string> files() const;

 private:
  SafetensorsModel() = default;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<SafetensorsTensor> tensors_;  // sorted by name
  std::map<std::string, std::string> metadata_;
};

}  // namespace strata
