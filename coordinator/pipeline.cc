// LocalPipeline and the last-stage finishing step shared with the MPI stages.
#include "coordinator/pipeline.h"

namespace strata {

Result<std::unique_ptr<LocalPipeline>> LocalPipeline::Create(const ModelFiles& model, int64_t n_ctx, ThreadPool* pool) {
  StageOptions opts;
  opts.layers = {0, model.config().n_layers - 1};
  opts.first = opts.last = true;
  opts.n_ctx = n_ctx;
  auto p = std::make_unique<LocalPipeline>();
  STRATA_ASSIGN_OR_RETURN(p->stage_, Stage::Load(model, opts, pool));
  return p;
}

Result<std::vector<SequenceResult>> LocalPipeline::Forward(const std::vector<SequenceRequest>& batch) {
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
  return FinishBatch(*stage_, batch, x_.data());
}

Status LocalPipeline::Free(uint64_t seq_id) {
  stage_->FreeSequence(seq_id);
  return Status::Ok();
}

}  // namespace strata
