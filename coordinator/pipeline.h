// The coordinator's view of the model: a pipeline that takes forward batches
// (token ids of one or more sequences) and returns sampled ids or logits. A
// LocalPipeline runs every stage in this process; the MPI pipeline (one stage
// per rank) implements the same interface, so the drivers (generate,
// perplexity, bench, server) never know how the layers are split.
//
// Several batches may be in flight: Submit() starts one and returns at once
// (after rank 0's own stage, when it has one), Wait() returns the oldest
// batch's results. Stages run batches in the order they were submitted, so a
// sequence may have several consecutive batches in flight (chunked prefill):
//
//   STRATA_ASSIGN_OR_RETURN(uint64_t a, pipeline.Submit({chunk1}));
//   STRATA_ASSIGN_OR_RETURN(uint64_t b, pipeline.Submit({chunk2}));  // follows chunk1 down the stages
//   STRATA_ASSIGN_OR_RETURN(BatchOutput first, pipeline.Wait());      // first.batch_id == a
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "model/model_files.h"
#include "worker/batch.h"
#include "worker/stage.h"

namespace strata {

struct BatchOutput {
  uint64_t batch_id = 0;
  std::vector<SequenceResult> results;  // one per request, in request order
};

// Where a stage runs and which layers it holds.
struct StagePlacement {
  int rank = 0;
  std::string host;
  LayerRange layers;
  std::string sends;  // the wire type of the activations it sends the next stage ("" for the last)
  // Vocabulary rows of the lm_head it computes now: all of them on the last
  // stage, unless rank 0 shares them (--share-lm-head); 0 where unknown.
  int64_t lm_head_rows = 0;
};

// Another rank's trace events (--trace), collected when the job ends.
struct RankTrace {
  int rank = 0;
  std::string host;
  std::string events_json;  // trace-event objects, comma-separated, ready to splice into one file
  std::string summary;      // one line: compute, send, receive, waiting
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual const ModelConfig& config() const = 0;
  // Starts a forward batch; returns its id.
  virtual Result<uint64_t> Submit(const std::vector<SequenceRequest>& batch) = 0;
  // Waits for the oldest submitted batch that has not been waited for.
  virtual Result<BatchOutput> Wait() = 0;
  // Batches submitted and not yet waited for.
  virtual int in_flight() const = 0;
  // Ends a sequence: every stage frees its cache (after the batches already
  // submitted).
  virtual Status Free(uint64_t seq_id) = 0;
  // The prefix cache (coordinator/prefix_cache.h): every stage gives the
  // kept state of `from_seq_id` (a copy when `copy`) to `seq_id`, cut back to its first `keep`
  // positions (after the batches already submitted). Stage::ReuseSequence
  // says what is refused.
  virtual Status Reuse(uint64_t /*seq_id*/, uint64_t /*from_seq_id*/, int64_t /*keep*/, bool /*copy*/) {
    return FailedPrecondition("this pipeline keeps no sequence for reuse");
  }
  virtual int n_stages() const = 0;
  // Every stage's counters, in stage order. Only with no batch in flight.
  virtual Result<std::vector<StageStats>> Stats() = 0;
  // The stages in order: rank, host and layers.
  virtual std::vector<StagePlacement> Placement() const = 0;
  // `strata dump`: the stage in this process (if any) writes the residual
  // stream of its layers within `layers` into `dir` (the other ranks' stages
  // are told by their own flags).
  virtual void EnableDump(const std::string& dir, LayerRange layers) = 0;
  // Ends the job on every rank; `error` non-empty makes the other ranks exit
  // non-zero. Nothing may be submitted afterwards. Called again, it does
  // nothing.
  virtual void Shutdown(const std::string& error) {}
  // After Shutdown, with --trace: the other ranks' trace events (this
  // process's own are in Tracer::Get()).
  virtual std::vector<RankTrace> TakeTraces() { return {}; }

  // Submit + Wait, with nothing else in flight.
  Result<std::vector<SequenceResult>> Forward(const std::vector<SequenceRequest>& batch);
};

// Every layer in this process (one stage holding the whole model).
class LocalPipeline : public Pipeline {
 public:
  static Result<std::unique_ptr<LocalPipeline>> Create(const ModelFiles& model, int64_t n_ctx, ThreadPool* pool,
                                                       int max_sequences = 1, bool copy_weights = false);
  // Every layer with these options (opts.layers and first / last are set here).
  static Result<std::unique_ptr<LocalPipeline>> Create(const ModelFiles& model, StageOptions opts, ThreadPool* pool);
  const ModelConfig& config() const override { return stage_->config(); }
  Result<uint64_t> Submit(const std::vector<SequenceRequest>& batch) override;
  Result<BatchOutput> Wait() override;
  int in_flight() const override { return static_cast<int>(done_.size()); }
  Status Free(uint64_t seq_id) override;
  Status Reuse(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) override {
    return stage_->ReuseSequence(seq_id, from_seq_id, keep, copy);
  }
  int n_stages() const override { return 1; }
  Result<std::vector<StageStats>> Stats() override;
  std::vector<StagePlacement> Placement() const override;
  void EnableDump(const std::string& dir, LayerRange layers) override { stage_->EnableDump(dir, layers); }
  Stage& stage() { return *stage_; }

 private:
  std::unique_ptr<Stage> stage_;
  std::vector<float> x_;
  uint64_t next_batch_id_ = 1;
  std::deque<Result<BatchOutput>> done_;  // computed at Submit, handed out by Wait
  StageStats stats_;
};

}  // namespace strata
