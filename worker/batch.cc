// The last stage's finishing step: logits or a sampled token per sequence.
#include "worker/batch.h"

#include <algorithm>
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

int64_t LmHeadStealRows(int64_t vocab, int64_t split) { return std::max<int64_t>(8, (vocab - split) / 16 / 8 * 8); }

bool CanShareLmHead(const std::vector<SequenceRequest>& batch, int32_t vocab) {
  for (const SequenceRequest& r : batch)
    if (r.output != SequenceRequest::Output::kSample || r.top_logprobs >= 0 || CandidatesNeeded(r.sampling, vocab) == 0)
      return false;
  return !batch.empty();
}

Result<std::vector<SequenceResult>> FinishBatchShared(Stage& last, const std::vector<SequenceRequest>& batch, const float* x,
                                                      int64_t* split, const std::function<bool()>& go_on,
                                                      std::vector<float>* normed) {
  const ModelConfig& cfg = last.config();
  const int32_t vocab = static_cast<int32_t>(cfg.vocab);
  if (!CanShareLmHead(batch, vocab))
    return InvalidArgument("a batch shares the lm_head only when every sequence samples with top-k or greedily, without logprobs");
  const int64_t n = static_cast<int64_t>(batch.size());
  normed->assign(static_cast<size_t>(n * cfg.hidden), 0.0f);
  int64_t row0 = 0;
  for (int64_t i = 0; i < n; ++i) {
    row0 += static_cast<int64_t>(batch[i].tokens.size());
    last.FinalNorm(x + (row0 - 1) * cfg.hidden, normed->data() + i * cfg.hidden);
  }
  std::vector<SequenceResult> out(batch.size());
  for (int64_t i = 0; i < n; ++i) out[i].seq_id = batch[i].seq_id;
  std::vector<float> logits;
  // Ids [from, to): each sequence's best of them join its candidates.
  auto part = [&](int64_t from, int64_t to) -> Status {
    logits.resize(static_cast<size_t>(n * (to - from)));
    STRATA_RETURN_IF_ERROR(last.LmHead(normed->data(), n, from, to, logits.data()));
    TraceSpan span("sample", "compute");
    for (int64_t i = 0; i < n; ++i) {
      const SequenceRequest& r = batch[i];
      auto mine = PartCandidates(logits.data() + i * (to - from), static_cast<int32_t>(from), static_cast<int32_t>(to - from),
                                 vocab, r.sampling, r.recent);
      std::vector<std::pair<int32_t, float>>& c = out[i].candidates;
      c.insert(c.end(), mine.begin(), mine.end());
      if (from > 0) KeepBestCandidates(&c, CandidatesNeeded(r.sampling, vocab));
    }
    return Status::Ok();
  };
  STRATA_RETURN_IF_ERROR(part(0, *split));
  if (go_on) {
    const int64_t step = LmHeadStealRows(cfg.vocab, *split);
    while (*split < cfg.vocab && go_on()) {
      const int64_t to = std::min<int64_t>(cfg.vocab, *split + step);
      STRATA_RETURN_IF_ERROR(part(*split, to));
      *split = to;
    }
  }
  return out;
}

Status CompleteSharedBatch(Stage& first, const std::vector<SequenceRequest>& batch, const float* normed, int64_t split,
                           std::vector<SequenceResult>* results) {
  const int64_t vocab = first.config().vocab, n = static_cast<int64_t>(batch.size()), part = vocab - split;
  if (results->size() != batch.size()) return DataLoss("a shared batch's results do not match its sequences");
  std::vector<float> logits(static_cast<size_t>(n * part));
  STRATA_RETURN_IF_ERROR(first.LmHead(normed, n, split, vocab, logits.data()));
  TraceSpan span("sample", "compute");
  for (int64_t i = 0; i < n; ++i) {
    const SequenceRequest& r = batch[i];
    SequenceResult& res = (*results)[i];
    std::vector<std::pair<int32_t, float>> cands = std::move(res.candidates);
    res.candidates.clear();
    if (part > 0) {
      auto mine = PartCandidates(logits.data() + i * part, static_cast<int32_t>(split), static_cast<int32_t>(part),
                                 static_cast<int32_t>(vocab), r.sampling, r.recent);
      cands.insert(cands.end(), mine.begin(), mine.end());
    }
    if (cands.empty()) return DataLoss("sequence " + std::to_string(r.seq_id) + ": no candidates came back for its token");
    for (const auto& [id, logit] : cands)
      if (id < 0 || id >= vocab) return DataLoss("sequence " + std::to_string(r.seq_id) + ": candidate id " + std::to_string(id) + " outside the vocabulary");
    res.token = SampleFromParts(std::move(cands), static_cast<int32_t>(vocab), r.sampling, r.step);
  }
  return Status::Ok();
}

}  // namespace strata
