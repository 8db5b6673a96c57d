// Token sampler: picks the next token from one position's logits.
//
// Runs wherever the last layer's logits are (rank 0 or the last pipeline
// stage); it is a pure function of its arguments, so any rank that holds the
// logits picks the same token.
//
// The chain follows llama.cpp's default sampler order:
//   logit bias -> repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw
// with greedy decoding (argmax after the penalty, ties -> lowest id) when
// temperature <= 0. top-p and min-p look at probabilities at temperature 1;
// the temperature only shapes the final draw.
//
// Randomness is counter-based: the uniform draw for a token is a hash of
// (seed, step) and nothing else, so a sequence's tokens do not depend on which
// process samples, on other sequences in the batch, or on earlier calls.
//
//   SamplingParams p;  p.seed = 42;
//   STRATA_RETURN_IF_ERROR(ValidateSamplingParams(p));   // once per request
//   int32_t tok = SampleToken(logits, vocab, p, history, step);
//
// Non-finite logits: NaN is treated as -inf (never drawn unless every logit
// is NaN/-inf, in which case the lowest id among those left is returned;
// that is id 0 unless top-k picks otherwise); +inf is treated as the largest
// finite float, so +inf tokens share the probability mass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "common/status.h"

namespace strata {

// The most logit_bias entries a request may carry.
inline constexpr size_t kMaxLogitBias = 1024;

struct SamplingParams {
  float temperature = 0.8f;     // <= 0: greedy (argmax; ties -> lowest id)
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off; 0: the top token only (as vLLM); valid range [0, 1]
  float min_p = 0.05f;          // <= 0: off; valid range [0, 1]
  float repeat_penalty = 1.0f;  // 1: off. llama.cpp semantics: logit > 0 ? logit / p : logit * p,
                                // once for each distinct id among the last repeat_last_n tokens
  int32_t repeat_last_n = 64;   // 0: off
  uint64_t seed = 0;            // any value; a seeded run is reproducible
  // (token id, value added to its logit) before anything else (OpenAI's
  // logit_bias: -100 bans a token, +100 all but forces it); ids outside the
  // vocabulary are ignored, a repeated id adds up.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// InvalidArgument naming the field for: temperature < 0 or not finite,
// top_k < 0, top_p outside [0, 1], min_p outside [0, 1], repeat_penalty <= 0
// or not finite, repeat_last_n < 0, a logit bias not finite or more than
// kMaxLogitBias of them.
Status ValidateSamplingParams(const SamplingParams& p);

// Picks the next token from `logits` [n_vocab] f32.
// `history` = the sequence's tokens so far (prompt + generated), used by the
// repetition penalty; ids outside [0, n_vocab) are ignored.
// `step` = index of this token among the generated ones (0 for the first);
// together with p.seed it is the only source of randomness.
// `p` must have passed ValidateSamplingParams (checked; aborts otherwise).
int32_t SampleToken(const float* logits, int32_t n_vocab, const SamplingParams& p,
                    std::span<const int32_t> history, uint64_t step);

// Sampling when the logits are computed in parts on different ranks (the
// lm_head shared by the first and last stage, worker/stage.h): when a
// config's token depends only on the k best logits after bias and penalty
// (greedy: k = 1; top-k on: k = top_k), each part sends its own k best and
// SampleFromParts picks, from their union, exactly the token SampleToken
// picks from the whole vocabulary. CandidatesNeeded is that k, or 0 when the
// config needs every logit (top-k off).
int32_t CandidatesNeeded(const SamplingParams& p, int32_t n_vocab);
// The k best (id, logit) of logits [n], the raw logits of ids [id0, id0 + n),
// after logit bias and repetition penalty; CandidatesNeeded(p, n_vocab) > 0.
std::vector<std::pair<int32_t, float>> PartCandidates(const float* logits, int32_t id0, int32_t n, int32_t n_vocab,
                                                      const SamplingParams& p, std::span<const int32_t> history);
// Keeps the k best of `candidates` (every part's PartCandidates,
// concatenated), best first: the k best of a union of parts are the k best
// of their k best, so parts can be merged as they come.
void KeepBestCandidates(std::vector<std::pair<int32_t, float>>* candidates, int32_t k);
// The token from every part's PartCandidates, concatenated in any order.
int32_t SampleFromParts(std::vector<std::pair<int32_t, float>> candidates, int32_t n_vocab, const SamplingParams& p,
                        uint64_t step);

// The uniform draw in [0, 1) used by SampleToken for (seed, step).
double SamplerUniform(uint64_t seed, uint64_t step);

// The log-probabilities OpenAI's `logprobs` reports for one sampled token:
// log-softmax of the raw logits the sampler was given (NaN as -inf, +inf as
// the largest float, as SampleToken reads them), before logit_bias, the
// repetition penalty, temperature and the top-k / top-p / min-p filters: the
// model's own distribution, what vLLM returns by default and what an
// evaluation harness scores. Computed in double (max subtracted), so a
// token's value does not depend on the batch or the rank.
struct TokenLogprobs {
  int32_t id = -1;
  float logprob = 0;                           // of `id`
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob) of the most likely, best first, ties -> lower id
};
inline constexpr int kMaxTopLogprobs = 20;  // OpenAI's bound on top_logprobs

// `token`'s log-probability and the `top_n` (clamped to [0, kMaxTopLogprobs])
// most likely tokens under log-softmax(logits).
TokenLogprobs LogprobsOf(const float* logits, int32_t n_vocab, int32_t token, int top_n);

// The k largest logits as (id, logit), sorted by logit descending, ties by
// lower id; NaN counts as -inf. k is clamped to [0, n].
std::vector<std::pair<int32_t, float>> TopK(const float* logits, int32_t n, int k);

}  // namespace strata
