// Prometheus text exposition of the server's metrics (metrics.h). Rank 0.
#include "coordinator/metrics.h"

#include <algorithm>
#include <cstdio>

namespace strata {
namespace {

std::string Num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

// A label value: backslash, quote and newline escaped (the text format's rules).
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Head(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// A metric without labels: its HELP and TYPE lines and its value.
void Single(std::string* out, const char* name, const char* type, const char* help, uint64_t value) {
  Head(out, name, type, help);
  *out += std::string(name) + " " + std::to_string(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[i];
  sum_ += v;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Histogram::Render(const std::string& name, std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    *out += name + "_bucket{le=\"" + Num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += counts_.back();
  *out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  *out += name + "_sum " + Num(sum_) + "\n";
  *out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::CountRequest(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

std::string Metrics::Render(const ServingGauges& g) const {
  std::string out;
  Head(&out, "strata_requests_total", "counter", "HTTP requests answered, by endpoint and status (499: the client went away)");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : requests_)
      out += "strata_requests_total{endpoint=\"" + Label(key.first) + "\",status=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
  }
  Single(&out, "strata_prompt_tokens_total", "counter",
         "prompt tokens of the requests that ran", prompt_tokens_.load());
  Single(&out, "strata_prompt_tokens_cached_total", "counter",
         "prompt tokens served from the prompt cache instead of computed", cached_prompt_tokens_.load());
  Single(&out, "strata_prompt_cache_lookups_total", "counter",
         "prompts looked up in the prompt cache", g.cache_lookups);
  Single(&out, "strata_prompt_cache_hits_total", "counter",
         "prompts that reused a kept sequence's state (hit rate: hits / lookups)", g.cache_hits);
  Single(&out, "strata_prompt_cache_evictions_total", "counter", "kept sequences dropped for room", g.cache_evictions);
  Single(&out, "strata_prompt_cache_sequences", "gauge", "finished sequences kept for reuse", g.cache_sequences);
  Single(&out, "strata_prompt_cache_bytes", "gauge",
         "the kept sequences' state, every stage's layers together", g.cache_bytes);
  Single(&out, "strata_generation_tokens_total", "counter", "tokens generated", generated_tokens_.load());
  Single(&out, "strata_queue_length", "gauge", "requests waiting for a sequence slot", g.queued);
  Single(&out, "strata_running_sequences", "gauge", "sequences being computed", g.running);
  Single(&out, "strata_sequence_slots", "gauge", "sequences that can run at once (--parallel)", g.slots);
  Single(&out, "strata_http_connections", "gauge", "HTTP connections open", g.connections_open);
  Single(&out, "strata_http_connections_refused_total", "counter",
         "connections refused at once (--max-connections, per client)", g.connections_refused);
  Single(&out, "strata_http_requests_timed_out_total", "counter",
         "requests whose line, headers or body did not arrive in time (408)", g.requests_timed_out);
  Head(&out, "strata_time_to_first_token_seconds", "histogram", "from a request's admission to its first token");
  ttft_.Render("strata_time_to_first_token_seconds", &out);
  Head(&out, "strata_inter_token_latency_seconds", "histogram", "between two tokens of one sequence");
  itl_.Render("strata_inter_token_latency_seconds", &out);
  if (!g.stages.empty()) {
    const auto labels = [](const StageGauges& s) {
      return "{stage=\"" + std::to_string(s.stage) + "\",rank=\"" + std::to_string(s.rank) + "\",host=\"" + Label(s.host) + "\"}";
    };
    Head(&out, "strata_stage_busy_seconds_total", "counter", "compute time of each pipeline stage");
    for (const StageGauges& s : g.stages) out += "strata_stage_busy_seconds_total" + labels(s) + " " + Num(s.busy_s) + "\n";
    Head(&out, "strata_stage_busy_ratio", "gauge", "each stage's compute time over the server's uptime");
    for (const StageGauges& s : g.stages) out += "strata_stage_busy_ratio" + labels(s) + " " + Num(s.busy_ratio) + "\n";
    Head(&out, "strata_stage_sent_bytes_total", "counter", "activation bytes each stage sent to the next");
    for (const StageGauges& s : g.stages) out += "strata_stage_sent_bytes_total" + labels(s) + " " + std::to_string(s.bytes_sent) + "\n";
    Head(&out, "strata_stage_tokens_total", "counter", "tokens each stage ran");
    for (const StageGauges& s : g.stages) out += "strata_stage_tokens_total" + labels(s) + " " + std::to_string(s.tokens) + "\n";
  }
  return out;
}

}  // namespace strata
