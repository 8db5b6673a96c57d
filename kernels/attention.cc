// Causal attention: one (token, head) pair per work item, taken by the
// pool's threads a token at a time. Scores are computed with the dispatched f32 dot, softmax in float32
// (max-subtracted), then the weighted sum of V rows in position order.
#include "kernels/attention.h"

#include <cmath>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace strata {

void CausalAttention(const AttentionShape& s, const float* q, const float* k_cache, const float* v_cache,
                     int64_t pos0, int64_t n_tok, float* out, ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(pos0 + n_tok));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / s.n_heads;
      const int h = static_cast<int>(item % s.n_heads);
      const int kvh = h / group;
      const int64_t n_keys = pos0 + t + 1;
      const float* qh = q + t * q_dim + static_cast<int64_t>(h) * s.head_dim;
      for (int64_t j = 0; j < n_keys; ++j)
        scores[j] = DotF32(qh, k_cache + j * kv_dim + static_cast<int64_t>(kvh) * s.head_dim, s.head_dim) * scale;
      Softmax(scores.data(), n_keys);
      float* oh = out + t * q_dim + static_cast<int64_t>(h) * s.head_dim;
      for (int d = 0; d < s.head_dim; ++d) oh[d] = 0.0f;
      for (int64_t j = 0; j < n_keys; ++j)
        AxpyF32(scores[j], v_cache + j * kv_dim + static_cast<int64_t>(kvh) * s.head_dim, oh, s.head_dim);
    }
  };
  const int64_t items = n_tok * s.n_heads;
  // Later tokens attend to more keys: threads take one token's heads at a
  // time so that the work evens out.
  if (pool) pool->ParallelForDynamic(items, s.n_heads, work);
  else work(0, items);
}

}  // namespace strata
