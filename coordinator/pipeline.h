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
#include "model/model_files.h"
#include "worker/batch.h"
#include "worker/stage.h"

namespace strata {

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

}  // namespace strata
