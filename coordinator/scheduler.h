// Rank 0's scheduler: runs several sequences to completion over a Pipeline,
// keeping up to `inflight` micro-batches in the pipeline at once so that no
// stage idles while another works.
//
//   prefill   a prompt is cut into chunks of `chunk` tokens that follow each
//             other down the stages (stage 1 runs chunk 2 while stage 2 runs
//             chunk 1); chunks of several prompts may share a micro-batch,
//             up to an even share of the waiting prompt tokens per free
//             slot (many short prompts fill every slot, not one batch).
//             Prefill goes first: it sets the time to the first token.
//   decode    the sequences past their prompt are grouped into `inflight`
//             micro-batches of one token each; when a micro-batch's tokens
//             come back, its sequences go out again with the next token.
//
// Batching never changes a sequence's numbers: every kernel's result for a
// token depends on that token's own rows only (kernels/matmul.h), attention
// reads only the sequence's own cache, and sampling is keyed by (seed, step),
// so each sequence's tokens equal its one-sequence, one-rank run.
//
//   std::vector<SequenceJob> jobs(4);  // seq_id, prompt, n_predict, sampling each
//   STRATA_RETURN_IF_ERROR(RunSequences(pipeline, jobs, {.n_ctx = 4096, .eos_ids = cfg.eos_ids}, nullptr));
//
// Sequences may also join while others run (the server): a Scheduler takes
// jobs at any time and advances by one returned batch per Step().
//
//   Scheduler sched(pipeline, opts);
//   STRATA_RETURN_IF_ERROR(sched.Add(&job, on_token, on_done));
//   while (!sched.idle()) STRATA_RETURN_IF_ERROR(sched.Step());
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/pipeline.h"
#include "coordinator/prefix_cache.h"
#include "worker/sampler.h"

namespace strata {

struct SequenceJob {
  uint64_t seq_id = 0;
  std::vector<int32_t> prompt;  // at least one token
  int n_predict = 16;           // tokens to generate
  bool ignore_eos = false;
  SamplingParams sampling;
  int top_logprobs = -1;        // < 0: no log-probabilities; else each token's and this many most likely
  // When set and true, the sequence ends at its next token with
  // finish_reason "cancelled" (Ctrl-C in chat, a client that went away).
  const std::atomic<bool>* cancel = nullptr;
  // With a prefix cache (SchedulerOptions): false keeps this sequence out of
  // it (no lookup, its state freed at the end): llama-server's cache_prompt.
  bool cache_prompt = true;
  // Results:
  std::vector<int32_t> ids;     // generated ids (an end-of-sequence id included when it stopped there)
  std::vector<TokenLogprobs> logprobs;  // top_logprobs >= 0: one per id, filled before on_token sees the id
  std::string finish_reason;    // "stop" (an EOS id), "length" (n_predict or the context) or "cancelled"
  double first_token_ms = 0;    // from the start of RunSequences (Scheduler: from Add)
  double done_ms = 0;
  int64_t cached_tokens = 0;    // prompt tokens whose state came from the prefix cache
};

struct SchedulerOptions {
  // Micro-batches in flight; 0: one per stage while sequences decode, two per
  // stage while prompt chunks wait (chunks of one prompt do not wait for each
  // other's results, and a deeper queue lets a stage run ahead through the
  // other stages' jitter instead of idling: a 2048-token prompt on 2 ranks
  // idled 6-9 % with 2 in flight, 3-4 % with 4; docs/cluster.md).
  int inflight = 0;
  int64_t chunk = 0;      // prefill chunk in tokens; 0: auto (see ChunkTokens)
  int64_t n_ctx = 4096;
  std::vector<int32_t> eos_ids;
  // The server's prefix cache (owned by the caller; nullptr: none): a
  // sequence's state is kept at its end and reused by later prompts that
  // begin with its tokens. The pipeline's stages must have room for its
  // kept sequences on top of those running.
  PrefixCache* prefix_cache = nullptr;
};

// The prefill chunk for a prompt of n tokens: `requested` when > 0; else the
// whole prompt (up to 512) on one stage, or 8 to 16 chunks per stage: 16
// where that leaves chunks of at least 64 tokens, else 8 (at least 16
// tokens each). A prompt of k chunks keeps S stages busy for about
// k / (k + S - 1) of its time (the first chunk fills the pipeline, the last
// drains it): 8 per stage leaves 2 stages idle 6 % of it, 16 per stage 3 %,
// where 2 per stage left 20 %. 16 tokens still make a pass bound by
// arithmetic, not by streaming the weights; 64-token chunks cost per token
// what 128-token ones do (docs/cluster.md).
int64_t ChunkTokens(int64_t requested, int64_t n, int n_stages);

// Micro-batches in flight (SchedulerOptions::inflight): `requested` when > 0,
// else one per stage while sequences decode, two per stage while prompt
// chunks wait.
int InflightBatches(int requested, int n_stages, bool prefill);

// The dynamic scheduler. Not thread-safe: one thread adds and steps.
class Scheduler {
 public:
  using TokenFn = std::function<void(int32_t)>;
  using DoneFn = std::function<void()>;
  Scheduler(Pipeline& pipeline, const SchedulerOptions& opts);
  ~Scheduler();

  // Checks the job (prompt length against the context, sampling, a seq_id
  // not in use) and starts it, from the prefix cache's state when it has
  // one for the prompt (job->cached_tokens says how many tokens that saved). `job` must live until `on_done` is called;
  // `on_token(id)` gets each generated id, `on_done()` the end (with
  // job->finish_reason set and the caches freed, or kept by the prefix cache). Either may be empty.
  Status Add(SequenceJob* job, TokenFn on_token, DoneFn on_done);
  // Submits batches up to `inflight`, waits for the oldest and hands out its
  // tokens. Fails on a pipeline error (the pipeline is then unusable).
  // submit = false: only waits (drains the pipeline, e.g. to read its stats).
  Status Step(bool submit = true);
  // No sequence left and nothing in flight.
  bool idle() const;
  size_t active() const;

 private:
  struct Entry;
  Status Finish(Entry* e, const char* reason);
  void NextBatch(std::vector<SequenceRequest>* batch, std::vector<std::pair<Entry*, bool>>* members);
  bool PrefillWaiting() const;  // some prompt has chunks not yet submitted

  Pipeline& pipeline_;
  SchedulerOptions opts_;
  int inflight_;          // micro-batches in flight while only sequences decode
  int prefill_inflight_;  // ... while prompt chunks wait (deeper: see SchedulerOptions::inflight)
  std::vector<std::unique_ptr<Entry>> entries_;  // alive, in order of arrival
  std::deque<std::vector<std::pair<Entry*, bool>>> members_in_flight_;
};

// Runs every job to completion. `on_token(job_index, id)` (may be empty) is
// called for each generated id as it arrives. Caches are freed at the end of
// each sequence. Fails on the first pipeline error.
Status RunSequences(Pipeline& pipeline, std::vector<SequenceJob>& jobs, const SchedulerOptions& opts,
                    const std::function<void(size_t, int32_t)>& on_token);

}  // namespace strata
