// The coordinator's view of the model: a pipeline that takes forward batches
// (token ids of one or more sequences) and returns sampled ids or logits. A
// LocalPipeline runs every stage in this process; the MPI pipeline (one stage
// per rank) implements the same interface, so the drivers (generate,
// perplexity, server) never know how the layers are split.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "coordinator/sampler.h"
#include "model/model_files.h"
#include "worker/stage.h"

namespace strata {

// One sequence's part of a forward batch.
struct SequenceRequest {
  enum class Output {
    kNone,     // only fill the cache
    kSample,   // sample the token after the last one
    kLogits,   // logits of rows logits_from .. n_tok-1
  };
  uint64_t seq_id = 0;
  int64_t pos0 = 0;               // must equal the sequence's cached length
  std::vector<int32_t> tokens;    // at least one
  Output output = Output::kSample;
  int64_t logits_from = 0;        // kLogits: first row whose logits come back
  SamplingParams sampling;        // kSample
  uint64_t step = 0;              // kSample: index of the token being sampled
  std::vector<int32_t> recent;    // kSample: last tokens, for the repetition penalty
};

struct SequenceResult {
  uint64_t seq_id = 0;
  int32_t token = -1;          // kSample
  std::vector<float> logits;   // kLogits: [rows][vocab]
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual const ModelConfig& config() const = 0;
  virtual Result<std::vector<SequenceResult>> Forward(const std::vector<SequenceRequest>& batch) = 0;
  // Ends a sequence: every stage frees its cache.
  virtual Status Free(uint64_t seq_id) = 0;
};

// Every layer in this process (one stage holding the whole model).
class LocalPipeline : public Pipeline {
 public:
  static Result<std::unique_ptr<LocalPipeline>> Create(const ModelFiles& model, int64_t n_ctx, ThreadPool* pool);
  const ModelConfig& config() const override { return stage_->config(); }
  Result<std::vector<SequenceResult>> Forward(const std::vector<SequenceRequest>& batch) override;
  Status Free(uint64_t seq_id) override;
  Stage& stage() { return *stage_; }

 private:
  std::unique_ptr<Stage> stage_;
  std::vector<float> x_;
};

// The last stage's half of a forward batch: logits or a sampled token for
// each request, from the final hidden rows x ([total tokens][hidden]).
Result<std::vector<SequenceResult>> FinishBatch(Stage& last, const std::vector<SequenceRequest>& batch, const float* x);

}  // namespace strata
