// Per-process trace of what each thread did and when (compute per layer,
// send, receive, waiting), for `--trace FILE`. Events are kept in memory and
// merged by rank 0 into one Chrome trace-event JSON file (opens in Perfetto
// and chrome://tracing). Times are microseconds since the job's common start
// (every rank sets its origin right after an MPI barrier), so tracks of
// different ranks line up.
//
//   Tracer::Get().Enable(rank);
//   { TraceSpan span("layer 3", "compute"); ... }
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace strata {

struct TraceEvent {
  std::string name;
  const char* category;  // "compute", "send", "recv", "wait"
  int64_t ts_us;
  int64_t dur_us;
  int tid;
};

class Tracer {
 public:
  static Tracer& Get();
  void Enable() { enabled_.store(true, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  // Sets time zero (call at the same instant on every rank, after a barrier).
  void SetOrigin() { origin_ = std::chrono::steady_clock::now(); }
  int64_t NowUs() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - origin_).count();
  }
  void Record(std::string name, const char* category, int64_t t0_us, int64_t t1_us);
  std::vector<TraceEvent> Take();
  // Small per-process thread numbers (0 = the first thread that recorded).
  static int ThreadIndex();

 private:
  std::atomic<bool> enabled_{false};
  std::chrono::steady_clock::time_point origin_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::vector<TraceEvent> events_;
};

// Records [construction, destruction) as one event when tracing is on.
class TraceSpan {
 public:
  TraceSpan(std::string name, const char* category)
      : on_(Tracer::Get().enabled()), category_(category), t0_(on_ ? Tracer::Get().NowUs() : 0) {
    if (on_) name_ = std::move(name);
  }
  ~TraceSpan() {
    if (on_) Tracer::Get().Record(std::move(name_), category_, t0_, Tracer::Get().NowUs());
  }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  bool on_;
  const char* category_;
  int64_t t0_;
  std::string name_;
};

// The events of one rank as trace-event JSON objects (pid = rank), with the
// process and thread name records; appended to `out` (comma-separated).
void AppendTraceJson(const std::vector<TraceEvent>& events, int rank, const std::string& host, std::string* out);
// "busy 41.2%, waiting 55.0%" over the span of the events.
std::string TraceSummary(const std::vector<TraceEvent>& events);

}  // namespace strata
