// Trace recording and its trace-event JSON form.
#include "common/trace.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace strata {

Tracer& Tracer::Get() {
  static Tracer t;
  return t;
}

int Tracer::ThreadIndex() {
  static std::atomic<int> next{0};
  thread_local int index = next.fetch_add(1);
  return index;
}

void Tracer::Record(std::string name, const char* category, int64_t t0, int64_t t1) {
  TraceEvent e{std::move(name), category, t0, std::max<int64_t>(0, t1 - t0), ThreadIndex()};
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

std::vector<TraceEvent> Tracer::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(events_);
}

namespace {

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

}  // namespace

void AppendTraceJson(const std::vector<TraceEvent>& events, int rank, const std::string& host, std::string* out) {
  auto add = [&](const std::string& obj) {
    if (!out->empty()) *out += ",\n";
    *out += obj;
  };
  char buf[512];
  std::snprintf(buf, sizeof buf, R"J({"ph":"M","name":"process_name","pid":%d,"tid":0,"args":{"name":"rank %d (%s)"}})J", rank,
                rank, Escape(host).c_str());
  add(buf);
  std::snprintf(buf, sizeof buf, R"J({"ph":"M","name":"process_sort_index","pid":%d,"tid":0,"args":{"sort_index":%d}})J", rank, rank);
  add(buf);
  std::map<int, bool> threads;
  for (const TraceEvent& e : events) threads[e.tid] = true;
  for (const auto& [tid, unused] : threads) {
    std::snprintf(buf, sizeof buf, R"J({"ph":"M","name":"thread_name","pid":%d,"tid":%d,"args":{"name":"%s"}})J", rank, tid,
                  tid == 0 ? "main" : ("worker " + std::to_string(tid)).c_str());
    add(buf);
  }
  for (const TraceEvent& e : events) {
    std::snprintf(buf, sizeof buf, R"J({"ph":"X","name":"%s","cat":"%s","pid":%d,"tid":%d,"ts":%lld,"dur":%lld})J",
                  Escape(e.name).c_str(), e.category, rank, e.tid, static_cast<long long>(e.ts_us),
                  static_cast<long long>(e.dur_us));
    add(buf);
  }
}

std::string TraceSummary(const std::vector<TraceEvent>& events) {
  if (events.empty()) return "no events";
  int64_t t0 = INT64_MAX, t1 = 0, busy = 0, wait = 0;
  for (const TraceEvent& e : events) {
    t0 = std::min(t0, e.ts_us);
    t1 = std::max(t1, e.ts_us + e.dur_us);
    if (e.tid != 0) continue;  // the main thread's timeline; pool threads run inside its spans
    if (std::string_view(e.category) == "compute") busy += e.dur_us;
    if (std::string_view(e.category) == "wait") wait += e.dur_us;
  }
  const double span = std::max<int64_t>(1, t1 - t0);
  char buf[128];
  std::snprintf(buf, sizeof buf, "busy %.1f%%, waiting %.1f%% of %.1f ms", 100.0 * busy / span, 100.0 * wait / span, span / 1000.0);
  return buf;
}

}  // namespace strata
