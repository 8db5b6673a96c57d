// The lm_head shared by the first and the last stage of a pipeline.
//
// Decode keeps every stage busy at once only when the stages take the same
// time per micro-batch, and a layer (about 5 % of a stage of SmolLM3-3B on
// two ranks) is too coarse to even them out; the ranks' speed also drifts
// from run to run. The lm_head is the one large piece of work that can be cut
// finely: rows of the vocabulary. So rank 0 (the first stage) also holds the
// last rows of the lm_head, and for a shared batch the last stage computes
// the logits of ids [0, split) only, sends each sequence's best candidates
// and its final-normed row, and rank 0 computes the logits of [split, vocab)
// and samples (worker/batch.h). The tokens are those of the unshared lm_head,
// bit for bit (worker/sampler.h SampleFromParts).
//
// `split` moves while decode runs: after every decode micro-batch the
// first and the last stage's compute times say where the split would even
// them out (at the measured cost of a row on rank 0); the split moves 30 %
// of the way there, within what rank 0 holds, so that one stalled
// micro-batch moves it little.
//
//   LmHeadShare share(vocab, rank0_rows, start_rows, /*adaptive=*/true);
//   batch.set_lm_head_split(share.split());
//   ... share.Observe(first_s, last_s, share.rows(), first_lm_head_s);
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace strata {

// --share-lm-head: "off", "auto" (rank 0 holds a quarter to half of the
// rows and the split adapts), or a fraction in [0, 1]: rank 0 holds and
// computes that share of the rows, fixed.
struct LmHeadShareSpec {
  bool on = false;
  bool adaptive = false;
  double fraction = 0;  // fixed: the share; adaptive: where it starts
  double max_fraction = 0;  // the rows rank 0 holds
};
Result<LmHeadShareSpec> ParseLmHeadShare(const std::string& text);

// Rows of a vocabulary of `vocab` for a fraction of it: a multiple of 8 (the
// interleaved layout's groups), at most vocab.
int64_t LmHeadRows(int64_t vocab, double fraction);

class LmHeadShare {
 public:
  LmHeadShare(int64_t vocab, int64_t max_rows, int64_t start_rows, bool adaptive);
  int64_t rows() const { return rows_; }             // rank 0's part now
  int64_t split() const { return vocab_ - rows_; }   // the last stage computes [0, split)
  int64_t max_rows() const { return max_rows_; }
  bool adaptive() const { return adaptive_; }
  // One decode micro-batch: the first stage's compute time (layers and its
  // `rows` of the lm_head, which took first_lm_head_s) and the last stage's.
  void Observe(double first_s, double last_s, int64_t rows, double first_lm_head_s);
  double row_cost_s() const { return row_cost_s_; }

 private:
  int64_t vocab_, max_rows_, rows_;
  bool adaptive_;
  double row_cost_s_ = 0;  // rank 0's time per row of the lm_head, smoothed
};

}  // namespace strata
