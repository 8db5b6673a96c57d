// The server's counters for `GET /metrics` (rank 0), in Prometheus' text
// exposition format (version 0.0.4): requests by endpoint and status, prompt
// and generated tokens, prompt tokens served from the prompt cache, time to
// the first token and between tokens as histograms. Gauges that belong to
// other parts (queue, running sequences, the stages' counters) are passed to
// Render at scrape time. Any thread: counters are atomics, the rest is
// under a mutex.
//
//   Metrics m;
//   m.CountRequest("/v1/completions", 200);
//   m.ObserveFirstToken(0.12);
//   std::string text = m.Render(gauges);   // the body of GET /metrics
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace strata {

// A Prometheus histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  // "name_bucket{le=...} n" lines (cumulative), name_sum, name_count.
  void Render(const std::string& name, std::string* out) const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What the serving loop and the pipeline say at scrape time.
struct StageGauges {
  int stage = 0;
  int rank = 0;
  std::string host;
  double busy_s = 0;         // compute time since the stage started
  double busy_ratio = 0;     // busy_s / the time since the server started
  uint64_t bytes_sent = 0;   // activations sent to the next stage
  uint64_t tokens = 0;       // tokens it ran
};

struct ServingGauges {
  size_t queued = 0;
  size_t running = 0;
  int slots = 0;
  int connections_open = 0;
  uint64_t connections_refused = 0;  // over --max-connections(-per-client): 503 at once
  uint64_t requests_timed_out = 0;   // a request line, headers or body that did not come in time: 408
  std::vector<StageGauges> stages;  // empty when they could not be read in time
  // The prompt cache (coordinator/prefix_cache.h): prompts looked up, of them
  // hits, and the sequences kept now with their bytes.
  uint64_t cache_lookups = 0, cache_hits = 0, cache_evictions = 0, cache_sequences = 0, cache_bytes = 0;
};

class Metrics {
 public:
  Metrics();
  void CountRequest(const std::string& endpoint, int status);
  void AddPromptTokens(uint64_t n) { prompt_tokens_ += n; }
  void AddGeneratedTokens(uint64_t n) { generated_tokens_ += n; }
  // Prompt tokens whose cache was reused instead of computed (the prompt
  // cache feeds it; 0 without one).
  void AddCachedPromptTokens(uint64_t n) { cached_prompt_tokens_ += n; }
  void ObserveFirstToken(double seconds) { ttft_.Observe(seconds); }
  void ObserveInterToken(double seconds) { itl_.Observe(seconds); }

  std::string Render(const ServingGauges& g) const;

  uint64_t prompt_tokens() const { return prompt_tokens_; }
  uint64_t generated_tokens() const { return generated_tokens_; }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) -> count
  std::atomic<uint64_t> prompt_tokens_{0}, generated_tokens_{0}, cached_prompt_tokens_{0};
  Histogram ttft_, itl_;
};

}  // namespace strata
