// .npy files (NumPy's array format): the activation dumps that `strata dump`
// writes and `strata diff` compares, and the reference hidden states that
// transformers produces (output_hidden_states stacked as [layers+1, tokens,
// hidden]). Runs on whichever rank writes or reads a dump; no MPI here.
//
// Format (numpy/lib/format.py): "\x93NUMPY", major, minor, header length
// (u16 for v1, u32 for v2/v3), a Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (13, 256), }
// padded with spaces and a '\n' so that the data starts on a 64-byte
// boundary, then the data in C order.
//
//   STRATA_RETURN_IF_ERROR(WriteNpyF32(dir + "/layer_000.npy", {tokens, hidden}, x));
//   STRATA_ASSIGN_OR_RETURN(NpyArray ref, ReadNpyF32(path));  // ref.shape, ref.data
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace strata {

struct NpyArray {
  std::vector<int64_t> shape;  // C order; empty for a 0-d array (one element)
  std::vector<float> data;     // product(shape) values
};

// Writes NPY v1.0, '<f4', C order, header padded to 64 bytes as numpy does.
// The file is written to `path + ".tmp"` and renamed over `path`, so a reader
// never sees half a file. Errors (kIo, kInvalidArgument) name the path.
Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

// Reads a version 1, 2 or 3 .npy file of '<f4' (or '<f8' / '<f2', converted
// to float), C order. Corrupt or truncated files are kDataLoss naming the
// file and the problem; an unsupported dtype or Fortran order is
// kUnimplemented; a missing file kNotFound. Never crashes on junk.
Result<NpyArray> ReadNpyF32(const std::string& path);

// "[37,13,256]" for messages.
std::string NpyShapeString(const std::vector<int64_t>& shape);

}  // namespace strata
