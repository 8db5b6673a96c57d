// A forward batch as the coordinator describes it (token ids of one or more
// sequences, what to return for each) and the last stage's step that turns
// final hidden rows into sampled ids or logits. Used by rank 0 and by the
// last stage, whichever rank that is.
#pragma once

#include <cstdint>
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
};

// The last stage's half of a forward batch: logits or a sampled token for
// each request, from the final hidden rows x ([total tokens][hidden]).
Result<std::vector<SequenceResult>> FinishBatch(Stage& last, const std::vector<SequenceRequest>& batch, const float* x);

}  // namespace strata
