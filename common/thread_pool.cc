// The per-rank thread pool.
#include "common/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

#include "common/trace.h"

namespace strata {
namespace {

// Part i of n split into `parts` chunks aligned to `grain`.
void PartRange(int64_t n, int64_t grain, int parts, int i, int64_t* begin, int64_t* end) {
  int64_t units = (n + grain - 1) / grain;
  int64_t per = units / parts, extra = units % parts;
  int64_t ub = i * per + std::min<int64_t>(i, extra);
  int64_t ue = ub + per + (i < extra ? 1 : 0);
  *begin = std::min(n, ub * grain);
  *end = std::min(n, ue * grain);
}

// Polls `done` for up to kSpinMicros before the caller sleeps. Short: when
// there are more runnable threads than cores, every spinning microsecond is
// taken from a thread with work to do.
constexpr int64_t kSpinMicros = 20;

template <class Done>
bool SpinUntil(Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= until) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int ThreadPool::AvailableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  ParallelForGrain(n, 1, fn);
}

void ThreadPool::ParallelForGrain(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  Run(n, grain, false, fn);
}

void ThreadPool::ParallelForDynamic(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  Run(n, chunk, true, fn);
}

void ThreadPool::Run(int64_t n, int64_t grain, bool dynamic, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n_threads_ == 1 || n <= grain) {
    if (!dynamic) return fn(0, n);
    for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain));
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_grain_ = grain;
  job_dynamic_ = dynamic;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    // Under the mutex so that a worker about to sleep cannot miss the bump.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_cv_.notify_all();
  RunPart(0);
  if (SpinUntil([this] { return pending_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
}

// Thread `index`'s share of the current job.
void ThreadPool::RunPart(int index) {
  if (job_dynamic_) {
    for (;;) {
      const int64_t b = next_.fetch_add(job_grain_, std::memory_order_relaxed);
      if (b >= job_n_) return;
      (*job_)(b, std::min(job_n_, b + job_grain_));
    }
  }
  int64_t b, e;
  PartRange(job_n_, job_grain_, n_threads_, index, &b, &e);
  if (b < e) (*job_)(b, e);
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    if (!SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    {
      TraceSpan span("pool work", "compute");
      RunPart(index);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace strata
