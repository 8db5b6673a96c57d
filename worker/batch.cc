// The last stage's finishing step: logits or a sampled token per sequence.
#include "worker/batch.h"

#include <utility>

#include "common/trace.h"

namespace strata {

Result<std::vector<SequenceResult>> FinishBatch(Stage& last, const std::vector<SequenceRequest>& batch, const float* x) {
  const int64_t vocab = last.config().vocab;
  // Every row that needs logits, of every sequence, goes through the lm_head
  // in one pass: its weights (the largest matrix) are read once per batch,
  // not once per sequence. A row's logits do not depend on the other rows.
  std::vector<int64_t> rows;
  std::vector<int64_t> first_row(batch.size(), 0);  // index into rows
  int64_t row0 = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceRequest& r = batch[i];
    const int64_t n = static_cast<int64_t>(r.tokens.size());
    first_row[i] = static_cast<int64_t>(rows.size());
    if (r.output == SequenceRequest::Output::kSample) {
      rows.push_back(row0 + n - 1);
    } else if (r.output == SequenceRequest::Output::kLogits) {
      if (r.logits_from < 0 || r.logits_from >= n)
        return InvalidArgument("sequence " + std::to_string(r.seq_id) + ": logits_from " + std::to_string(r.logits_from) +
                               " is outside its " + std::to_string(n) + " tokens");
      for (int64_t k = r.logits_from; k < n; ++k) rows.push_back(row0 + k);
    }
    row0 += n;
  }
  std::vector<float> logits(rows.size() * static_cast<size_t>(vocab));
  if (!rows.empty()) STRATA_RETURN_IF_ERROR(last.Logits(x, rows, logits.data()));

  std::vector<SequenceResult> out(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceRequest& r = batch[i];
    SequenceResult& res = out[i];
    res.seq_id = r.seq_id;
    const float* mine = logits.data() + first_row[i] * vocab;
    if (r.output == SequenceRequest::Output::kSample) {
      TraceSpan span("sample", "compute");
      res.token = SampleToken(mine, static_cast<int32_t>(vocab), r.sampling, r.recent, r.step);
      if (r.top_logprobs >= 0) res.logprobs = LogprobsOf(mine, static_cast<int32_t>(vocab), res.token, r.top_logprobs);
    } else if (r.output == SequenceRequest::Output::kLogits) {
      const int64_t n_rows = static_cast<int64_t>(r.tokens.size()) - r.logits_from;
      if (n_rows == static_cast<int64_t>(rows.size()))
        res.logits = std::move(logits);  // the only rows (a perplexity chunk): no copy
      else
        res.logits.assign(mine, mine + n_rows * vocab);
    }
  }
  return out;
}

}  // namespace strata
