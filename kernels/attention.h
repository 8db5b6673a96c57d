// Causal grouped-query attention over a KV cache of any storage type.
//
// For each new token t of a sequence (absolute position p = pos0 + t) and each
// query head h, attends to the cached positions max(0, p - window + 1) .. p
// (0 .. p without a window) of kv head h / (n_heads / n_kv_heads). The cache
// may be a ring: position j lives in row j % capacity, so a sliding-window
// layer keeps only about its window. Its rows are F32, or F16 / BF16 / Q8_0
// read as they are stored, a tile of keys at a time (no converted copy of the
// cache).
//
// The softmax is computed online over tiles of kAttnChunk keys aligned to
// absolute positions, in segments of kAttnSegment positions whose running
// states (max, sum, weighted V sum) are merged in position order. Each
// (token, head) output depends only on its query and its positions' rows,
// never on how tokens were batched, where the ring wraps, how many threads
// ran or how the work was split (prompt tokens share each tile; a decoding
// token's segments run on different threads), so a sequence gives the same
// bits alone or with others, on any split.
#pragma once

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/tensor_type.h"

namespace strata {

struct AttentionShape {
  int n_heads;
  int n_kv_heads;
  int head_dim;
};

inline constexpr int64_t kAttnChunk = 64;      // keys per tile
inline constexpr int64_t kAttnSegment = 1024;  // positions per segment (a multiple of kAttnChunk)

// The storage types a KV cache may have (head_dim a multiple of 32 for Q8_0).
bool IsKvType(TensorType type);

// One sequence's cache of one layer: a row per position of n_kv_heads *
// head_dim elements in `type`; position j at row j % capacity. Rows for every
// position a token of the batch attends to must be present.
struct KvView {
  TensorType type;
  const uint8_t* k;
  const uint8_t* v;
  uint64_t row_bytes;
  int64_t capacity;
};

// q:   [n_tok][n_heads * head_dim]
// out: [n_tok][n_heads * head_dim]
// window: 0 = every earlier position, else the last `window` positions.
void CausalAttention(const AttentionShape& shape, const float* q, const KvView& kv, int64_t pos0, int64_t n_tok,
                     int64_t window, float* out, ThreadPool* pool);

}  // namespace strata
