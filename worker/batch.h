// A forward batch as the coordinator describes it (token ids of one or more
// sequences, what to return for each) and the last stage's step that turns
// final hidden rows into sampled ids or logits. Used by rank 0 and by the
// last stage, whichever rank that is.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "common/status.h"
#include "worker/sampler.h"
#include "worker/stage.h"

namespace strata {

// One sequence's part of a forward batch.
struct SequenceRequest {
  enum class Output {
    kNone,     // only fill the cache
    kSample,   // sample the token after the last one
    kLogits,   // logits of rows logits_from .. n_tok-1
  };
  uint64_t seq_id = 0;
  int64_t pos0 = 0;               // must equal the sequence's cached length
  std::vector<int32_t> tokens;    // at least one
  Output output = Output::kSample;
  int64_t logits_from = 0;        // kLogits: first row whose logits come back
  SamplingParams sampling;        // kSample
  uint64_t step = 0;              // kSample: index of the token being sampled
  std::vector<int32_t> recent;    // kSample: last tokens, for the repetition penalty
  int top_logprobs = -1;          // kSample: < 0 none; else the token's logprob and this many
                                  // most likely (0..kMaxTopLogprobs), worker/sampler.h's LogprobsOf
};

struct SequenceResult {
  uint64_t seq_id = 0;
  int32_t token = -1;          // kSample
  std::vector<float> logits;   // kLogits: [rows][vocab]
  std::optional<TokenLogprobs> logprobs;  // kSample with top_logprobs >= 0
  // A shared batch, before rank 0 completes it: the best (id, logit) of the
  // last stage's part of the vocabulary (worker/sampler.h PartCandidates).
  std::vector<std::pair<int32_t, float>> candidates;
};

// The last stage's half of a forward batch: logits or a sampled token for
// each request, from the final hidden rows x ([total tokens][hidden]).
Result<std::vector<SequenceResult>> FinishBatch(Stage& last, const std::vector<SequenceRequest>& batch, const float* x);

// The shared lm_head (coordinator/lm_head_share.h): the last stage computes
// the logits of vocabulary ids [0, split), rank 0 (the first stage) those of
// [split, vocab), and the token is sampled from both parts' candidates. A
// batch can be shared when every request samples one token, without
// logprobs, under a config whose token depends only on its best logits
// (worker/sampler.h CandidatesNeeded); the tokens are then those FinishBatch
// gives.
bool CanShareLmHead(const std::vector<SequenceRequest>& batch, int32_t vocab);
// The last stage's half: each result's candidates from ids [0, *split), and
// each request's last row through the final norm in `normed` ([batch.size()][hidden]).
// With `go_on` it then computes further groups of LmHeadStealRows rows
// while go_on() says so, up to the whole vocabulary, and *split says where
// it stopped.
Result<std::vector<SequenceResult>> FinishBatchShared(Stage& last, const std::vector<SequenceRequest>& batch, const float* x,
                                                      int64_t* split, const std::function<bool()>& go_on,
                                                      std::vector<float>* normed);
// How many rows the last stage computes past `split` between two calls of
// go_on: a sixteenth of the rest (about 0.4 ms of SmolLM3-3B on one core),
// in groups of 8.
int64_t LmHeadStealRows(int64_t vocab, int64_t split);
// Rank 0's half: the logits of ids [split, vocab) on the first stage's share
// of the lm_head, merged with each result's candidates into its token.
Status CompleteSharedBatch(Stage& first, const std::vector<SequenceRequest>& batch, const float* normed, int64_t split,
                           std::vector<SequenceResult>* results);

}  // namespace strata
