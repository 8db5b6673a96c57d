// Tests for worker/sampler: greedy, seeding, the empirical distribution,
// each filter of the chain, the repetition penalty, parameter validation,
// non-finite logits, and agreement with a plain full-sort reference chain.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "worker/sampler.h"

namespace strata {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Params with every filter off: a plain draw from softmax(logits / T).
SamplingParams PlainParams(float temperature, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  p.seed = seed;
  return p;
}

std::vector<float> RandomLogits(int32_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// Counts of each id over `n_draws` draws at steps 0..n_draws-1.
std::map<int32_t, int> Histogram(const std::vector<float>& logits, const SamplingParams& p, int n_draws,
                                 std::span<const int32_t> history = {}) {
  std::map<int32_t, int> counts;
  for (int s = 0; s < n_draws; ++s)
    ++counts[SampleToken(logits.data(), static_cast<int32_t>(logits.size()), p, history, s)];
  return counts;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> out(logits.size());
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) z += out[i] = std::exp((logits[i] - mx) / temperature);
  for (double& x : out) x /= z;
  return out;
}

// ---------------------------------------------------------------------------
// Greedy
// ---------------------------------------------------------------------------

TEST(SamplerGreedy, PicksArgmax) {
  const std::vector<float> logits = {0.1f, -2.0f, 3.5f, 3.4f, 1.0f};
  EXPECT_EQ(SampleToken(logits.data(), 5, PlainParams(0.0f), {}, 0), 2);
  const std::vector<float> big = RandomLogits(128256, 7);
  const int32_t want = static_cast<int32_t>(std::max_element(big.begin(), big.end()) - big.begin());
  EXPECT_EQ(SampleToken(big.data(), 128256, PlainParams(0.0f), {}, 0), want);
}

TEST(SamplerGreedy, TiesGoToLowestId) {
  const std::vector<float> logits = {1.0f, 5.0f, 2.0f, 5.0f, 5.0f};
  EXPECT_EQ(SampleToken(logits.data(), 5, PlainParams(0.0f), {}, 0), 1);
  const std::vector<float> flat(100, 0.25f);
  EXPECT_EQ(SampleToken(flat.data(), 100, PlainParams(0.0f), {}, 0), 0);
}

TEST(SamplerGreedy, TemperatureZeroIgnoresSeedAndStep) {
  const std::vector<float> logits = RandomLogits(1000, 3);
  SamplingParams p;  // defaults for the filters
  p.temperature = 0.0f;
  const int32_t first = SampleToken(logits.data(), 1000, p, {}, 0);
  for (uint64_t seed : {0ull, 1ull, 42ull, ~0ull}) {
    p.seed = seed;
    for (uint64_t step : {0ull, 1ull, 999ull})
      EXPECT_EQ(SampleToken(logits.data(), 1000, p, {}, step), first);
  }
}

TEST(SamplerGreedy, TopK1EqualsGreedy) {
  for (uint32_t trial = 0; trial < 50; ++trial) {
    std::vector<float> logits = RandomLogits(500, 100 + trial);
    logits[trial * 7 % 500] = logits[trial * 13 % 500] = 9.0f;  // a tie at the top
    SamplingParams greedy = PlainParams(0.0f);
    SamplingParams k1 = PlainParams(1.3f, trial);
    k1.top_k = 1;
    for (uint64_t step = 0; step < 5; ++step)
      EXPECT_EQ(SampleToken(logits.data(), 500, k1, {}, step),
                SampleToken(logits.data(), 500, greedy, {}, 0));
  }
}

// ---------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------

// A token depends on (seed, step) alone, not on the calls made before it:
// a sequence drawn step by step equals one drawn backwards, and one drawn
// while another sequence (another seed) is sampled in between.
TEST(SamplerSeed, TokenDependsOnSeedAndStepOnly) {
  const std::vector<float> logits(1000, 0.0f);  // uniform: the draw alone decides
  const SamplingParams p = PlainParams(1.0f, 1234), other = PlainParams(1.0f, 77);
  constexpr int kSteps = 200;
  std::vector<int32_t> forward(kSteps), backward(kSteps), interleaved(kSteps);
  std::vector<double> uniform_forward(kSteps), uniform_backward(kSteps);
  for (int step = 0; step < kSteps; ++step) {
    forward[step] = SampleToken(logits.data(), 1000, p, {}, step);
    uniform_forward[step] = SamplerUniform(p.seed, step);
  }
  for (int step = kSteps - 1; step >= 0; --step) {
    backward[step] = SampleToken(logits.data(), 1000, p, {}, step);
    uniform_backward[step] = SamplerUniform(p.seed, step);
  }
  for (int step = 0; step < kSteps; ++step) {
    (void)SampleToken(logits.data(), 1000, other, {}, kSteps - step);
    interleaved[step] = SampleToken(logits.data(), 1000, p, {}, step);
  }
  EXPECT_EQ(forward, backward);
  EXPECT_EQ(forward, interleaved);
  EXPECT_EQ(uniform_forward, uniform_backward);
  // ... and the steps are not all one token (the draw does use the step).
  EXPECT_GT(std::set<int32_t>(forward.begin(), forward.end()).size(), 100u);
}

TEST(SamplerSeed, DifferentSeedsGiveDifferentSequences) {
  const std::vector<float> logits(1000, 0.0f);
  std::set<std::vector<int32_t>> sequences;
  for (uint64_t seed : {0ull, 1ull, 2ull, 3ull, 0x9E3779B97F4A7C15ull, ~0ull}) {
    SamplingParams p = PlainParams(1.0f, seed);
    std::vector<int32_t> seq;
    for (uint64_t step = 0; step < 64; ++step) seq.push_back(SampleToken(logits.data(), 1000, p, {}, step));
    sequences.insert(seq);
    // Within one sequence the steps are not stuck on one token either.
    EXPECT_GT(std::set<int32_t>(seq.begin(), seq.end()).size(), 40u);
  }
  EXPECT_EQ(sequences.size(), 6u);
}

TEST(SamplerSeed, UniformIsInUnitIntervalAndUnbiased) {
  double sum = 0;
  for (uint64_t s = 0; s < 100000; ++s) {
    const double u = SamplerUniform(77, s);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

// ---------------------------------------------------------------------------
// Distribution
// ---------------------------------------------------------------------------

TEST(SamplerDistribution, MatchesSoftmaxOverTemperature) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 2.0f, 1.5f};
  for (float t : {0.7f, 1.0f, 1.8f}) {
    const int n_draws = 20000;
    const std::map<int32_t, int> counts = Histogram(logits, PlainParams(t, 2024), n_draws);
    const std::vector<double> want = Softmax(logits, t);
    double chi2 = 0, max_diff = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      const double got = counts.count(i) ? counts.at(i) : 0;
      const double expect = want[i] * n_draws;
      chi2 += (got - expect) * (got - expect) / expect;
      max_diff = std::max(max_diff, std::abs(got / n_draws - want[i]));
    }
    // 6 degrees of freedom: P(chi2 > 22.5) ~ 0.001.
    EXPECT_LT(chi2, 22.5) << "T=" << t;
    EXPECT_LT(max_diff, 0.015) << "T=" << t;
  }
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

TEST(SamplerFilters, TopKDrawsOnlyTheKBest) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f, 2.8f, 0.5f, 2.0f};
  SamplingParams p = PlainParams(5.0f);  // hot: everything would be likely
  p.top_k = 3;
  const std::map<int32_t, int> counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.size(), 3u);
  for (int32_t id : {1, 3, 4}) EXPECT_GT(counts.count(id) ? counts.at(id) : 0, 1000) << id;
}

TEST(SamplerFilters, TopPKeepsSmallestPrefixReachingP) {
  // probs 0.5, 0.3, 0.15, 0.05
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  SamplingParams p = PlainParams(1.0f);
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: keeps ids 1 and 3
  std::map<int32_t, int> counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts[1], 2000);
  EXPECT_GT(counts[3], 1000);
  p.top_p = 0.9f;  // 0.8 < 0.9 <= 0.95: adds id 0, never id 2
  counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(2), 0u);
  p.top_p = 0.01f;  // at least one token survives
  counts = Histogram(logits, p, 500);
  ASSERT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts.begin()->first, 1);
  p.top_p = 0.0f;  // OpenAI's range includes 0: the top token only, as vLLM
  ASSERT_TRUE(ValidateSamplingParams(p).ok());
  counts = Histogram(logits, p, 500);
  ASSERT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts.begin()->first, 1);
}

TEST(SamplerLogitBias, AddsToTheLogitBeforeEverythingElse) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f};
  SamplingParams greedy = PlainParams(0.0f);
  EXPECT_EQ(SampleToken(logits.data(), 4, greedy, {}, 0), 1);
  greedy.logit_bias = {{1, -100.0f}};  // banned: the next best
  EXPECT_EQ(SampleToken(logits.data(), 4, greedy, {}, 0), 3);
  greedy.logit_bias = {{0, 2.5f}, {0, 0.6f}};  // repeated ids add up: 3.1 > 3
  EXPECT_EQ(SampleToken(logits.data(), 4, greedy, {}, 0), 0);
  greedy.logit_bias = {{-1, 100.0f}, {4, 100.0f}, {2, 1e30f}};  // ids outside the vocabulary ignored; no overflow
  EXPECT_EQ(SampleToken(logits.data(), 4, greedy, {}, 0), 2);
  // Sampling: +100 leaves nothing else; -100 removes the token.
  SamplingParams hot = PlainParams(2.0f);
  hot.logit_bias = {{0, 100.0f}};
  std::map<int32_t, int> counts = Histogram(logits, hot, 500);
  ASSERT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts.begin()->first, 0);
  hot.logit_bias = {{1, -100.0f}, {3, -100.0f}};
  counts = Histogram(logits, hot, 2000);
  EXPECT_EQ(counts.count(1) + counts.count(3), 0u);
  EXPECT_EQ(counts.size(), 2u);
  // The bias comes before the penalty: it divides the biased logit.
  SamplingParams pen = PlainParams(0.0f);
  pen.repeat_penalty = 2.0f;
  pen.repeat_last_n = 4;
  pen.logit_bias = {{0, 5.0f}};  // 5 / 2 = 2.5 < 3: token 1 still wins
  const std::vector<int32_t> history = {0};
  EXPECT_EQ(SampleToken(logits.data(), 4, pen, history, 0), 1);
}

TEST(SamplerFilters, MinPDropsTokensBelowFractionOfMax) {
  // probs relative to max: 1, 0.5, 0.2, 0.04
  const std::vector<float> logits = {std::log(0.04f), std::log(1.0f), std::log(0.2f), std::log(0.5f)};
  SamplingParams p = PlainParams(1.0f);
  p.min_p = 0.1f;  // drops id 0
  std::map<int32_t, int> counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(0), 0u);
  p.min_p = 0.3f;  // drops ids 0 and 2
  counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts.count(2), 0u);
  // min-p uses temperature-1 probabilities: a hot temperature does not re-admit id 0.
  p.min_p = 0.1f;
  p.temperature = 10.0f;
  counts = Histogram(logits, p, 5000);
  EXPECT_EQ(counts.count(0), 0u);
}

TEST(SamplerFilters, DefaultsNeverDrawTinyProbabilityTokens) {
  std::vector<float> logits(128256, -30.0f);  // a huge tail of negligible tokens
  for (int32_t i = 0; i < 20; ++i) logits[1000 * i + 17] = 5.0f - 0.2f * i;
  const SamplingParams p;  // defaults: T 0.8, top-k 40, top-p 0.95, min-p 0.05
  std::set<int32_t> allowed;
  for (int32_t i = 0; i < 20; ++i) allowed.insert(1000 * i + 17);
  for (uint64_t step = 0; step < 2000; ++step) {
    const int32_t tok = SampleToken(logits.data(), 128256, p, {}, step);
    ASSERT_TRUE(allowed.count(tok)) << "step " << step << " drew " << tok;
  }
}

// ---------------------------------------------------------------------------
// Repetition penalty
// ---------------------------------------------------------------------------

TEST(SamplerPenalty, LowersRepeatedPositiveLogits) {
  const std::vector<float> logits = {2.0f, 1.5f, 0.0f};
  SamplingParams p = PlainParams(0.0f);
  p.repeat_penalty = 1.5f;  // 2.0 / 1.5 = 1.33 < 1.5
  const std::vector<int32_t> history = {0, 0, 0};
  EXPECT_EQ(SampleToken(logits.data(), 3, p, {}, 0), 0);
  EXPECT_EQ(SampleToken(logits.data(), 3, p, history, 0), 1);
  // Applied once per distinct id, however often it repeats: 2.0 / 1.5 > 1.3.
  const std::vector<float> close = {2.0f, 1.3f};
  EXPECT_EQ(SampleToken(close.data(), 2, p, history, 0), 0);
}

TEST(SamplerPenalty, LowersRepeatedNegativeLogits) {
  const std::vector<float> logits = {-1.0f, -1.2f, -5.0f};
  SamplingParams p = PlainParams(0.0f);
  p.repeat_penalty = 1.3f;  // -1.0 * 1.3 = -1.3 < -1.2
  const std::vector<int32_t> history = {0};
  EXPECT_EQ(SampleToken(logits.data(), 3, p, history, 0), 1);
  // Its probability drops when sampling, too.
  const std::vector<float> pair = {-1.0f, -1.0f};
  SamplingParams hot = PlainParams(1.0f, 9);
  hot.repeat_penalty = 3.0f;  // -1 -> -3: p(0) = 1 / (1 + e^2) ~ 0.12
  const std::map<int32_t, int> counts = Histogram(pair, hot, 5000, history);
  EXPECT_NEAR(counts.at(0) / 5000.0, 1.0 / (1.0 + std::exp(2.0)), 0.02);
}

TEST(SamplerPenalty, OnlyTheLastNTokensCountAndBadIdsAreIgnored) {
  const std::vector<float> logits = {2.0f, 1.5f, 0.0f};
  SamplingParams p = PlainParams(0.0f);
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 2;
  const std::vector<int32_t> old = {0, 2, 2};  // id 0 is outside the window
  EXPECT_EQ(SampleToken(logits.data(), 3, p, old, 0), 0);
  const std::vector<int32_t> recent = {2, 0, 2};
  EXPECT_EQ(SampleToken(logits.data(), 3, p, recent, 0), 1);
  p.repeat_last_n = 0;  // off
  EXPECT_EQ(SampleToken(logits.data(), 3, p, recent, 0), 0);
  p.repeat_last_n = 64;
  const std::vector<int32_t> bad = {-1, 3, 1 << 30};
  EXPECT_EQ(SampleToken(logits.data(), 3, p, bad, 0), 0);
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

TEST(SamplerValidate, DefaultsAndEdgesAreValid) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repeat_last_n = 0;
  p.seed = ~0ull;
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
}

TEST(SamplerValidate, ErrorsNameTheField) {
  struct Case {
    const char* field;
    void (*set)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kNaN; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kInf; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = -0.01f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = kNaN; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = kNaN; }},
      {"repeat_penalty", [](SamplingParams& p) { p.repeat_penalty = 0.0f; }},
      {"repeat_penalty", [](SamplingParams& p) { p.repeat_penalty = -1.0f; }},
      {"repeat_penalty", [](SamplingParams& p) { p.repeat_penalty = kNaN; }},
      {"repeat_last_n", [](SamplingParams& p) { p.repeat_last_n = -1; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{3, kInf}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{3, kNaN}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias.assign(kMaxLogitBias + 1, {1, 1.0f}); }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.set(p);
    const Status st = ValidateSamplingParams(p);
    EXPECT_EQ(st.kind(), ErrorKind::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(std::string("'") + c.field + "'"), std::string::npos) << st.message();
  }
}

// ---------------------------------------------------------------------------
// Non-finite logits: NaN counts as -inf, +inf as the largest float.
// ---------------------------------------------------------------------------

TEST(SamplerNonFinite, NaNIsNeverPicked) {
  const std::vector<float> logits = {kNaN, 1.0f, kNaN, 0.5f, -kInf};
  EXPECT_EQ(SampleToken(logits.data(), 5, PlainParams(0.0f), {}, 0), 1);
  for (SamplingParams p : {PlainParams(1.0f, 3), SamplingParams{}}) {
    const std::map<int32_t, int> counts = Histogram(logits, p, 2000);
    for (const auto& [id, n] : counts) EXPECT_TRUE(id == 1 || id == 3) << id;
  }
}

TEST(SamplerNonFinite, AllNaNReturnsLowestIdWithoutCrashing) {
  const std::vector<float> logits(10, kNaN);
  EXPECT_EQ(SampleToken(logits.data(), 10, PlainParams(0.0f), {}, 0), 0);
  EXPECT_EQ(SampleToken(logits.data(), 10, PlainParams(1.0f), {}, 0), 0);
  EXPECT_EQ(SampleToken(logits.data(), 10, SamplingParams{}, {}, 0), 0);
  const std::vector<float> neg(10, -kInf);
  EXPECT_EQ(SampleToken(neg.data(), 10, SamplingParams{}, {}, 3), 0);
}

TEST(SamplerNonFinite, PositiveInfinityTakesTheMass) {
  const std::vector<float> logits = {0.0f, kInf, 3.0f, kInf};
  EXPECT_EQ(SampleToken(logits.data(), 4, PlainParams(0.0f), {}, 0), 1);
  const std::map<int32_t, int> counts = Histogram(logits, PlainParams(1.0f, 5), 2000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts.at(1), 800);
  EXPECT_GT(counts.at(3), 800);
}

// ---------------------------------------------------------------------------
// TopK helper
// ---------------------------------------------------------------------------

TEST(SamplerTopK, SortedDescendingTiesByLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, kNaN, 3.0f, 2.0f, -1.0f};
  const auto top = TopK(logits.data(), 6, 4);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0], std::make_pair(1, 3.0f));
  EXPECT_EQ(top[1], std::make_pair(3, 3.0f));
  EXPECT_EQ(top[2], std::make_pair(4, 2.0f));
  EXPECT_EQ(top[3], std::make_pair(0, 1.0f));
  EXPECT_EQ(TopK(logits.data(), 6, 100).size(), 6u);
  EXPECT_EQ(TopK(logits.data(), 6, 100).back().first, 2);  // NaN last
  EXPECT_TRUE(TopK(logits.data(), 6, 0).empty());
}

TEST(SamplerTopK, MatchesFullSortOnLargeVocab) {
  const std::vector<float> logits = RandomLogits(128256, 11);
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const auto top = TopK(logits.data(), 128256, 50);
  ASSERT_EQ(top.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(top[i].first, ids[i]) << i;
}

// ---------------------------------------------------------------------------
// Agreement with a plain reference chain: penalty, full sort, top-k, top-p,
// min-p, temperature, draw in id order with the same uniform.
// ---------------------------------------------------------------------------

int32_t ReferenceSample(std::vector<float> l, const SamplingParams& p, std::span<const int32_t> history,
                        uint64_t step) {
  const int32_t n = static_cast<int32_t>(l.size());
  std::set<int32_t> seen;
  const size_t n_last = std::min(history.size(), static_cast<size_t>(p.repeat_last_n));
  for (size_t i = history.size() - n_last; i < history.size(); ++i) seen.insert(history[i]);
  if (p.repeat_penalty != 1.0f)
    for (int32_t id : seen) l[id] = l[id] > 0 ? l[id] / p.repeat_penalty : l[id] * p.repeat_penalty;
  std::vector<int32_t> c(n);
  for (int32_t i = 0; i < n; ++i) c[i] = i;
  std::stable_sort(c.begin(), c.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  if (p.temperature <= 0) return c[0];
  if (p.top_k > 0 && p.top_k < n) c.resize(p.top_k);
  const float mx = l[c[0]];
  if (p.top_p < 1.0f) {
    std::vector<int32_t> by_id = c;
    std::sort(by_id.begin(), by_id.end());
    double z = 0;
    for (int32_t id : by_id) z += std::exp(l[id] - mx);
    double cum = 0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cum += std::exp(l[c[i]] - mx);
      if (cum >= p.top_p * z) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
  }
  if (p.min_p > 0) std::erase_if(c, [&](int32_t id) { return std::exp(l[id] - mx) < p.min_p; });
  std::sort(c.begin(), c.end());
  std::vector<float> pr(c.size());
  double z = 0;
  for (size_t i = 0; i < c.size(); ++i) z += pr[i] = std::exp((l[c[i]] - mx) / p.temperature);
  const double target = SamplerUniform(p.seed, step) * z;
  double cum = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    cum += pr[i];
    if (target < cum) return c[i];
  }
  return c.back();
}

TEST(SamplerReference, MatchesPlainChainOnRandomInputs) {
  std::mt19937 rng(99);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t n = 50 + static_cast<int32_t>(rng() % 2000);
    const std::vector<float> logits = RandomLogits(n, rng(), 1.0f + (rng() % 40) / 10.0f);
    SamplingParams p;
    p.temperature = (rng() % 8) * 0.25f;
    const int32_t top_ks[] = {0, 1, 5, 40, 100000};
    p.top_k = top_ks[rng() % 5];
    const float top_ps[] = {1.0f, 0.95f, 0.5f, 0.1f};
    p.top_p = top_ps[rng() % 4];
    const float min_ps[] = {0.0f, 0.05f, 0.2f};
    p.min_p = min_ps[rng() % 3];
    const float penalties[] = {1.0f, 1.1f, 2.0f};
    p.repeat_penalty = penalties[rng() % 3];
    p.repeat_last_n = static_cast<int32_t>(rng() % 80);
    p.seed = (static_cast<uint64_t>(rng()) << 32) | rng();
    std::vector<int32_t> history(rng() % 100);
    for (int32_t& t : history) t = static_cast<int32_t>(rng() % n);
    for (uint64_t step = 0; step < 10; ++step, ++checked)
      ASSERT_EQ(SampleToken(logits.data(), n, p, history, step), ReferenceSample(logits, p, history, step))
          << "trial " << trial << " step " << step << " T=" << p.temperature << " k=" << p.top_k
          << " top_p=" << p.top_p << " min_p=" << p.min_p;
  }
  EXPECT_EQ(checked, 3000);
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// LogprobsOf: log-softmax in double, the token's value, the top ones best
// first (ties -> lower id), the sampler's reading of NaN / +inf.
TEST(LogprobsOf, IsLogSoftmaxOfTheRawLogits) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  TokenLogprobs lp = LogprobsOf(logits.data(), 5, 4, 3);
  EXPECT_EQ(lp.id, 4);
  EXPECT_NEAR(lp.logprob, 0.5 - std::log(z), 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);  // tie with id 3: the lower id first
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 0);
  EXPECT_NEAR(lp.top[0].second, 3.0 - std::log(z), 1e-6);
  EXPECT_EQ(lp.top[0].second, lp.top[1].second);
  // Probabilities sum to 1.
  double sum = 0;
  for (int i = 0; i < 5; ++i) sum += std::exp(static_cast<double>(LogprobsOf(logits.data(), 5, i, 0).logprob));
  EXPECT_NEAR(sum, 1.0, 1e-6);
  // top_n is clamped to [0, 20] and to the vocabulary.
  EXPECT_TRUE(LogprobsOf(logits.data(), 5, 0, 0).top.empty());
  EXPECT_EQ(LogprobsOf(logits.data(), 5, 0, 99).top.size(), 5u);
  std::vector<float> big(100, 0.0f);
  EXPECT_EQ(LogprobsOf(big.data(), 100, 0, 99).top.size(), static_cast<size_t>(kMaxTopLogprobs));
  EXPECT_NEAR(LogprobsOf(big.data(), 100, 7, 0).logprob, -std::log(100.0), 1e-6);
}

TEST(LogprobsOf, NonFiniteLogits) {
  const std::vector<float> logits = {kNaN, 0.0f, -kInf, 0.0f};
  TokenLogprobs lp = LogprobsOf(logits.data(), 4, 1, 4);
  EXPECT_NEAR(lp.logprob, -std::log(2.0), 1e-6);  // NaN and -inf count as probability 0
  EXPECT_EQ(LogprobsOf(logits.data(), 4, 0, 0).logprob, -kInf);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_EQ(lp.top[1].first, 3);
  const std::vector<float> inf = {kInf, 1.0f, kInf};
  EXPECT_NEAR(LogprobsOf(inf.data(), 3, 0, 0).logprob, -std::log(2.0), 1e-6);  // +inf tokens share the mass
  const std::vector<float> none = {-kInf, kNaN};
  EXPECT_EQ(LogprobsOf(none.data(), 2, 0, 2).logprob, -kInf);
  // Out-of-range token: -inf, no crash.
  EXPECT_EQ(LogprobsOf(logits.data(), 4, 9, 0).logprob, -kInf);
}

// The lm_head shared by two ranks: each part's candidates, merged, give the
// token SampleToken gives on the whole vocabulary, for every split point,
// with ties, non-finite logits, logit bias and the repetition penalty.
TEST(SampleFromParts, MatchesTheWholeVocabularyAtEverySplit) {
  const int32_t n = 64;
  std::mt19937 rng(7);
  int checked = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<float> logits = RandomLogits(n, 1000 + trial, 2.0f);
    // Ties (rounded logits), NaN, +inf and -inf in some trials.
    if (trial % 3 == 0)
      for (float& x : logits) x = std::round(x);
    if (trial % 7 == 1) logits[rng() % n] = kNaN;
    if (trial % 11 == 2) logits[rng() % n] = kInf, logits[rng() % n] = kInf;
    if (trial % 13 == 3)
      for (float& x : logits) x = -kInf;
    SamplingParams p;
    p.temperature = trial % 4 == 0 ? 0.0f : 0.3f + 0.1f * static_cast<float>(trial % 9);
    p.top_k = 1 + static_cast<int32_t>(rng() % 20);
    p.top_p = trial % 5 == 0 ? 1.0f : 0.5f + 0.05f * static_cast<float>(trial % 10);
    p.min_p = trial % 6 == 0 ? 0.0f : 0.02f * static_cast<float>(trial % 4);
    p.repeat_penalty = trial % 2 == 0 ? 1.0f : 1.3f;
    p.repeat_last_n = 8;
    p.seed = static_cast<uint64_t>(trial);
    if (trial % 3 == 1) p.logit_bias = {{static_cast<int32_t>(rng() % n), 5.0f}, {3, -100.0f}, {3, 2.0f}};
    std::vector<int32_t> history;
    for (int i = 0; i < 12; ++i) history.push_back(static_cast<int32_t>(rng() % n));
    ASSERT_GT(CandidatesNeeded(p, n), 0);
    const int32_t whole = SampleToken(logits.data(), n, p, history, 3);
    for (int32_t split = 0; split <= n; split += 8) {
      auto cands = PartCandidates(logits.data(), 0, split, n, p, history);
      auto tail = PartCandidates(logits.data() + split, split, n - split, n, p, history);
      // Arrival order does not matter.
      if (trial % 2 == 0) cands.insert(cands.end(), tail.begin(), tail.end());
      else cands.insert(cands.begin(), tail.begin(), tail.end());
      ASSERT_EQ(SampleFromParts(cands, n, p, 3), whole) << "trial " << trial << " split " << split;
      // The last stage taking [0, split) a group of 8 at a time, keeping only
      // the k best after each, then rank 0's part.
      const int32_t k = CandidatesNeeded(p, n);
      std::vector<std::pair<int32_t, float>> merged;
      for (int32_t from = 0; from < split; from += 8) {
        auto group = PartCandidates(logits.data() + from, from, std::min(8, split - from), n, p, history);
        merged.insert(merged.end(), group.begin(), group.end());
        KeepBestCandidates(&merged, k);
        ASSERT_LE(static_cast<int32_t>(merged.size()), k);
      }
      merged.insert(merged.end(), tail.begin(), tail.end());
      ASSERT_EQ(SampleFromParts(merged, n, p, 3), whole) << "trial " << trial << " split " << split << ", in groups";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 400 * 9);
  // Configs that need every logit cannot be split.
  SamplingParams all;
  all.temperature = 0.8f;
  all.top_k = 0;
  EXPECT_EQ(CandidatesNeeded(all, n), 0);
  all.top_k = n;
  EXPECT_EQ(CandidatesNeeded(all, n), 0);
  all.temperature = 0.0f;
  EXPECT_EQ(CandidatesNeeded(all, n), 1);
}

}  // namespace
}  // namespace strata
