// Causal attention, one (token, kv head) pair per work item: the query heads
// that share a kv head (GQA) are scored in one dot tile, so each K row is read
// once for all of them; then softmax in float32 (max-subtracted) per query
// head, and the probability-weighted sums of V rows in position order, each V
// row again loaded once for the group. A ring's keys are the positions' one
// or two contiguous runs of rows; scores are independent per key and the V
// sum continues across the runs (weighted_sum's accumulate), so the wrap
// changes no bit. Items are taken by the pool's threads one at a time.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernel_table.h"

namespace strata {

void CausalAttention(const AttentionShape& s, const float* q, const KvView& kv, int64_t pos0, int64_t n_tok, int64_t window,
                     float* out, ThreadPool* pool) {
  const internal::KernelTable& k = internal::ActiveKernels();
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int64_t max_keys = window > 0 ? std::min<int64_t>(window, pos0 + n_tok) : pos0 + n_tok;
  auto work = [&](int64_t begin, int64_t end) {
    // [group][n_keys] scores, then probabilities.
    std::vector<float> scores(static_cast<size_t>(group * max_keys));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / s.n_kv_heads;
      const int kvh = static_cast<int>(item % s.n_kv_heads);
      const int64_t p = pos0 + t;
      const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const int64_t n_keys = p - first + 1;
      // The keys as runs of consecutive rows: [first % capacity, ...) then from row 0.
      const int64_t row0 = first % kv.capacity;
      const int64_t run0 = std::min(n_keys, kv.capacity - row0);
      const int64_t head0 = static_cast<int64_t>(kvh) * group;  // the first query head of this kv head
      const float* k_rows = kv.k + static_cast<int64_t>(kvh) * s.head_dim;
      const float* v_rows = kv.v + static_cast<int64_t>(kvh) * s.head_dim;
      const float* qt = q + t * q_dim + head0 * s.head_dim;
      // Each score is the ISA's fixed-order dot, whatever the tile's shape.
      k.dot_tile(k_rows + row0 * kv_dim, kv_dim, run0, qt, s.head_dim, group, s.head_dim, scores.data(), n_keys);
      if (run0 < n_keys)
        k.dot_tile(k_rows, kv_dim, n_keys - run0, qt, s.head_dim, group, s.head_dim, scores.data() + run0, n_keys);
      for (int g = 0; g < group; ++g) {
        float* pr = scores.data() + g * n_keys;
        for (int64_t j = 0; j < n_keys; ++j) pr[j] *= scale;
        k.softmax(pr, n_keys);
      }
      // The group's outputs are adjacent heads; each V row is loaded once for all.
      float* ot = out + t * q_dim + head0 * s.head_dim;
      k.weighted_sum(scores.data(), n_keys, group, v_rows + row0 * kv_dim, kv_dim, run0, s.head_dim, ot, s.head_dim, false);
      if (run0 < n_keys)
        k.weighted_sum(scores.data() + run0, n_keys, group, v_rows, kv_dim, n_keys - run0, s.head_dim, ot, s.head_dim, true);
    }
  };
  const int64_t items = n_tok * s.n_kv_heads;
  if (pool) pool->ParallelForDynamic(items, 1, work);
  else work(0, items);
}

}  // namespace strata
