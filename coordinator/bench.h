// `strata bench`'s measurements (rank 0), over any Pipeline, llama-bench
// style: a prefill test (R sequences of P prompt tokens, up to their first
// token) and a decode test (R sequences generating G tokens each, one token
// per step, after a one-token prompt, or with decode_at_depth after the
// prefill test's prompts, in the same run), repeated; each test also takes every
// stage's counters before and after, for busy %, bubble % and bytes sent.
//
//   BenchOptions o;  o.prompt_tokens = 64;  o.gen_tokens = 32;  o.parallel = 4;
//   STRATA_ASSIGN_OR_RETURN(BenchResult r, RunBenchmark(pipeline, prompt_ids, o));
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "coordinator/pipeline.h"

namespace strata {

struct BenchOptions {
  int64_t prompt_tokens = 64;
  int gen_tokens = 32;
  int parallel = 1;  // sequences at once
  int reps = 3;
  int inflight = 0;  // 0: one micro-batch per stage
  int64_t chunk = 0; // prefill chunk; 0: auto
  int64_t n_ctx = 4096;
  // Decode continues the prompt's sequences (G tokens at depth P, as
  // llama.cpp's peer bench and issue 21's depth figures measure) instead of
  // starting from a one-token prompt; one run gives both tests.
  bool decode_at_depth = false;
};

// One test of one repetition.
struct BenchTest {
  double wall_s = 0;
  uint64_t tokens = 0;            // prompt tokens (prefill) or generated tokens (decode)
  double first_token_ms = 0;      // prefill: mean over the sequences
  double busy_wall_s = 0;         // the wall time `delta` covers, when not wall_s (decode_at_depth: the whole run)
  std::vector<StageStats> delta;  // per stage: counters after minus before
};

struct BenchResult {
  std::vector<BenchTest> prefill, decode;  // one per repetition
  std::vector<StageStats> final_stats;     // every stage at the end (memory)
};

// `prompt` supplies the prompt tokens (repeated as needed); the first one
// starts each decode test's one-token prompt (unless decode_at_depth).
Result<BenchResult> RunBenchmark(Pipeline& pipeline, const std::vector<int32_t>& prompt, const BenchOptions& opts);

// min / median / max of a list.
struct Spread {
  double min = 0, median = 0, max = 0;
};
Spread SpreadOf(std::vector<double> v);

}  // namespace strata
