// MatMul and DotRow: tiling around the per-ISA dot tile (kernel_table.h).
//
// Blocking: rows are split between threads in parts that are multiples of a
// row tile (ParallelForGrain). A thread dequantizes one tile of rows (about
// 256 KiB of f32, at least 8 rows; F32 weights are used in place) into its own
// buffer, which stays in L2, then runs the ISA's dot tile over all tokens in
// blocks of kTokenBlock, so the activations of a block stay in L1/L2 while the
// tile's rows stream past them. Decode (n_tok = 1) therefore reads every weight
// byte exactly once. Every output element is computed by the same
// dequantize-then-dot sequence whatever the tile, block or thread split is,
// which is the determinism contract of matmul.h.
#include "kernels/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "common/status.h"
#include "kernels/kernel_table.h"

namespace strata {
namespace {

constexpr int64_t kTileBytes = 256 * 1024;  // f32 row tile, sized for L2
constexpr int64_t kMinTileRows = 8;
constexpr int64_t kMaxTileRows = 64;
constexpr int64_t kTokenBlock = 48;         // tokens whose activations stay hot

// A per-thread 64-byte aligned f32 scratch buffer that only grows.
float* ScratchFloats(int64_t n) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  if (buf.size < n) {
    std::free(buf.data);
    const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) & ~size_t{63};
    buf.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    STRATA_CHECK_MSG(buf.data != nullptr, "out of memory for a kernel scratch buffer");
    buf.size = n;
  }
  return buf.data;
}

void CheckView(const MatrixView& w) {
  const TypeTraits& t = Traits(w.type);
  STRATA_CHECK_MSG(internal::DequantSlot(w.type) >= 0, std::string("MatMul: no kernel for ") + t.name);
  STRATA_CHECK_MSG(w.n_in >= 0 && w.n_in % t.block_elems == 0, "MatMul: n_in is not a multiple of the block");
  STRATA_CHECK_MSG(w.row_bytes >= static_cast<uint64_t>(w.n_in / t.block_elems * t.block_bytes),
                   "MatMul: row_bytes smaller than a row");
  STRATA_CHECK_MSG(w.type != TensorType::kF32 || w.row_bytes % sizeof(float) == 0,
                   "MatMul: F32 row_bytes not a multiple of 4");
}

void MatMulRows(const internal::KernelTable& k, const MatrixView& w, const float* x, int64_t n_tok, float* y,
                int64_t r_begin, int64_t r_end, int64_t tile_rows) {
  const int slot = internal::DequantSlot(w.type);
  STRATA_CHECK(slot >= 0);
  const internal::DequantFn dequant = k.dequant[slot];
  const bool in_place = w.type == TensorType::kF32;
  float* tile = in_place ? nullptr : ScratchFloats(tile_rows * w.n_in);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += tile_rows) {
    const int64_t nr = std::min(tile_rows, r_end - r0);
    const float* rows;
    int64_t stride;
    if (in_place) {
      rows = reinterpret_cast<const float*>(w.data + r0 * w.row_bytes);
      stride = static_cast<int64_t>(w.row_bytes / sizeof(float));
    } else {
      for (int64_t r = 0; r < nr; ++r) dequant(w.data + (r0 + r) * w.row_bytes, tile + r * w.n_in, w.n_in);
      rows = tile;
      stride = w.n_in;
    }
    for (int64_t t0 = 0; t0 < n_tok; t0 += kTokenBlock) {
      const int64_t nt = std::min(kTokenBlock, n_tok - t0);
      k.dot_tile(rows, stride, nr, x + t0 * w.n_in, w.n_in, nt, w.n_in, y + t0 * w.n_out + r0, w.n_out);
    }
  }
}

void MatMulWith(const internal::KernelTable& k, const MatrixView& w, const float* x, int64_t n_tok, float* y,
                ThreadPool* pool) {
  CheckView(w);
  if (w.n_out == 0 || n_tok <= 0) return;
  const int64_t row_f32_bytes = std::max<int64_t>(1, w.n_in) * static_cast<int64_t>(sizeof(float));
  const int64_t tile_rows = std::clamp(kTileBytes / row_f32_bytes / kMinTileRows * kMinTileRows, kMinTileRows, kMaxTileRows);
  if (pool == nullptr || pool->size() == 1) {
    MatMulRows(k, w, x, n_tok, y, 0, w.n_out, tile_rows);
    return;
  }
  // Smaller parts than a tile when the matrix is small, so every thread works.
  const int64_t per_thread = (w.n_out + pool->size() - 1) / pool->size();
  const int64_t grain = std::clamp<int64_t>(per_thread / kMinTileRows * kMinTileRows, kMinTileRows, tile_rows);
  pool->ParallelForGrain(w.n_out, grain, [&](int64_t begin, int64_t end) {
    MatMulRows(k, w, x, n_tok, y, begin, end, tile_rows);
  });
}

float DotRowWith(const internal::KernelTable& k, TensorType type, const void* row, const float* x, int64_t n) {
  const TypeTraits& t = Traits(type);
  const int slot = internal::DequantSlot(type);
  STRATA_CHECK_MSG(slot >= 0, std::string("DotRow: no kernel for ") + t.name);
  STRATA_CHECK_MSG(n >= 0 && n % t.block_elems == 0, "DotRow: n is not a multiple of the block");
  const float* w = static_cast<const float*>(row);
  if (type != TensorType::kF32) {
    float* buf = ScratchFloats(std::max<int64_t>(n, 1));
    k.dequant[slot](row, buf, n);
    w = buf;
  }
  float y;
  k.dot_tile(w, n, 1, x, n, 1, n, &y, 1);
  return y;
}

}  // namespace

float DotRow(TensorType type, const void* row, const float* x, int64_t n) {
  return DotRowWith(internal::ActiveKernels(), type, row, x, n);
}

float DotRow(Isa isa, TensorType type, const void* row, const float* x, int64_t n) {
  return DotRowWith(internal::KernelsFor(isa), type, row, x, n);
}

void MatMul(const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
  MatMulWith(internal::ActiveKernels(), w, x, n_tok, y, pool);
}

void MatMul(Isa isa, const MatrixView& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool) {
  MatMulWith(internal::KernelsFor(isa), w, x, n_tok, y, pool);
}

}  // namespace strata
