// The pipeline over MPI, rank 0's side: the handshake with every worker
// (protocol version, model fingerprint), the layer plan (for --split measure,
// after every stage's rank has timed its passes), rank 0's own stage
// (unless it is coordinator-only), and forward batches sent down the
// pipeline with results coming back from the last stage.
#pragma once

#include <deque>

#include <memory>
#include <optional>
#include <string>

#include "coordinator/lm_head_share.h"
#include "coordinator/pipeline.h"
#include "coordinator/plan.h"
#include "worker/stage_server.h"
#include "worker/transport.h"

namespace strata {

struct MpiPipelineOptions {
  std::string split = "auto";
  int64_t n_ctx = 4096;
  wire::DType wire_dtype = wire::DTYPE_F32;
  // --wire auto: every link between stages measured at start-up and given
  // f32 or q8_0 (worker/link_probe.h); wire_dtype is then unused.
  bool wire_auto = false;
  bool coordinator_only = false;
  // A batch whose result has not come back after this many seconds means a
  // stage is stuck (stopped, or its link is down: invisible to MPI); the job
  // is then aborted with a report of the ranks that no longer answer.
  double stage_timeout_s = 300;
  int max_sequences = 1;  // sequences alive at once on every stage
  int cached_sequences = 0;  // the prefix cache's kept sequences on top (StageOptions)
  uint64_t cache_bytes = 0;  // and the bytes they may hold (0: no byte bound)
  bool copy_weights = false;  // rank 0's stage: --no-mmap (workers read it from their own flags)
  TensorType kv_type = TensorType::kF32;  // every stage's KV cache (sent in the plan)
  RopeOverride rope;                      // applied by every rank (sent in the plan)
  // --split measure: each rank's timed work, and its prefill pass.
  double calibration_s = 1.0;
  int calibration_prefill_tokens = 32;
  // --share-lm-head: rank 0 (the first stage) computes part of the lm_head
  // (coordinator/lm_head_share.h). `auto` only when decode micro-batches
  // can fill the pipeline (at least one sequence per stage); never
  // coordinator-only or on one stage.
  LmHeadShareSpec share_lm_head;
};

class MpiPipeline : public Pipeline {
 public:
  // Runs the handshake and loads every stage. On any failure every worker is
  // told to stop, and the error names the rank and host that failed.
  static Result<std::unique_ptr<MpiPipeline>> Start(Transport& transport, const ModelFiles& model,
                                                    const MpiPipelineOptions& opts, ThreadPool* pool);
  // Tells every worker to stop (with the error text when the job failed).
  static void StopWorkers(Transport& transport, const std::string& error);
  ~MpiPipeline() override;

  const ModelConfig& config() const override { return cfg_; }
  Result<uint64_t> Submit(const std::vector<SequenceRequest>& batch) override;
  Result<BatchOutput> Wait() override;
  int in_flight() const override { return static_cast<int>(pending_.size()); }
  Status Free(uint64_t seq_id) override;
  Status Reuse(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) override;
  int n_stages() const override { return static_cast<int>(stage_ranks_.size()); }
  Result<std::vector<StageStats>> Stats() override;
  std::vector<StagePlacement> Placement() const override;
  // Rank 0's own stage, when it has one; the workers dump by their flags.
  void EnableDump(const std::string& dir, LayerRange layers) override;
  void Shutdown(const std::string& error) override;
  // With --trace: the workers' trace chunks, collected at shutdown.
  std::vector<RankTrace> TakeTraces() override;

 private:
  MpiPipeline(Transport& t, const ModelConfig& cfg) : transport_(t), cfg_(cfg) {}
  Result<Message> AwaitFromWorkers(double timeout_s = 0);
  // --wire auto, once the plan is made: each stage's link to the next
  // measured (in turn, by its sender), and the type each stage sends.
  Result<std::vector<wire::DType>> ChooseLinkWires(int first_stage_rank, int threads) const;
  static constexpr double kProbeTimeoutS = 30;
  // After a timeout: which stage ranks do not answer a ping within a few seconds.
  std::string DiagnoseStuckStages();

  Transport& transport_;
  ModelConfig cfg_;
  LayerPlan plan_;
  std::vector<int> stage_ranks_;
  std::vector<std::string> hosts_;
  std::vector<wire::DType> sends_;  // per stage: the type of the activations it sends the next
  std::unique_ptr<Stage> stage_;  // rank 0's own stage (null when coordinator-only)
  std::unique_ptr<StageRunner> runner_;
  uint64_t next_batch_id_ = 1;
  // A batch in flight. With a shared lm_head rank 0 samples its tokens, so
  // it keeps the requests and its own share of the work.
  struct Pending {
    uint64_t id = 0;
    size_t n_requests = 0;
    int64_t lm_head_split = 0;  // > 0: shared
    std::vector<SequenceRequest> requests;  // shared batches only
  };
  // Rank 0's half of a shared batch's result (worker/batch.h CompleteSharedBatch).
  Status CompleteShared(const Pending& batch, const wire::Result& res, const std::vector<uint8_t>& normed, BatchOutput* out);
  std::deque<Pending> pending_;
  std::optional<LmHeadShare> share_;
  bool shut_down_ = false;
  std::vector<wire::TraceChunk> traces_;
  double stage_timeout_s_ = 300;
};

}  // namespace strata
