// Token sampler (see sampler.h). Runs on the rank that holds the logits.
//
// Cost for a 128256-entry vocabulary: one pass to copy the logits and apply
// the penalty; with top-k on, one more pass keeping a k-element heap (most
// logits fail a single compare against the heap's worst), then a sort of k.
// With top-k off, min-p is applied before top-p sorts anything: both keep a
// prefix of the probability-sorted order and min-p's ratio test does not
// depend on normalisation, so filtering by min-p first and normalising top-p
// by the sum over *all* candidates gives exactly top-p-then-min-p, while the
// sort only sees min-p's (usually few) survivors; the sort itself goes in
// growing chunks (nth_element + sort) and stops once the top-p prefix is complete.
#include "worker/sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>

namespace strata {

namespace {

struct Candidate {
  int32_t id;
  float logit;
};

// Sampling order: higher logit first, ties -> lower id. Logits are never NaN
// here (sanitised on entry), so this is a strict weak ordering.
inline bool Better(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// NaN -> -inf; +inf -> FLT_MAX so that max subtraction never computes inf - inf.
inline float Sanitize(float x) {
  if (std::isnan(x)) return -std::numeric_limits<float>::infinity();
  if (x == std::numeric_limits<float>::infinity()) return FLT_MAX;
  return x;
}

// Greedy: the argmax of the sanitised logits, ties -> lowest id.
int32_t GreedyToken(const float* logits, int32_t n_vocab) {
  int32_t best = 0;
  float best_logit = Sanitize(logits[0]);
  for (int32_t i = 1; i < n_vocab; ++i) {
    const float l = Sanitize(logits[i]);
    if (l > best_logit) best = i, best_logit = l;
  }
  return best;
}

// splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The k best candidates of logits[0, n), sorted with Better. A min-heap of
// size k (worst on top) keeps the pass at ~one compare per logit.
std::vector<Candidate> SelectTopK(const float* logits, int32_t n, int32_t k) {
  std::vector<Candidate> heap;
  if (k <= 0) return heap;
  heap.reserve(static_cast<size_t>(k));
  // With `Better` as the heap "less", the heap's front is the worst kept.
  int32_t i = 0;
  for (; i < n && static_cast<int32_t>(heap.size()) < k; ++i) {
    heap.push_back({i, logits[i]});
    std::push_heap(heap.begin(), heap.end(), Better);
  }
  for (; i < n; ++i) {
    const Candidate c{i, logits[i]};
    // Later ids lose ties, so a candidate must be strictly greater.
    if (c.logit > heap.front().logit) {
      std::pop_heap(heap.begin(), heap.end(), Better);
      heap.back() = c;
      std::push_heap(heap.begin(), heap.end(), Better);
    }
  }
  std::sort(heap.begin(), heap.end(), Better);
  return heap;
}

std::string FieldError(const char* field, const std::string& value, const char* expected) {
  return std::string("sampling param '") + field + "': " + value + ", expected " + expected;
}

std::string FloatText(float v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f)
    return InvalidArgument(FieldError("temperature", FloatText(p.temperature), "a finite value >= 0"));
  if (p.top_k < 0) return InvalidArgument(FieldError("top_k", std::to_string(p.top_k), ">= 0 (0 = off)"));
  if (!(p.top_p >= 0.0f && p.top_p <= 1.0f))
    return InvalidArgument(FieldError("top_p", FloatText(p.top_p), "a value in [0, 1] (1 = off, 0 = the top token)"));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return InvalidArgument(FieldError("min_p", FloatText(p.min_p), "a value in [0, 1] (0 = off)"));
  if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f)
    return InvalidArgument(
        FieldError("repeat_penalty", FloatText(p.repeat_penalty), "a finite value > 0 (1 = off)"));
  if (p.repeat_last_n < 0)
    return InvalidArgument(FieldError("repeat_last_n", std::to_string(p.repeat_last_n), ">= 0 (0 = off)"));
  if (p.logit_bias.size() > kMaxLogitBias)
    return InvalidArgument(FieldError("logit_bias", std::to_string(p.logit_bias.size()) + " entries",
                                      ("at most " + std::to_string(kMaxLogitBias)).c_str()));
  for (const auto& [id, bias] : p.logit_bias)
    if (!std::isfinite(bias))
      return InvalidArgument(FieldError("logit_bias", "token " + std::to_string(id) + ": " + FloatText(bias), "a finite value"));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

double SamplerUniform(uint64_t seed, uint64_t step) {
  // Key the seed first so that (seed, step) pairs do not alias along a line
  // (seed + c * step), then mix in the counter with the golden-ratio stride.
  const uint64_t key = Mix64(seed + 0x9E3779B97F4A7C15ull);
  const uint64_t h = Mix64(key + (step + 1) * 0x9E3779B97F4A7C15ull);
  return static_cast<double>(h >> 11) * 0x1.0p-53;  // 53 random bits -> [0, 1)
}

// ---------------------------------------------------------------------------
// TopK
// ---------------------------------------------------------------------------

std::vector<std::pair<int32_t, float>> TopK(const float* logits, int32_t n, int k) {
  std::vector<std::pair<int32_t, float>> out;
  if (n <= 0 || k <= 0) return out;
  std::vector<float> clean(logits, logits + n);
  for (float& x : clean)
    if (std::isnan(x)) x = -std::numeric_limits<float>::infinity();
  const std::vector<Candidate> best = SelectTopK(clean.data(), n, std::min<int32_t>(k, n));
  out.reserve(best.size());
  for (const Candidate& c : best) out.emplace_back(c.id, c.logit);
  return out;
}

// ---------------------------------------------------------------------------
// LogprobsOf
// ---------------------------------------------------------------------------

TokenLogprobs LogprobsOf(const float* logits, int32_t n_vocab, int32_t token, int top_n) {
  STRATA_CHECK(logits != nullptr && n_vocab > 0);
  float max_logit = Sanitize(logits[0]);
  for (int32_t i = 1; i < n_vocab; ++i) max_logit = std::max(max_logit, Sanitize(logits[i]));
  TokenLogprobs out;
  out.id = token;
  // logprob = (l - max) - log(sum exp(l - max)): the difference first, so
  // that logits near the float range (+inf read as FLT_MAX) keep their digits.
  const bool none = max_logit == -std::numeric_limits<float>::infinity();  // every logit -inf / NaN
  double log_z = 0.0;
  if (!none) {
    double z = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) z += std::exp(static_cast<double>(Sanitize(logits[i])) - max_logit);
    log_z = std::log(z);
  }
  const auto logprob = [&](int32_t id) -> float {
    if (none) return -std::numeric_limits<float>::infinity();
    return static_cast<float>((static_cast<double>(Sanitize(logits[id])) - max_logit) - log_z);
  };
  out.logprob = token >= 0 && token < n_vocab ? logprob(token) : -std::numeric_limits<float>::infinity();
  const int k = std::clamp(top_n, 0, kMaxTopLogprobs);
  if (k > 0) {
    std::vector<float> clean(logits, logits + n_vocab);
    for (float& x : clean) x = Sanitize(x);
    for (const Candidate& c : SelectTopK(clean.data(), n_vocab, std::min<int32_t>(k, n_vocab)))
      out.top.emplace_back(c.id, logprob(c.id));
  }
  return out;
}

// ---------------------------------------------------------------------------
// SampleToken
// ---------------------------------------------------------------------------

namespace {

// Greedy without logit bias or an active penalty: the argmax of the logits
// as they are, read in place (no copy of the vocabulary on a stage's
// critical path).
bool GreedyInPlace(const SamplingParams& p, std::span<const int32_t> history) {
  const bool penalised = p.repeat_penalty != 1.0f && p.repeat_last_n > 0 && !history.empty();
  return p.temperature <= 0.0f && !penalised && p.logit_bias.empty();
}

// Sanitised, biased and penalised logits of ids [id0, id0 + n) (SampleToken's
// working copy, restricted to a range of the vocabulary; a token's value does
// not depend on the range it is computed in).
std::vector<float> WorkingLogits(const float* logits, int32_t id0, int32_t n, const SamplingParams& p,
                                 std::span<const int32_t> history) {
  std::vector<float> work(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) work[i] = Sanitize(logits[i]);
  const auto in_range = [&](int32_t id) { return id >= id0 && id - id0 < n; };
  for (const auto& [id, bias] : p.logit_bias)
    if (in_range(id)) work[id - id0] = Sanitize(work[id - id0] + bias);  // FLT_MAX + bias stays finite
  if (p.repeat_penalty != 1.0f && p.repeat_last_n > 0 && !history.empty()) {
    const size_t n_last = std::min(history.size(), static_cast<size_t>(p.repeat_last_n));
    std::vector<int32_t> ids;
    ids.reserve(n_last);
    for (int32_t id : history.last(n_last))
      if (in_range(id)) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    // llama.cpp (llama_sampler_penalties_apply): divide positive logits,
    // multiply negative ones, so penalty > 1 always lowers the token.
    for (int32_t id : ids) {
      float& l = work[id - id0];
      l = l > 0.0f ? l / p.repeat_penalty : l * p.repeat_penalty;
    }
  }
  return work;
}

// Everything after top-k: min-p, top-p, temperature and the draw, over
// candidates with sanitised logits (in Better order when `sorted`).
int32_t FinishSample(std::vector<Candidate> cands, bool sorted, const SamplingParams& p, uint64_t step) {
  // The best candidate (first in Better order).
  size_t best = 0;
  if (!sorted)
    for (size_t i = 1; i < cands.size(); ++i)
      if (Better(cands[i], cands[best])) best = i;
  const float max_logit = cands[best].logit;
  if (max_logit == -std::numeric_limits<float>::infinity()) return cands[best].id;  // all NaN/-inf

  // Softmax numerators at temperature 1 (float, max subtracted); the sum over
  // all candidates normalises top-p. Summed in double, in a fixed order.
  const bool top_p_on = p.top_p < 1.0f;
  const bool min_p_on = p.min_p > 0.0f;
  if (top_p_on || min_p_on) {
    // e[i] = exp(logit_i - max) for cands[i]: one exp per candidate.
    std::vector<float> e(cands.size());
    double z = 0.0;
    for (size_t i = 0; i < cands.size(); ++i) {
      e[i] = std::exp(cands[i].logit - max_logit);
      z += static_cast<double>(e[i]);
    }

    // --- Min-p (applied first; see the file comment for why that is exact):
    // keep prob >= min_p * max prob, i.e. exp(l - max) >= min_p.
    if (min_p_on) {
      size_t kept = 0;
      for (size_t i = 0; i < cands.size(); ++i) {
        if (e[i] < p.min_p) continue;
        cands[kept] = cands[i];
        e[kept] = e[i];
        ++kept;
      }
      cands.resize(kept);
    }

    // --- Top-p: smallest prefix in prob order whose cumulative prob >= top_p.
    // Without top-k the candidates are unsorted; sort only as far as needed,
    // in chunks growing 4x (nth_element, then sort the chunk): under the
    // total order Better this yields exactly the prefix a full sort would.
    if (top_p_on) {
      const double target = static_cast<double>(p.top_p) * z;
      double cum = 0.0;
      size_t keep = cands.size();
      size_t n_sorted = sorted ? cands.size() : 0;
      size_t chunk = 1024;
      for (size_t i = 0; i < cands.size(); ++i) {
        if (i == n_sorted) {
          const size_t end = std::min(cands.size(), n_sorted + chunk);
          if (end < cands.size())
            std::nth_element(cands.begin() + n_sorted, cands.begin() + end, cands.end(), Better);
          std::sort(cands.begin() + n_sorted, cands.begin() + end, Better);
          n_sorted = end;
          chunk *= 4;
        }
        cum += static_cast<double>(std::exp(cands[i].logit - max_logit));
        if (cum >= target) {
          keep = i + 1;
          break;
        }
      }
      cands.resize(keep);
      sorted = true;
    }
  }
  STRATA_CHECK(!cands.empty());  // min-p and top-p always keep the best
  if (cands.size() == 1) return cands[0].id;

  // --- Temperature and the draw from softmax(logit / T). ---
  // The draw walks the kept tokens in id order whatever path filtered them,
  // so the token is a function of (kept set, probabilities, u) alone.
  if (sorted)
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
  // Divide rather than multiply by 1/T: a denormal T would make 1/T inf and
  // 0 * inf NaN for the best token; 0 / T stays 0.
  std::vector<float> probs(cands.size());
  double z = 0.0;
  for (size_t i = 0; i < cands.size(); ++i) {
    probs[i] = std::exp((cands[i].logit - max_logit) / p.temperature);
    z += static_cast<double>(probs[i]);
  }
  const double target = SamplerUniform(p.seed, step) * z;
  double cum = 0.0;
  size_t last_nonzero = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    if (probs[i] <= 0.0f) continue;
    last_nonzero = i;
    cum += static_cast<double>(probs[i]);
    if (target < cum) return cands[i].id;
  }
  return cands[last_nonzero].id;  // rounding left target at the very top
}

}  // namespace

int32_t SampleToken(const float* logits, int32_t n_vocab, const SamplingParams& p,
                    std::span<const int32_t> history, uint64_t step) {
  STRATA_CHECK(logits != nullptr && n_vocab > 0);
  STRATA_CHECK_MSG(ValidateSamplingParams(p).ok(), ValidateSamplingParams(p).message());

  // Argmax of the sanitised values, ties -> lowest id, as below.
  if (GreedyInPlace(p, history)) return GreedyToken(logits, n_vocab);

  std::vector<float> work = WorkingLogits(logits, 0, n_vocab, p, history);
  if (p.temperature <= 0.0f) return GreedyToken(work.data(), n_vocab);  // Sanitize is idempotent

  // --- Top-k. ---
  std::vector<Candidate> cands;
  bool sorted = false;
  if (p.top_k > 0 && p.top_k < n_vocab) {
    cands = SelectTopK(work.data(), n_vocab, p.top_k);
    sorted = true;
  } else {
    cands.resize(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) cands[i] = {i, work[i]};
  }
  work.clear();
  work.shrink_to_fit();
  return FinishSample(std::move(cands), sorted, p, step);
}

// ---------------------------------------------------------------------------
// Sampling over parts of the vocabulary
// ---------------------------------------------------------------------------

int32_t CandidatesNeeded(const SamplingParams& p, int32_t n_vocab) {
  if (p.temperature <= 0.0f) return 1;
  if (p.top_k > 0 && p.top_k < n_vocab) return p.top_k;
  return 0;
}

std::vector<std::pair<int32_t, float>> PartCandidates(const float* logits, int32_t id0, int32_t n, int32_t n_vocab,
                                                      const SamplingParams& p, std::span<const int32_t> history) {
  const int32_t k = CandidatesNeeded(p, n_vocab);
  STRATA_CHECK(k > 0 && id0 >= 0 && n >= 0 && id0 + n <= n_vocab);
  if (n == 0) return {};
  if (GreedyInPlace(p, history)) {
    const int32_t best = GreedyToken(logits, n);
    return {{best + id0, Sanitize(logits[best])}};
  }
  const std::vector<float> work = WorkingLogits(logits, id0, n, p, history);
  std::vector<std::pair<int32_t, float>> out;
  for (const Candidate& c : SelectTopK(work.data(), n, k)) out.emplace_back(c.id + id0, c.logit);
  return out;
}

void KeepBestCandidates(std::vector<std::pair<int32_t, float>>* candidates, int32_t k) {
  std::sort(candidates->begin(), candidates->end(),
            [](const auto& a, const auto& b) { return Better({a.first, a.second}, {b.first, b.second}); });
  if (static_cast<int32_t>(candidates->size()) > k) candidates->resize(static_cast<size_t>(k));
}

int32_t SampleFromParts(std::vector<std::pair<int32_t, float>> candidates, int32_t n_vocab, const SamplingParams& p,
                        uint64_t step) {
  const int32_t k = CandidatesNeeded(p, n_vocab);
  STRATA_CHECK(k > 0 && !candidates.empty());
  KeepBestCandidates(&candidates, k);
  if (p.temperature <= 0.0f) return candidates[0].first;
  std::vector<Candidate> cands;
  cands.reserve(candidates.size());
  for (const auto& [id, logit] : candidates) cands.push_back({id, logit});
  return FinishSample(std::move(cands), true, p, step);
}

}  // namespace strata
