// MatMul and DotRow: tiling around the per-ISA kernels (kernel_table.h).
//
// Quantized types (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K): the integer path. The
// calling thread quantizes every token's activations once per call into its
// own growing buffer (in parallel over tokens when there are several), which
// the pool's threads then only read. Threads take chunks of rows (multiples
// of 8, about 8 chunks per thread) in turn; a thread walks its rows in tiles of about 256 KiB of stored
// weights and, per tile, the tokens in blocks whose quantized activations
// take about 256 KiB, handing each (tile, block) to the ISA's quantized dot
// tile (qdot_simd.h / kernels_ref.cc: 8 rows per pass for one token, 4 rows x
// 2 tokens in registers otherwise; on the row-interleaved layout of
// interleave.h, groups of 8 rows against up to 4 tokens). Decode therefore
// reads every weight byte once. Each element is the same fixed
// integer-sum-then-FMA-chain sequence whatever the split or layout.
//
// Float types (F32, F16, BF16): threads take chunks of rows in turn, multiples
// of a row tile when the matrix is large enough. A thread dequantizes one tile of rows (about
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
#include "kernels/interleave.h"
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

// Per-thread 64-byte aligned byte buffers that only grow. kAct holds the
// quantized activations of a MatMul call (read by the pool's threads while
// the caller waits); kDotRow those of DotRow, so the two never alias.
enum class ByteScratch { kAct, kDotRow };

uint8_t* ScratchBytes(ByteScratch which, int64_t n) {
  struct Buffer {
    uint8_t* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer bufs[2];
  Buffer& buf = bufs[static_cast<int>(which)];
  if (buf.size < n) {
    std::free(buf.data);
    const size_t bytes = (static_cast<size_t>(n) + 63) & ~size_t{63};
    buf.data = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
    STRATA_CHECK_MSG(buf.data != nullptr, "out of memory for a kernel scratch buffer");
    buf.size = n;
  }
  return buf.data;
}

// Rows per chunk when threads take chunks in turn (ThreadPool::ParallelForDynamic):
// about 8 chunks per thread, so a slowed thread costs at most a chunk or so,
// in multiples of `grain` rows.
int64_t DynamicChunkRows(int64_t n_out, int threads, int64_t grain) {
  const int64_t chunks = 8 * static_cast<int64_t>(std::max(1, threads));
  return std::max<int64_t>(grain, (n_out + chunks - 1) / chunks / grain * grain);
}

constexpr int64_t kQTileBytes = 256 * 1024;  // stored weight rows per tile
constexpr int64_t kQActBlockBytes = 256 * 1024;  // quantized activations per token block
constexpr int64_t kQRowGrain = 8;  // rows per decode pass of the micro-kernels

// Rows [r_begin, r_end) (multiples of 8 for the interleaved layout, whose
// rows start at their group: 8 rows per InterleavedGroupBytes).
void QMatMulRows(const internal::KernelTable& k, const MatrixView& w, const uint8_t* act,
                 const internal::ActLayout& l, int64_t n_tok, float* y, int64_t r_begin, int64_t r_end) {
  const bool x8 = w.layout == MatrixLayout::kInterleaved8;
  const internal::QDotTileFn qdot = x8 ? k.qdot_x8[internal::QDotX8Slot(w.type)] : k.qdot[internal::QDotSlot(w.type)];
  const uint64_t group_bytes = x8 ? InterleavedGroupBytes(w.type, w.n_in) : 0;
  const int64_t tile_rows =
      std::max<int64_t>(kQRowGrain, kQTileBytes / static_cast<int64_t>(std::max<uint64_t>(w.row_bytes, 1)) /
                                        kQRowGrain * kQRowGrain);
  const int64_t tok_block = std::max<int64_t>(2, kQActBlockBytes / l.stride / 2 * 2);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += tile_rows) {
    const int64_t nr = std::min(tile_rows, r_end - r0);
    const uint8_t* rows = x8 ? w.data + static_cast<uint64_t>(r0 / 8) * group_bytes : w.data + r0 * w.row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += tok_block) {
      const int64_t nt = std::min(tok_block, n_tok - t0);
      qdot(rows, w.row_bytes, nr, act + t0 * l.stride, l, nt, y + t0 * w.n_out + r0, w.n_out);
    }
  }
}

void QMatMul(const internal::KernelTable& k, const MatrixView& w, const float* x, int64_t n_tok, float* y,
             ThreadPool* pool) {
  const internal::ActLayout l = internal::MakeActLayout(internal::ActFormatFor(w.type), w.n_in);
  uint8_t* act = ScratchBytes(ByteScratch::kAct, n_tok * l.stride);  // [n_tok][l.stride]
  const bool parallel = pool != nullptr && pool->size() > 1;
  auto quantize = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) k.quantize_act(x + t * w.n_in, l, act + t * l.stride);
  };
  if (parallel && n_tok > 1)
    pool->ParallelFor(n_tok, quantize);
  else
    quantize(0, n_tok);
  if (!parallel) {
    QMatMulRows(k, w, act, l, n_tok, y, 0, w.n_out);
    return;
  }
  pool->ParallelForDynamic(w.n_out, DynamicChunkRows(w.n_out, pool->size(), kQRowGrain), [&](int64_t begin, int64_t end) {
    QMatMulRows(k, w, act, l, n_tok, y, begin, end);
  });
}

void CheckView(const MatrixView& w) {
  const TypeTraits& t = Traits(w.type);
  STRATA_CHECK_MSG(w.layout == MatrixLayout::kRows || CanInterleave(w.type, w.n_out),
                   std::string("MatMul: no interleaved layout for ") + t.name + " with this row count");
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
  if (internal::QDotSlot(w.type) >= 0) {
    QMatMul(k, w, x, n_tok, y, pool);
    return;
  }
  const int64_t row_f32_bytes = std::max<int64_t>(1, w.n_in) * static_cast<int64_t>(sizeof(float));
  const int64_t tile_rows = std::clamp(kTileBytes / row_f32_bytes / kMinTileRows * kMinTileRows, kMinTileRows, kMaxTileRows);
  if (pool == nullptr || pool->size() == 1) {
    MatMulRows(k, w, x, n_tok, y, 0, w.n_out, tile_rows);
    return;
  }
  // Smaller parts than a tile when the matrix is small, so every thread works.
  const int64_t per_thread = (w.n_out + pool->size() - 1) / pool->size();
  const int64_t grain = std::clamp<int64_t>(per_thread / kMinTileRows * kMinTileRows, kMinTileRows, tile_rows);
  pool->ParallelForDynamic(w.n_out, std::max(grain, DynamicChunkRows(w.n_out, pool->size(), kMinTileRows)),
                           [&](int64_t begin, int64_t end) { MatMulRows(k, w, x, n_tok, y, begin, end, tile_rows); });
}

float DotRowWith(const internal::KernelTable& k, TensorType type, const void* row, const float* x, int64_t n) {
  const TypeTraits& t = Traits(type);
  const int slot = internal::DequantSlot(type);
  STRATA_CHECK_MSG(slot >= 0, std::string("DotRow: no kernel for ") + t.name);
  STRATA_CHECK_MSG(n >= 0 && n % t.block_elems == 0, "DotRow: n is not a multiple of the block");
  if (internal::QDotSlot(type) >= 0) {
    // The same kernel as MatMul's, on one row and one token.
    const internal::ActLayout l = internal::MakeActLayout(internal::ActFormatFor(type), n);
    uint8_t* act = ScratchBytes(ByteScratch::kDotRow, l.stride);
    k.quantize_act(x, l, act);
    float y;
    k.qdot[internal::QDotSlot(type)](static_cast<const uint8_t*>(row), 0, 1, act, l, 1, &y, 1);
    return y;
  }
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
