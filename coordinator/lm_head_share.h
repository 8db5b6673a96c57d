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
// With `auto` the last stage decides, batch by batch, how much of rank 0's
// rows it computes itself: it computes [0, vocab - rank 0's rows) and then
// goes on a group of rows at a time for as long as no message waits for it.
// When the next batch is already waiting, the last stage is the one behind
// and hands rank 0 the rest; when nothing waits, rank 0 is the one behind
// (still computing that batch) and the last stage keeps going, up to the
// whole vocabulary. Unlike a split set from measured times, this follows
// every micro-batch's jitter, and needs no measurement at all.
//
//   LmHeadShare share(vocab, rank0_rows, /*steal=*/true);
//   batch.set_lm_head_split(share.split());  batch.set_lm_head_steal(share.steal());
//   ... share.Record(vocab - result.lm_head_split());
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace strata {

// --share-lm-head: "off", "auto" (rank 0 holds half of the rows and the
// last stage hands it what it has not reached when the next batch waits), or
// a fraction in [0, 1]: rank 0 holds and computes that share of the rows, fixed.
struct LmHeadShareSpec {
  bool on = false;
  bool steal = false;
  double fraction = 0;      // what the plan counts on rank 0; fixed: the share
  double max_fraction = 0;  // the rows rank 0 holds
};
Result<LmHeadShareSpec> ParseLmHeadShare(const std::string& text);

// Rows of a vocabulary of `vocab` for a fraction of it: a multiple of 8 (the
// interleaved layout's groups), at most vocab.
int64_t LmHeadRows(int64_t vocab, double fraction);

class LmHeadShare {
 public:
  // Rank 0 holds the last `rows` of the vocabulary.
  LmHeadShare(int64_t vocab, int64_t rows, bool steal);
  int64_t split() const { return vocab_ - rows_; }  // the last stage computes at least [0, split)
  bool steal() const { return steal_; }
  // Rank 0 computed `rows` of a shared batch.
  void Record(int64_t rows);
  // The rows rank 0 computed per shared batch, on average (all it holds
  // before any batch).
  int64_t mean_rows() const;

 private:
  int64_t vocab_, rows_;
  bool steal_;
  double recorded_rows_ = 0;
  uint64_t batches_ = 0;
};

}  // namespace strata
