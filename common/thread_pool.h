// A fixed pool of worker threads per rank (`-t N`). Threads are created once;
// ParallelFor splits a range into one contiguous part per thread, and the
// calling thread takes part 0, so a pool of 1 runs everything inline.
//
//   ThreadPool pool(4);
//   pool.ParallelFor(n_rows, [&](int64_t begin, int64_t end) { ... });
//
// The split depends only on (n, thread count), and kernels compute each output
// element independently, so results never depend on the partition.
//
// Hand-off: a decode step issues a few hundred short ParallelFor calls, so
// threads first spin briefly on an atomic generation counter (a wake-up
// through the kernel costs several microseconds each way) and only then
// sleep on a condition variable; idle pools cost nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Calls fn(begin, end) over disjoint parts covering [0, n); returns when all
  // parts are done. Not reentrant: fn must not call ParallelFor on this pool.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);
  // Like ParallelFor, but parts are multiples of `grain` (except the last).
  void ParallelForGrain(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
  // Calls fn(begin, end) over chunks of `chunk` (the last may be shorter)
  // that the threads take in turn from a shared counter, so a thread that
  // runs slower (a busy or preempted core: common on VMs) takes fewer chunks
  // instead of holding the others up. Which thread runs a chunk varies; the
  // chunks themselves do not.
  void ParallelForDynamic(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn);

  // Cores this process may run on (sched_getaffinity), at least 1.
  static int AvailableCores();

 private:
  void WorkerLoop(int index);
  void Run(int64_t n, int64_t grain, bool dynamic, const std::function<void(int64_t, int64_t)>& fn);
  void RunPart(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  bool job_dynamic_ = false;
  std::atomic<int64_t> next_{0};         // dynamic jobs: the first index not taken
  std::atomic<uint64_t> generation_{0};  // bumped once per job (after job_ is set)
  std::atomic<int> pending_{0};          // workers still running the current job
  std::atomic<bool> stop_{false};
};

}  // namespace strata
