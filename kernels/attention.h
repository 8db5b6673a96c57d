// Causal grouped-query attention over a KV cache (float32).
//
// For each new token t of a sequence (absolute position pos0 + t) and each
// query head h, attends to cache positions 0 .. pos0 + t of kv head
// h / (n_heads / n_kv_heads). Each (token, head) output depends only on its
// query and the cache, never on how tokens were batched, so a sequence gives
// the same bits whether it runs alone or with others.
#pragma once

#include <cstdint>

#include "common/thread_pool.h"

namespace strata {

struct AttentionShape {
  int n_heads;
  int n_kv_heads;
  int head_dim;
};

// q:   [n_tok][n_heads * head_dim]
// k,v: the sequence's cache, [>= pos0 + n_tok][n_kv_heads * head_dim]
// out: [n_tok][n_heads * head_dim]
void CausalAttention(const AttentionShape& shape, const float* q, const float* k_cache, const float* v_cache,
                     int64_t pos0, int64_t n_tok, float* out, ThreadPool* pool);

}  // namespace strata
