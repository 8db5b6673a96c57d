// LocalPipeline, and Pipeline::Forward on top of Submit / Wait.
#include "coordinator/pipeline.h"

#include <chrono>

#include "common/log.h"

namespace strata {

Result<std::vector<SequenceResult>> Pipeline::Forward(const std::vector<SequenceRequest>& batch) {
  if (in_flight() != 0) return FailedPrecondition("Forward() with batches already in flight");
  STRATA_ASSIGN_OR_RETURN(uint64_t id, Submit(batch));
  STRATA_ASSIGN_OR_RETURN(BatchOutput out, Wait());
  if (out.batch_id != id) return Internal("batch " + std::to_string(out.batch_id) + " came back instead of " + std::to_string(id));
  return std::move(out.results);
}

Result<std::unique_ptr<LocalPipeline>> LocalPipeline::Create(const ModelFiles& model, int64_t n_ctx, ThreadPool* pool,
                                                             int max_sequences, bool copy_weights) {
  StageOptions opts;
  opts.n_ctx = n_ctx;
  opts.max_sequences = max_sequences;
  opts.copy_weights = copy_weights;
  return Create(model, opts, pool);
}

Result<std::unique_ptr<LocalPipeline>> LocalPipeline::Create(const ModelFiles& model, StageOptions opts, ThreadPool* pool) {
  opts.layers = {0, model.config().n_layers - 1};
  opts.first = opts.last = true;
  auto p = std::make_unique<LocalPipeline>();
  STRATA_ASSIGN_OR_RETURN(p->stage_, Stage::Load(model, opts, pool));
  p->stats_.first_layer = opts.layers.first;
  p->stats_.last_layer = opts.layers.last;
  p->stats_.weight_bytes = p->stage_->weight_bytes();
  return p;
}

Result<uint64_t> LocalPipeline::Submit(const std::vector<SequenceRequest>& batch) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t id = next_batch_id_++;
  auto run = [&]() -> Result<BatchOutput> {
    const int64_t hidden = config().hidden;
    std::vector<BatchEntry> entries;
    std::vector<int32_t> ids;
    for (const SequenceRequest& r : batch) {
      if (r.tokens.empty()) return InvalidArgument("sequence " + std::to_string(r.seq_id) + ": empty forward request");
      entries.push_back({r.seq_id, r.pos0, static_cast<int64_t>(r.tokens.size())});
      ids.insert(ids.end(), r.tokens.begin(), r.tokens.end());
    }
    x_.resize(ids.size() * hidden);
    STRATA_RETURN_IF_ERROR(stage_->Embed(ids, x_.data()));
    STRATA_RETURN_IF_ERROR(stage_->Forward(entries, x_.data()));
    STRATA_ASSIGN_OR_RETURN(std::vector<SequenceResult> results, FinishBatch(*stage_, batch, x_.data()));
    stats_.tokens += ids.size();
    return BatchOutput{id, std::move(results)};
  };
  done_.push_back(run());
  ++stats_.batches;
  stats_.busy_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.peak_kv_bytes = std::max(stats_.peak_kv_bytes, stage_->kv_bytes());
  return id;
}

Result<BatchOutput> LocalPipeline::Wait() {
  if (done_.empty()) return FailedPrecondition("Wait() with no batch in flight");
  Result<BatchOutput> out = std::move(done_.front());
  done_.pop_front();
  return out;
}

Status LocalPipeline::Free(uint64_t seq_id) {
  stage_->FreeSequence(seq_id);
  return Status::Ok();
}

Result<std::vector<StageStats>> LocalPipeline::Stats() {
  StageStats s = stats_;
  s.rss_bytes = ResidentBytes();
  s.peak_rss_bytes = PeakResidentBytes();
  s.kv_bytes = stage_->kv_bytes();
  s.host = HostName();
  return std::vector<StageStats>{s};
}

std::vector<StagePlacement> LocalPipeline::Placement() const {
  return {StagePlacement{0, HostName(), {0, config().n_layers - 1}, "", config().vocab}};
}

}  // namespace strata
