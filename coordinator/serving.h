// Rank 0's serving loop: requests from many threads (the HTTP server's)
// share one pipeline. A single loop thread owns the Scheduler; requests wait
// in a bounded queue until one of the `parallel` sequence slots (the KV
// caches every stage holds room for) is free, then join the sequences in
// flight. Tokens go back to the submitter as they are sampled: it blocks in
// Wait, or is told by `on_update` (an event loop) and collects them with Take.
//
//   ServingLoop loop(pipeline, {.scheduler = {...}, .parallel = 4, .max_queue = 16});
//   STRATA_ASSIGN_OR_RETURN(auto req, loop.Submit(std::move(job)));   // Unavailable when full
//   std::vector<int32_t> ids;
//   while (!req->Wait(&ids, deadline)) { ... use ids ...; ids.clear(); }
//   if (!req->error().ok()) ...;  // the pipeline failed or the server stopped
//   req->job().finish_reason       // "stop", "length" or "cancelled"
//
// Admission is exact: Submit accepts a request while fewer than
// parallel + max_queue are admitted (running or waiting), whatever the loop
// thread is doing, so a burst of parallel + max_queue requests at an idle
// server is always taken whole.
//
// Batching never changes a sequence's tokens (coordinator/scheduler.h), so a
// request's answer does not depend on what else is being served.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/metrics.h"
#include "coordinator/pipeline.h"
#include "coordinator/prefix_cache.h"
#include "coordinator/scheduler.h"

namespace strata {

struct ServingOptions {
  SchedulerOptions scheduler;
  // Finished sequences kept for later prompts (coordinator/prefix_cache.h);
  // max_sequences 0: none. The pipeline's stages must have room for
  // parallel + prefix_cache.max_sequences sequences.
  PrefixCacheOptions prefix_cache;
  int parallel = 1;    // sequences alive at once; the pipeline must have room for as many
  int max_queue = 64;  // requests waiting for a slot; Submit refuses more
  // A pipeline failure ends the requests running and queued with its error
  // and the loop goes on with a fresh scheduler (the supervised front, whose
  // pipeline relaunches its job: coordinator/supervisor.h); false: the loop
  // stops for good.
  bool survive_pipeline_failure = false;
  Metrics* metrics = nullptr;  // when set: tokens, time to first token, between tokens
};

// One sequence slot as GET /slots shows it.
struct SlotInfo {
  int id = 0;
  bool busy = false;
  uint64_t seq_id = 0;        // busy: the sequence in it
  size_t prompt_tokens = 0;
  size_t generated = 0;       // tokens so far
  int n_predict = 0;          // the most it may generate
  double elapsed_s = 0;       // since it took the slot
};

// One request, shared by the thread that submitted it and the loop.
class ServingRequest {
 public:
  using UpdateFn = std::function<void()>;
  ServingRequest(SequenceJob job, UpdateFn on_update) : job_(std::move(job)), on_update_(std::move(on_update)) {}
  // Waits until tokens arrive, the request ends, or `until`; appends the new
  // tokens to *ids. True once the request has ended (every token handed out).
  bool Wait(std::vector<int32_t>* ids, std::chrono::steady_clock::time_point until);
  // Wait without waiting: appends the tokens sampled since the last call
  // (and, when the job asked for them, their log-probabilities to *logprobs).
  bool Take(std::vector<int32_t>* ids, std::vector<TokenLogprobs>* logprobs = nullptr);
  // It left the queue for a sequence slot (or ended).
  bool started() const { return started_.load(); }
  // Ends the request at its next token, or takes it out of the queue: a
  // client that went away, a stop string, a timeout. Any thread.
  void Cancel() { cancel_.store(true); }
  bool cancelled() const { return cancel_.load(); }
  // After Wait returned true: how it ended. Not OK when the pipeline failed
  // or the loop stopped before the request finished.
  const Status& error() const { return error_; }
  const SequenceJob& job() const { return job_; }

 private:
  friend class ServingLoop;
  void Push(int32_t id);
  void Start(int slot);
  void End(Status error);

  SequenceJob job_;  // the loop's while the request runs
  // Called after each change (tokens, start, end) on the thread that made it
  // (the loop's, or Stop's), maybe with the loop's lock held: it must not
  // block or call into the loop (post to an event loop, notify, return).
  UpdateFn on_update_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> started_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> pending_;  // sampled, not yet handed out
  std::vector<TokenLogprobs> pending_logprobs_;  // theirs, when job_.top_logprobs >= 0
  bool ended_ = false;
  Status error_;
  Status forced_end_;  // set by ServingLoop::Stop (under its lock): the error a cancelled run ends with
  // Metrics and /slots (the loop thread's, but for the atomics):
  Metrics* metrics_ = nullptr;
  int slot_ = -1;
  std::chrono::steady_clock::time_point admitted_, slot_start_, last_token_;
  std::atomic<size_t> generated_{0};
};

class ServingLoop {
 public:
  // Starts the loop thread.
  ServingLoop(Pipeline& pipeline, const ServingOptions& opts);
  // Stop(0) when still running.
  ~ServingLoop();

  // Queues a request. `job.seq_id` is assigned here. Unavailable when
  // parallel + max_queue requests are already admitted, or the loop is
  // stopping; InvalidArgument for a job the scheduler would refuse (an empty
  // prompt, one that fills the context, bad sampling parameters).
  // `on_update` (may be empty): see ServingRequest.
  Result<std::shared_ptr<ServingRequest>> Submit(SequenceJob job, ServingRequest::UpdateFn on_update = nullptr);

  // Stops taking requests, ends the queued ones at once with
  // Unavailable(`reason`), lets the running ones finish for up to `grace`,
  // then ends them with the same error. Returns the pipeline's failure, if
  // any. Any thread; once (later calls only wait for the loop thread).
  Status Stop(std::chrono::milliseconds grace, const std::string& reason);

  struct Counts {
    size_t running = 0, queued = 0;
    uint64_t finished = 0;  // requests ended, any way
    bool stopping = false;
  };
  // The prefix cache's counters (hits, tokens served from it, what it keeps).
  PrefixCacheStats cache_stats() const { return prefix_cache_.stats(); }
  Counts counts();
  // Each of the `parallel` slots: free, or the sequence in it.
  std::vector<SlotInfo> Slots();
  // Every stage's counters, read by the loop thread between batches (it
  // lets the batches in flight finish first, then goes on): waits up to
  // `timeout`; DeadlineExceeded when the loop did not get there in time.
  Result<std::vector<StageStats>> ReadStageStats(std::chrono::milliseconds timeout);
  // The pipeline's failure, if one happened (the loop then ends every request
  // with it and takes no more).
  Status failure();
  // Called once, from the loop thread, when the pipeline fails.
  void OnFailure(std::function<void(const Status&)> fn) { on_failure_ = std::move(fn); }

 private:
  void Run();
  void EndAll(const Status& error);  // mu_ held
  void DropCancelledQueued();        // mu_ held
  void Release(ServingRequest& r);   // mu_ held: its slot is free, its tokens counted

  Pipeline& pipeline_;
  ServingOptions opts_;
  PrefixCache prefix_cache_;              // changed by the loop thread only (through the scheduler)
  std::unique_ptr<Scheduler> scheduler_;  // the loop thread's only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ServingRequest>> queue_;
  std::vector<std::shared_ptr<ServingRequest>> running_;
  std::vector<bool> slot_busy_;  // [parallel]
  // ReadStageStats: asked by any thread, answered by the loop thread.
  bool stats_wanted_ = false;
  uint64_t stats_serial_ = 0;  // answers given
  Result<std::vector<StageStats>> stats_{std::vector<StageStats>{}};
  uint64_t next_seq_id_ = 1;
  uint64_t finished_ = 0;
  uint64_t trimmed_at_ = 0;  // finished_ when memory was last trimmed
  bool stopping_ = false;  // no more Submit
  bool quit_ = false;      // the loop ends once nothing runs
  Status failure_;
  std::function<void(const Status&)> on_failure_;
  std::thread thread_;
};

}  // namespace strata
