// The per-rank thread pool (common/thread_pool.h): every index is covered
// exactly once by static and dynamic splits, chunk bounds are respected, and
// the pool is reusable many times in a row (the decode hand-off).
#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace strata {
namespace {

void ExpectCoveredOnce(const std::vector<std::atomic<int>>& hits) {
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i;
}

TEST(ThreadPoolTest, StaticAndDynamicSplitsCoverEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 8, 9, 64, 1000, 11008}) {
      for (int64_t chunk : {1, 8, 13, 128, 20000}) {
        SCOPED_TRACE(std::to_string(threads) + " threads, n " + std::to_string(n) + ", chunk " + std::to_string(chunk));
        std::vector<std::atomic<int>> a(n), b(n);
        pool.ParallelForGrain(n, chunk, [&](int64_t s, int64_t e) {
          EXPECT_TRUE(s % chunk == 0 && s < e && e <= n);
          for (int64_t i = s; i < e; ++i) a[i].fetch_add(1);
        });
        ExpectCoveredOnce(a);
        pool.ParallelForDynamic(n, chunk, [&](int64_t s, int64_t e) {
          // Dynamic chunks are exactly [k * chunk, min(n, (k + 1) * chunk)).
          EXPECT_EQ(s % chunk, 0);
          EXPECT_EQ(e, std::min(n, s + chunk));
          for (int64_t i = s; i < e; ++i) b[i].fetch_add(1);
        });
        ExpectCoveredOnce(b);
      }
    }
  }
}

TEST(ThreadPoolTest, ManyShortJobsInARow) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 20000; ++rep) {
    if (rep % 2)
      pool.ParallelForDynamic(16, 4, [&](int64_t s, int64_t e) { sum.fetch_add(e - s); });
    else
      pool.ParallelFor(16, [&](int64_t s, int64_t e) { sum.fetch_add(e - s); });
  }
  EXPECT_EQ(sum.load(), 16 * 20000);
}

}  // namespace
}  // namespace strata
