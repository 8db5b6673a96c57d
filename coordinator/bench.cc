// RunBenchmark: the prefill and decode tests of bench.h, driven through the
// scheduler (coordinator/scheduler.h) exactly as generate runs them.
#include "coordinator/bench.h"

#include <algorithm>
#include <chrono>

#include "coordinator/scheduler.h"

namespace strata {
namespace {

StageStats Minus(const StageStats& a, const StageStats& b) {
  StageStats d = a;
  d.busy_s = a.busy_s - b.busy_s;
  d.batches = a.batches - b.batches;
  d.tokens = a.tokens - b.tokens;
  d.bytes_sent = a.bytes_sent - b.bytes_sent;
  return d;
}

// Runs the jobs and measures them; seq ids start at `first_id`.
Result<BenchTest> RunTest(Pipeline& pipeline, std::vector<SequenceJob>& jobs, const BenchOptions& opts) {
  SchedulerOptions so;
  so.inflight = opts.inflight;
  so.chunk = opts.chunk;
  so.n_ctx = opts.n_ctx;
  STRATA_ASSIGN_OR_RETURN(std::vector<StageStats> before, pipeline.Stats());
  const auto t0 = std::chrono::steady_clock::now();
  STRATA_RETURN_IF_ERROR(RunSequences(pipeline, jobs, so, nullptr));
  BenchTest t;
  t.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  STRATA_ASSIGN_OR_RETURN(std::vector<StageStats> after, pipeline.Stats());
  for (size_t s = 0; s < after.size() && s < before.size(); ++s) t.delta.push_back(Minus(after[s], before[s]));
  for (const SequenceJob& j : jobs) t.first_token_ms += j.first_token_ms / static_cast<double>(jobs.size());
  return t;
}

}  // namespace

Spread SpreadOf(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

Result<BenchResult> RunBenchmark(Pipeline& pipeline, const std::vector<int32_t>& prompt, const BenchOptions& opts) {
  if (prompt.empty()) return InvalidArgument("bench: no prompt tokens to draw from");
  if (opts.prompt_tokens < 1 || opts.gen_tokens < 1 || opts.parallel < 1 || opts.reps < 1)
    return InvalidArgument("bench: --prompt-tokens, --gen-tokens, --parallel and --reps must be at least 1");
  if (opts.prompt_tokens >= opts.n_ctx || opts.gen_tokens + 1 > opts.n_ctx)
    return InvalidArgument("bench: --prompt-tokens " + std::to_string(opts.prompt_tokens) + " / --gen-tokens " +
                           std::to_string(opts.gen_tokens) + " do not fit --ctx " + std::to_string(opts.n_ctx));
  std::vector<int32_t> tokens;
  while (static_cast<int64_t>(tokens.size()) < opts.prompt_tokens)
    tokens.insert(tokens.end(), prompt.begin(), prompt.end());
  tokens.resize(static_cast<size_t>(opts.prompt_tokens));

  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.repeat_last_n = 0;
  uint64_t next_id = 1;
  auto make_jobs = [&](const std::vector<int32_t>& p, int n_predict) {
    std::vector<SequenceJob> jobs(static_cast<size_t>(opts.parallel));
    for (SequenceJob& j : jobs) {
      j.seq_id = next_id++;
      j.prompt = p;
      j.n_predict = n_predict;
      j.ignore_eos = true;
      j.sampling = greedy;
    }
    return jobs;
  };

  // Warm-up: touches every weight page once, outside the measurements.
  {
    std::vector<SequenceJob> warm = make_jobs({tokens.begin(), tokens.begin() + std::min<int64_t>(8, opts.prompt_tokens)}, 2);
    warm.resize(1);
    STRATA_RETURN_IF_ERROR(RunSequences(pipeline, warm, {.n_ctx = opts.n_ctx, .eos_ids = {}}, nullptr));
  }
  const uint64_t prompt_total = static_cast<uint64_t>(opts.prompt_tokens) * static_cast<uint64_t>(opts.parallel);
  const uint64_t gen_total = static_cast<uint64_t>(opts.gen_tokens) * static_cast<uint64_t>(opts.parallel);
  BenchResult r;
  for (int rep = 0; rep < opts.reps; ++rep) {
    BenchTest p, d;
    if (opts.decode_at_depth) {
      // One run: the prefill test ends when every sequence has its first
      // token, the decode test is the rest; both share the run's counters.
      std::vector<SequenceJob> jobs = make_jobs(tokens, opts.gen_tokens + 1);
      STRATA_ASSIGN_OR_RETURN(BenchTest whole, RunTest(pipeline, jobs, opts));
      double first_ms = 0, done_ms = 0;
      for (const SequenceJob& j : jobs) {
        first_ms = std::max(first_ms, j.first_token_ms);
        done_ms = std::max(done_ms, j.done_ms);
      }
      whole.busy_wall_s = whole.wall_s;
      p = d = whole;
      p.wall_s = first_ms * 1e-3;
      d.wall_s = (done_ms - first_ms) * 1e-3;
      if (p.wall_s <= 0 || d.wall_s <= 0) return Internal("bench: the sequences' first and last token times are missing");
    } else {
      std::vector<SequenceJob> pp = make_jobs(tokens, 1);
      STRATA_ASSIGN_OR_RETURN(p, RunTest(pipeline, pp, opts));
      std::vector<SequenceJob> tg = make_jobs({tokens[0]}, opts.gen_tokens);
      STRATA_ASSIGN_OR_RETURN(d, RunTest(pipeline, tg, opts));
    }
    p.tokens = prompt_total;
    d.tokens = gen_total;
    r.prefill.push_back(std::move(p));
    r.decode.push_back(std::move(d));
  }
  STRATA_ASSIGN_OR_RETURN(r.final_stats, pipeline.Stats());
  return r;
}

}  // namespace strata
