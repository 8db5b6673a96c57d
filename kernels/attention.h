// Causal grouped-query attention over a KV cache (float32).
//
// For each new token t of a sequence (absolute position p = pos0 + t) and each
// query head h, attends to the cached positions max(0, p - window + 1) .. p
// (0 .. p without a window) of kv head h / (n_heads / n_kv_heads). The cache
// may be a ring: position j lives in row j % capacity, so a sliding-window
// layer keeps only about its window. Each (token, head) output depends only on
// its query and those positions' rows, never on how tokens were batched or
// where the ring wraps, so a sequence gives the same bits whether it runs
// alone or with others, on any split.
#pragma once

#include <cstdint>

#include "common/thread_pool.h"

namespace strata {

struct AttentionShape {
  int n_heads;
  int n_kv_heads;
  int head_dim;
};

// One sequence's cache of one layer: K and V rows of kv_dim floats; position
// j at row j % capacity. Rows for every position a token of the batch
// attends to must be present.
struct KvView {
  const float* k;
  const float* v;
  int64_t capacity;
};

// q:   [n_tok][n_heads * head_dim]
// out: [n_tok][n_heads * head_dim]
// window: 0 = every earlier position, else the last `window` positions.
void CausalAttention(const AttentionShape& shape, const float* q, const KvView& kv, int64_t pos0, int64_t n_tok,
                     int64_t window, float* out, ThreadPool* pool);

}  // namespace strata
