// Causal attention, one (token, kv head) pair per work item: the query heads
// that share a kv head (GQA) are scored in one dot tile, so each K row is read
// once for all of them; then softmax in float32 (max-subtracted) per query
// head, and the probability-weighted sums of V rows in position order, each V
// row again loaded once for the group.
// Items are taken by the pool's threads one at a time.
#include "kernels/attention.h"

#include <cmath>
#include <vector>

#include "kernels/kernel_table.h"

namespace strata {

void CausalAttention(const AttentionShape& s, const float* q, const float* k_cache, const float* v_cache,
                     int64_t pos0, int64_t n_tok, float* out, ThreadPool* pool) {
  const internal::KernelTable& k = internal::ActiveKernels();
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  auto work = [&](int64_t begin, int64_t end) {
    // [group][n_keys] scores, then probabilities.
    std::vector<float> scores(static_cast<size_t>(group * (pos0 + n_tok)));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / s.n_kv_heads;
      const int kvh = static_cast<int>(item % s.n_kv_heads);
      const int64_t n_keys = pos0 + t + 1;
      const int64_t head0 = static_cast<int64_t>(kvh) * group;  // the first query head of this kv head
      const float* k_rows = k_cache + static_cast<int64_t>(kvh) * s.head_dim;
      const float* v_rows = v_cache + static_cast<int64_t>(kvh) * s.head_dim;
      // Each score is the ISA's fixed-order dot, whatever the tile's shape.
      k.dot_tile(k_rows, kv_dim, n_keys, q + t * q_dim + head0 * s.head_dim, s.head_dim, group, s.head_dim,
                 scores.data(), n_keys);
      for (int g = 0; g < group; ++g) {
        float* p = scores.data() + g * n_keys;
        for (int64_t j = 0; j < n_keys; ++j) p[j] *= scale;
        k.softmax(p, n_keys);
      }
      // The group's outputs are adjacent heads; each V row is loaded once for all.
      k.weighted_sum(scores.data(), n_keys, group, v_rows, kv_dim, n_keys, s.head_dim,
                     out + t * q_dim + head0 * s.head_dim, s.head_dim);
    }
  };
  const int64_t items = n_tok * s.n_kv_heads;
  if (pool) pool->ParallelForDynamic(items, 1, work);
  else work(0, items);
}

}  // namespace strata
