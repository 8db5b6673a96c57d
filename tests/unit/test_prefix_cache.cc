// The server's prefix cache (coordinator/prefix_cache.h): the table's
// matching, moves and copies, LRU eviction by count and by bytes, and its
// counters; the layers' cut rules (model/blocks.h); a stage's reuse of a
// kept state, whose logits equal the whole prompt's bit for bit; and the
// serving loop over a real model, where every turn of a chat answered from
// the cache equals the same request answered from scratch.
#include "coordinator/prefix_cache.h"

#include <gtest/gtest.h>

#include <cstring>

#include "coordinator/pipeline.h"
#include "coordinator/serving.h"
#include "model/model_files.h"

namespace strata {
namespace {

std::vector<int32_t> Seq(std::initializer_list<int32_t> ids) { return ids; }

PrefixCacheOptions Options(int n, uint64_t max_bytes = 0) {
  PrefixCacheOptions o;
  o.max_sequences = n;
  o.max_bytes = max_bytes;
  o.bytes_of = [](int64_t length) { return static_cast<uint64_t>(length) * 10; };
  return o;
}

TEST(PrefixCacheTable, OffKeepsNothing) {
  PrefixCache c(Options(0));
  EXPECT_FALSE(c.enabled());
  EXPECT_EQ(c.Keep(5, Seq({1, 2, 3})), std::vector<uint64_t>{5});
  EXPECT_FALSE(c.Take(Seq({1, 2, 3, 4})).has_value());
  EXPECT_EQ(c.stats().lookups, 0u);
}

TEST(PrefixCacheTable, APromptExtendingAKeptSequenceTakesItOver) {
  PrefixCache c(Options(4));
  EXPECT_FALSE(c.Take(Seq({1, 2, 3})).has_value());  // empty: a miss
  EXPECT_TRUE(c.Keep(7, Seq({1, 2, 3, 4})).empty());
  EXPECT_EQ(c.stats().sequences, 1u);
  EXPECT_EQ(c.stats().bytes, 40u);
  auto hit = c.Take(Seq({1, 2, 3, 4, 5, 6}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->seq_id, 7u);
  EXPECT_EQ(hit->keep, 4);
  EXPECT_FALSE(hit->copy);
  // Moved out: the table is empty again.
  EXPECT_EQ(c.stats().sequences, 0u);
  EXPECT_EQ(c.stats().bytes, 0u);
  EXPECT_FALSE(c.Take(Seq({1, 2, 3, 4, 5})).has_value());
  const PrefixCacheStats s = c.stats();
  EXPECT_EQ(s.lookups, 3u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses(), 2u);
  EXPECT_EQ(s.prompt_tokens, 3u + 6u + 5u);
  EXPECT_EQ(s.cached_tokens, 4u);
}

TEST(PrefixCacheTable, APartialMatchCopiesAndLeavesOneTokenToCompute) {
  PrefixCache c(Options(4));
  c.Keep(7, Seq({1, 2, 3, 4, 5}));
  // Shares 3 tokens: a copy cut to 3; the kept sequence stays.
  auto hit = c.Take(Seq({1, 2, 3, 9, 9}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->keep, 3);
  EXPECT_TRUE(hit->copy);
  EXPECT_EQ(c.stats().sequences, 1u);
  // The same prompt again: the last token is always computed (its logits
  // give the first answer token), so 4 of the 5 are reused, by a copy.
  hit = c.Take(Seq({1, 2, 3, 4, 5}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->keep, 4);
  EXPECT_TRUE(hit->copy);
  // One token: nothing to reuse. Nothing in common: a miss.
  EXPECT_FALSE(c.Take(Seq({1})).has_value());
  EXPECT_FALSE(c.Take(Seq({9, 1, 2, 3})).has_value());
}

TEST(PrefixCacheTable, TheLongestMatchWinsThenTheMostRecent) {
  PrefixCache c(Options(4));
  c.Keep(1, Seq({1, 2, 3, 4}));
  c.Keep(2, Seq({1, 2, 8, 8, 8, 8}));
  c.Keep(3, Seq({1, 2, 3, 7}));
  auto hit = c.Take(Seq({1, 2, 3, 4, 5}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->seq_id, 1u);
  EXPECT_EQ(hit->keep, 4);
  // 1 moved out: 2 shares {1, 2}, 3 shares {1, 2, 3}.
  hit = c.Take(Seq({1, 2, 3, 5, 5}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->seq_id, 3u);
  EXPECT_EQ(hit->keep, 3);
  // Equal matches ({1, 2}): the most recently used (3, just copied from).
  hit = c.Take(Seq({1, 2, 6}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->seq_id, 3u);
}

TEST(PrefixCacheTable, EvictsTheLeastRecentlyUsedBeyondTheCount) {
  PrefixCache c(Options(2));
  EXPECT_TRUE(c.Keep(1, Seq({1, 1})).empty());
  EXPECT_TRUE(c.Keep(2, Seq({2, 2})).empty());
  auto moved = c.Take(Seq({1, 1, 5}));  // extends 1 whole: moves it out
  ASSERT_TRUE(moved.has_value());
  EXPECT_FALSE(moved->copy);
  EXPECT_EQ(c.stats().sequences, 1u);
  EXPECT_TRUE(c.Keep(3, Seq({3, 3})).empty());
  // A copy makes 2 the most recent; 3 is then the least recent.
  ASSERT_TRUE(c.Take(Seq({2, 9})).has_value());
  EXPECT_EQ(c.Keep(4, Seq({4, 4})), std::vector<uint64_t>{3});
  EXPECT_EQ(c.Keep(5, Seq({5, 5})), std::vector<uint64_t>{2});
  EXPECT_EQ(c.stats().evictions, 2u);
  EXPECT_EQ(c.stats().sequences, 2u);
  const std::vector<uint64_t> all = c.Clear();
  EXPECT_EQ(all, (std::vector<uint64_t>{5, 4}));
  EXPECT_EQ(c.stats().sequences, 0u);
  EXPECT_EQ(c.stats().bytes, 0u);
}

TEST(PrefixCacheTable, EvictsBeyondTheBytes) {
  PrefixCache c(Options(10, 100));  // 10 bytes a token, 100 at most
  EXPECT_TRUE(c.Keep(1, Seq({1, 1, 1, 1})).empty());     // 40
  EXPECT_TRUE(c.Keep(2, Seq({2, 2, 2, 2})).empty());     // 80
  EXPECT_EQ(c.Keep(3, Seq({3, 3, 3})), std::vector<uint64_t>{1});  // 110 -> 70
  EXPECT_EQ(c.stats().bytes, 70u);
  // Alone beyond the bound: not kept, the others stay.
  EXPECT_EQ(c.Keep(4, std::vector<int32_t>(11, 4)), std::vector<uint64_t>{4});
  EXPECT_EQ(c.stats().sequences, 2u);
  EXPECT_EQ(c.stats().bytes, 70u);
  EXPECT_EQ(c.stats().evictions, 2u);
}

TEST(PrefixCacheTable, StatesThatCannotBeCutAreReusedWholeOnly) {
  PrefixCacheOptions o = Options(4);
  o.keeps_prefix = [](int64_t length, int64_t keep) { return keep == length; };  // a conv state
  PrefixCache c(o);
  c.Keep(1, Seq({1, 2, 3}));
  EXPECT_FALSE(c.Take(Seq({1, 2, 9, 9})).has_value());
  EXPECT_FALSE(c.Take(Seq({1, 2, 3})).has_value());  // would keep 2 of 3
  auto hit = c.Take(Seq({1, 2, 3, 4}));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->keep, 3);
  EXPECT_FALSE(hit->copy);
}

TEST(PrefixCacheRules, WhichLayerStatesKeepAPrefix) {
  // Full attention: any cut.
  EXPECT_TRUE(LayerStateKeepsPrefix(LayerKind::kAttention, 0, 5000, 1));
  EXPECT_FALSE(LayerStateKeepsPrefix(LayerKind::kAttention, 0, 10, 11));
  EXPECT_FALSE(LayerStateKeepsPrefix(LayerKind::kAttention, 0, 10, -1));
  // A sliding window: whole, or cut while the ring never wrapped.
  EXPECT_TRUE(LayerStateKeepsPrefix(LayerKind::kAttention, 4096, 4096, 100));
  EXPECT_FALSE(LayerStateKeepsPrefix(LayerKind::kAttention, 4096, 4097, 100));
  EXPECT_TRUE(LayerStateKeepsPrefix(LayerKind::kAttention, 4096, 9000, 9000));
  // A short convolution: whole only.
  EXPECT_TRUE(LayerStateKeepsPrefix(LayerKind::kShortConv, 0, 7, 7));
  EXPECT_FALSE(LayerStateKeepsPrefix(LayerKind::kShortConv, 0, 7, 6));
}

const std::string kModel = std::string(STRATA_SHARED_DIR) + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf";

class PrefixReuseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = ModelFiles::Open(kModel);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(model).value().release();
  }
  static void TearDownTestSuite() { delete model_; }
  static ModelFiles* model_;
};
ModelFiles* PrefixReuseTest::model_ = nullptr;

const std::vector<int32_t> kPrompt = {650, 1131, 268, 1056, 30, 12, 2047, 333, 4100, 7, 99, 1200, 15, 640};

// Logits of the rows from `from` of `tokens`, in sequence `seq`, computed
// from position `pos0` on (its cache must hold pos0 positions).
std::vector<float> Logits(Pipeline& p, uint64_t seq, const std::vector<int32_t>& tokens, int64_t pos0) {
  SequenceRequest r;
  r.seq_id = seq;
  r.pos0 = pos0;
  r.tokens.assign(tokens.begin() + pos0, tokens.end());
  r.output = SequenceRequest::Output::kLogits;
  auto out = p.Forward({r});
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? (*out)[0].logits : std::vector<float>{};
}

bool SameBits(const std::vector<float>& a, const float* b, size_t n) {
  return a.size() >= n && std::memcmp(a.data(), b, n * sizeof(float)) == 0;
}

TEST_F(PrefixReuseTest, AStageReusesAKeptStateAndGivesTheWholePromptsBits) {
  ThreadPool pool(2);
  StageOptions so;
  so.n_ctx = 1024;
  so.max_sequences = 1;
  so.cached_sequences = 2;
  auto p = LocalPipeline::Create(*model_, so, &pool);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const size_t vocab = static_cast<size_t>(model_->config().vocab);
  const std::vector<float> whole = Logits(**p, 1, kPrompt, 0);  // every row
  ASSERT_EQ(whole.size(), kPrompt.size() * vocab);
  // A longer sequence: 9 tokens of the prompt, then 300 others, kept.
  std::vector<int32_t> longer(kPrompt.begin(), kPrompt.begin() + 9);
  for (int i = 0; i < 300; ++i) longer.push_back(100 + i * 7);
  Logits(**p, 2, longer, 0);
  // Copy cut to 9 (rows 9.. of sequence 2 are other tokens'), then the rest.
  // The copy holds what a sequence of 9 positions holds (as rank 0's
  // accounting says), not the 309 of the original.
  const uint64_t before = (*p)->stage().kv_bytes();
  ASSERT_TRUE((*p)->Reuse(3, 2, 9, /*copy=*/true).ok());
  const PrefixCacheOptions accounting = PrefixCacheOptionsFor(model_->config(), TensorType::kF32, 1024, 2, 0);
  EXPECT_EQ((*p)->stage().kv_bytes() - before, accounting.bytes_of(9));
  EXPECT_GT(accounting.bytes_of(309), accounting.bytes_of(9));
  std::vector<float> rest = Logits(**p, 3, kPrompt, 9);
  EXPECT_TRUE(SameBits(rest, whole.data() + 9 * vocab, (kPrompt.size() - 9) * vocab));
  ASSERT_TRUE((*p)->Free(3).ok());
  // Move cut to 4: sequence 2 is gone.
  ASSERT_TRUE((*p)->Reuse(4, 2, 4, /*copy=*/false).ok());
  rest = Logits(**p, 4, kPrompt, 4);
  EXPECT_TRUE(SameBits(rest, whole.data() + 4 * vocab, (kPrompt.size() - 4) * vocab));
  EXPECT_FALSE((*p)->Reuse(5, 2, 1, false).ok());  // no sequence 2 any more
  // Refusals name the problem and change nothing.
  Status st = (*p)->Reuse(4, 1, 3, true);
  EXPECT_NE(st.message().find("is alive"), std::string::npos) << st.message();
  st = (*p)->Reuse(6, 1, 15, true);
  EXPECT_NE(st.message().find("cannot keep 15 of its 14"), std::string::npos) << st.message();
  st = (*p)->Reuse(6, 1, -1, true);  // as a peer's message could say
  EXPECT_NE(st.message().find("cannot keep -1 of its 14"), std::string::npos) << st.message();
  st = (*p)->Reuse(6, 1, 3, true);  // sequences 1 and 4 and now 6: the room for 3
  EXPECT_TRUE(st.ok()) << st.message();
  st = (*p)->Reuse(7, 1, 3, true);
  EXPECT_NE(st.message().find("too many live sequences"), std::string::npos) << st.message();
}

// A freed sequence's state serves the next new one (no page faults on the
// critical path) when it is at most twice what that one needs, and leaves no
// trace in its results.
TEST_F(PrefixReuseTest, AFreedSequencesMemoryServesTheNextOneAndLeavesNoTrace) {
  ThreadPool pool(2);
  StageOptions so;
  so.n_ctx = 1024;
  so.max_sequences = 2;
  auto fresh = LocalPipeline::Create(*model_, so, &pool);
  auto p = LocalPipeline::Create(*model_, so, &pool);
  ASSERT_TRUE(fresh.ok() && p.ok());
  const std::vector<float> whole = Logits(**fresh, 1, kPrompt, 0);
  const PrefixCacheOptions accounting = PrefixCacheOptionsFor(model_->config(), TensorType::kF32, 1024, 2, 0);
  auto other_tokens = [](int n) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(100 + i * 7);
    return t;
  };
  Logits(**p, 1, other_tokens(40), 0);
  ASSERT_TRUE((*p)->Free(1).ok());
  EXPECT_EQ((*p)->stage().kv_bytes(), 0u);
  // 14 positions take the 40-position state (64 rows: twice their 32).
  std::vector<float> got = Logits(**p, 2, kPrompt, 0);
  EXPECT_EQ((*p)->stage().kv_bytes(), accounting.bytes_of(40));
  EXPECT_GT(accounting.bytes_of(40), accounting.bytes_of(14));
  EXPECT_TRUE(SameBits(got, whole.data(), whole.size()));
  ASSERT_TRUE((*p)->Free(2).ok());
  // A 300-position state is more than twice what 14 need: not taken.
  Logits(**p, 3, other_tokens(300), 0);
  ASSERT_TRUE((*p)->Free(3).ok());
  got = Logits(**p, 4, kPrompt, 0);
  EXPECT_EQ((*p)->stage().kv_bytes(), accounting.bytes_of(14));
  EXPECT_TRUE(SameBits(got, whole.data(), whole.size()));
}

// A multi-turn chat through the serving loop: each turn's prompt is the
// previous prompt, its answer and a new message; with the cache each turn
// reuses the last one's state. Every answer equals the same request on a
// fresh pipeline (no cache), greedy and seeded.
TEST_F(PrefixReuseTest, ChatTurnsFromTheCacheEqualFreshAnswers) {
  ThreadPool pool(2);
  const int64_t n_ctx = 256;
  auto fresh = LocalPipeline::Create(*model_, n_ctx, &pool);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE("temperature " + std::to_string(temperature));
    StageOptions so;
    so.n_ctx = n_ctx;
    so.max_sequences = 1;
    so.cached_sequences = 2;
    auto cached = LocalPipeline::Create(*model_, so, &pool);
    ASSERT_TRUE(cached.ok()) << cached.status().ToString();
    ServingOptions opts;
    opts.scheduler.n_ctx = n_ctx;
    opts.parallel = 1;
    opts.prefix_cache = PrefixCacheOptionsFor(model_->config(), TensorType::kF32, n_ctx, 2, 0);
    ServingLoop loop(**cached, opts);
    std::vector<int32_t> prompt(kPrompt.begin(), kPrompt.begin() + 6);
    int64_t prefilled = 0;
    for (int turn = 0; turn < 4; ++turn) {
      SequenceJob job;
      job.prompt = prompt;
      job.n_predict = 6;
      job.ignore_eos = true;
      job.sampling.temperature = temperature;
      job.sampling.seed = 11;
      std::vector<SequenceJob> alone{job};
      alone[0].seq_id = 1;
      ASSERT_TRUE(RunSequences(**fresh, alone, {.n_ctx = n_ctx, .eos_ids = {}}, nullptr).ok());
      auto req = loop.Submit(job);
      ASSERT_TRUE(req.ok()) << req.status().ToString();
      std::vector<int32_t> got;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!(*req)->Wait(&got, deadline) && std::chrono::steady_clock::now() < deadline) {
      }
      ASSERT_TRUE((*req)->error().ok()) << (*req)->error().ToString();
      EXPECT_EQ(got, alone[0].ids) << "turn " << turn;
      // The state holds the prompt and all but the last answer token.
      const int64_t cached_tokens = (*req)->job().cached_tokens;
      if (turn == 0) EXPECT_EQ(cached_tokens, 0);
      else EXPECT_EQ(cached_tokens, prefilled) << "turn " << turn;
      prompt.insert(prompt.end(), got.begin(), got.end());
      prefilled = static_cast<int64_t>(prompt.size()) - 1;
      prompt.insert(prompt.end(), kPrompt.begin() + 6 + turn, kPrompt.begin() + 8 + turn);
    }
    const PrefixCacheStats s = loop.cache_stats();
    EXPECT_EQ(s.lookups, 4u);
    EXPECT_EQ(s.hits, 3u);
    EXPECT_EQ(s.sequences, 1u);
    // cache_prompt false: no lookup, nothing kept.
    SequenceJob job;
    job.prompt = prompt;
    job.n_predict = 2;
    job.cache_prompt = false;
    auto req = loop.Submit(job);
    ASSERT_TRUE(req.ok());
    std::vector<int32_t> got;
    while (!(*req)->Wait(&got, std::chrono::steady_clock::now() + std::chrono::seconds(60))) {
    }
    EXPECT_EQ((*req)->job().cached_tokens, 0);
    EXPECT_EQ(loop.cache_stats().lookups, 4u);
    EXPECT_EQ(loop.cache_stats().sequences, 1u);
    EXPECT_TRUE(loop.Stop(std::chrono::milliseconds(0), "done").ok());
    EXPECT_EQ((*cached)->stage().sequences(), 1u);  // the kept one
  }
}

}  // namespace
}  // namespace strata
