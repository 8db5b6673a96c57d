// The last stage's finishing step: logits or a sampled token per sequence.
#include "worker/batch.h"

#include "common/trace.h"

namespace strata {

Result<std::vector<SequenceResult>> FinishBatch(Stage& last, const std::vector<SequenceRequest>& batch, const float* x) {
  const int32_t vocab = last.config().vocab;
  std::vector<SequenceResult> out;
  out.reserve(batch.size());
  int64_t row0 = 0;
  for (const SequenceRequest& r : batch) {
    const int64_t n = static_cast<int64_t>(r.tokens.size());
    SequenceResult res;
    res.seq_id = r.seq_id;
    if (r.output == SequenceRequest::Output::kSample) {
      std::vector<float> logits(vocab);
      const int64_t row = row0 + n - 1;
      STRATA_RETURN_IF_ERROR(last.Logits(x, std::span<const int64_t>(&row, 1), logits.data()));
      TraceSpan span("sample", "compute");
      res.token = SampleToken(logits.data(), vocab, r.sampling, r.recent, r.step);
    } else if (r.output == SequenceRequest::Output::kLogits) {
      if (r.logits_from < 0 || r.logits_from >= n)
        return InvalidArgument("sequence " + std::to_string(r.seq_id) + ": logits_from " + std::to_string(r.logits_from) +
                               " is outside its " + std::to_string(n) + " tokens");
      std::vector<int64_t> rows;
      for (int64_t i = r.logits_from; i < n; ++i) rows.push_back(row0 + i);
      res.logits.resize(rows.size() * vocab);
      STRATA_RETURN_IF_ERROR(last.Logits(x, rows, res.logits.data()));
    }
    out.push_back(std::move(res));
    row0 += n;
  }
  return out;
}

}  // namespace strata
