// The receive -> compute -> send loop of a pipeline stage, and a worker
// rank's whole life: hello (model fingerprint) -> [calibration, for
// --split measure] -> plan -> load its slice -> ready -> forward batches
// until shutdown. Rank 0, when it is stage 0, runs
// the same StageRunner for its own slice.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "model/model_files.h"
#include "worker/calibrate.h"
#include "worker/stage.h"
#include "worker/transport.h"

namespace strata {

constexpr int kCoordinatorRank = 0;

// The control message of Stage::ReuseSequence (wire::Control::KIND_REUSE).
wire::Envelope ReuseEnvelope(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy);

class StageRunner {
 public:
  // next_rank: the rank of the next stage, or -1 when this is the last one.
  StageRunner(Stage& stage, Transport& transport, int next_rank, wire::DType wire_dtype)
      : stage_(stage), transport_(transport), next_rank_(next_rank), wire_dtype_(wire_dtype) {}

  // Runs one batch through this stage, then sends it on (or, on the last
  // stage, sends the Result to the coordinator).
  Status HandleForward(const wire::ForwardBatch& batch, const std::vector<uint8_t>& payload);
  // Frees a sequence here and passes the request down the pipeline.
  Status HandleFree(uint64_t seq_id);
  // The prefix cache's reuse (Stage::ReuseSequence) here, then down the pipeline.
  Status HandleReuse(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy);
  Stage& stage() { return stage_; }
  // This stage's counters (rank and host filled by the caller).
  StageStats Stats() const;
  // Work done for this stage outside HandleForward (rank 0's share of a shared lm_head).
  void AddBusy(double s) { counters_.busy_s += s; }

 private:
  Stage& stage_;
  Transport& transport_;
  int next_rank_;
  wire::DType wire_dtype_;
  std::vector<float> x_;
  StageStats counters_;
  uint64_t last_batch_id_ = 0;
};

// A stage's counters on the wire and back.
wire::StageStats StatsToWire(const StageStats& s);
StageStats StatsFromWire(const wire::StageStats& w);
// A rank's calibration on the wire and back.
wire::Calibration CalibrationToWire(const RankCosts& c);
RankCosts CalibrationFromWire(const wire::Calibration& w);

struct WorkerOptions {
  std::string model_path;
  int threads = 0;
  std::string dump_dir;         // `strata dump`: every rank writes its layers here
  LayerRange dump_layers{0, -1};
  bool trace = false;           // --trace: send this rank's events to rank 0 at shutdown
  bool copy_weights = false;    // --no-mmap
};

// mkdir -p for dump directories.
Status MakeDirectories(const std::string& dir);

// A worker rank from start to shutdown. Returns the process exit status:
// 0 after a clean shutdown, 1 when the job ended with an error (rank 0
// prints it).
int RunWorker(Transport& transport, const WorkerOptions& opts);

// Helpers shared with rank 0.
wire::Envelope ErrorEnvelope(const Transport& t, const std::string& text);

}  // namespace strata
