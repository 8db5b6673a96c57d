// The lm_head shared by rank 0 and the last stage (coordinator/lm_head_share.h):
// the two stages' parts give the whole lm_head's logits bit for bit, the last
// stage takes rows while nothing waits for it and the tokens stay those of
// the unshared lm_head, a transport tells whether a message waits, the flag
// and rank 0's row count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "common/thread_pool.h"
#include "coordinator/lm_head_share.h"
#include "model/model_files.h"
#include "worker/batch.h"
#include "worker/in_memory_transport.h"
#include "worker/stage.h"

namespace strata {
namespace {

const std::string kModel = std::string(STRATA_SOURCE_DIR) + "/models/smol-shakespeare-q4_k_m.gguf";

// A last stage (the last layer, the whole lm_head) and a first stage that
// also holds the last half of the lm_head's rows.
class SharedLmHeadStages : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = ModelFiles::Open(kModel);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(m).value();
    const ModelConfig& cfg = model_->config();
    StageOptions whole;
    whole.layers = {cfg.n_layers - 1, cfg.n_layers - 1};
    whole.first = false;
    whole.n_ctx = 16;
    auto last = Stage::Load(*model_, whole, &pool_);
    ASSERT_TRUE(last.ok()) << last.status().ToString();
    last_ = std::move(last).value();
    head_ = whole;
    head_.layers = {0, 0};
    head_.first = true;
    head_.last = false;
    head_.lm_head_tail_rows = LmHeadRows(cfg.vocab, 0.5);
    auto first = Stage::Load(*model_, head_, &pool_);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    first_ = std::move(first).value();
  }
  ThreadPool pool_{2};
  std::unique_ptr<ModelFiles> model_;
  std::unique_ptr<Stage> first_, last_;
  StageOptions head_;
};

// The last stage's rows [0, split) and the first stage's [split, vocab) give
// the whole lm_head's logits bit for bit (interleaved Q6_K rows here), at
// every split the first stage's share allows; anything else is refused.
TEST_F(SharedLmHeadStages, PartsGiveTheWholeLmHeadsLogitsBitForBit) {
  const ModelConfig& cfg = model_->config();
  ASSERT_EQ(head_.lm_head_tail_rows % 8, 0);
  EXPECT_GT(first_->weight_bytes(), 0u);

  const int64_t n = 3, vocab = cfg.vocab;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> normed(static_cast<size_t>(n * cfg.hidden));
  for (float& v : normed) v = dist(rng);
  std::vector<float> want(static_cast<size_t>(n * vocab));
  ASSERT_TRUE(last_->LmHead(normed.data(), n, 0, vocab, want.data()).ok());
  for (int64_t split : {vocab, vocab - 8, vocab - head_.lm_head_tail_rows / 16 * 8, vocab - head_.lm_head_tail_rows}) {
    SCOPED_TRACE("split " + std::to_string(split));
    std::vector<float> a(static_cast<size_t>(n * split)), b(static_cast<size_t>(n * (vocab - split)));
    ASSERT_TRUE(last_->LmHead(normed.data(), n, 0, split, a.data()).ok());
    ASSERT_TRUE(first_->LmHead(normed.data(), n, split, vocab, b.data()).ok());
    for (int64_t r = 0; r < n; ++r) {
      ASSERT_TRUE(std::equal(a.begin() + r * split, a.begin() + (r + 1) * split, want.begin() + r * vocab,
                             [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0; }));
      ASSERT_TRUE(std::equal(b.begin() + r * (vocab - split), b.begin() + (r + 1) * (vocab - split), want.begin() + r * vocab + split,
                             [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0; }));
    }
  }
  std::vector<float> out(static_cast<size_t>(n * vocab));
  const int64_t below = vocab - head_.lm_head_tail_rows - 8;
  EXPECT_EQ(first_->LmHead(normed.data(), n, below, vocab, out.data()).kind(), ErrorKind::kFailedPrecondition);
  EXPECT_EQ(last_->LmHead(normed.data(), n, 4, vocab, out.data()).kind(), ErrorKind::kInvalidArgument);
  EXPECT_EQ(last_->LmHead(normed.data(), n, 0, vocab + 8, out.data()).kind(), ErrorKind::kInvalidArgument);
  // Only a first stage holds a share, of at most the vocabulary, in groups of 8.
  StageOptions bad = head_;
  bad.first = false;
  EXPECT_FALSE(Stage::Load(*model_, bad, &pool_).ok());
  bad = head_;
  bad.lm_head_tail_rows = 12;
  EXPECT_FALSE(Stage::Load(*model_, bad, &pool_).ok());
  bad.lm_head_tail_rows = vocab + 8;
  EXPECT_FALSE(Stage::Load(*model_, bad, &pool_).ok());
}

TEST(SharedLmHead, ParsesItsFlag) {
  auto off = ParseLmHeadShare("off");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->on);
  auto adaptive = ParseLmHeadShare("auto");
  ASSERT_TRUE(adaptive.ok());
  EXPECT_TRUE(adaptive->on && adaptive->steal);
  EXPECT_LT(adaptive->fraction, adaptive->max_fraction);
  auto fixed = ParseLmHeadShare("0.3");
  ASSERT_TRUE(fixed.ok());
  EXPECT_TRUE(fixed->on && !fixed->steal);
  EXPECT_EQ(fixed->fraction, 0.3);
  EXPECT_EQ(fixed->max_fraction, 0.3);
  for (const char* bad : {"", "1.5", "-0.1", "half", "0.3x", "nan"}) {
    auto r = ParseLmHeadShare(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--share-lm-head"), std::string::npos);
  }
  EXPECT_EQ(LmHeadRows(128256, 0.25), 32064);
  EXPECT_EQ(LmHeadRows(128256, 1), 128256);
  EXPECT_EQ(LmHeadRows(100, 1), 96);  // groups of 8 within the vocabulary
  EXPECT_EQ(LmHeadRows(100, 0), 0);
}

// The last stage goes on past the split a group of LmHeadStealRows at a time
// for as long as go_on says, up to the whole vocabulary; wherever it stops,
// rank 0's part completes each sequence into the token FinishBatch gives
// (greedy, greedy with a repetition penalty, top-k sampling with bias).
TEST_F(SharedLmHeadStages, TheLastStageTakesRowsWhileNothingWaits) {
  const ModelConfig& cfg = model_->config();

  std::vector<SequenceRequest> batch(3);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].seq_id = i + 1;
    batch[i].tokens = {static_cast<int32_t>(100 + i)};
    batch[i].recent = {5, 17, 300};
  }
  batch[1].sampling.temperature = 0;
  batch[1].sampling.repeat_penalty = 1.5f;
  batch[2].sampling.temperature = 0.9f;
  batch[2].sampling.top_k = 20;
  batch[2].sampling.seed = 7;
  batch[2].sampling.logit_bias = {{static_cast<int32_t>(cfg.vocab - 3), 4.0f}};
  batch[0].sampling.temperature = 0;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(batch.size() * static_cast<size_t>(cfg.hidden));
  for (float& v : x) v = dist(rng);
  auto want = FinishBatch(*last_, batch, x.data());
  ASSERT_TRUE(want.ok()) << want.status().ToString();

  const int64_t vocab = cfg.vocab, least = vocab - head_.lm_head_tail_rows;
  const int64_t step = LmHeadStealRows(vocab, least);
  EXPECT_EQ(step % 8, 0);
  EXPECT_GE(step * 16, vocab - least - 16 * 8);
  for (int groups : {0, 1, 7, 1000}) {
    SCOPED_TRACE("groups " + std::to_string(groups));
    int calls = 0;
    const std::function<bool()> go_on = [&] { return calls++ < groups; };
    int64_t split = least;
    std::vector<float> normed;
    auto got = FinishBatchShared(*last_, batch, x.data(), &split, go_on, &normed);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(split, std::min(vocab, least + groups * step));
    for (size_t i = 0; i < batch.size(); ++i)
      EXPECT_LE(static_cast<int32_t>((*got)[i].candidates.size()), CandidatesNeeded(batch[i].sampling, static_cast<int32_t>(vocab)));
    ASSERT_TRUE(CompleteSharedBatch(*first_, batch, normed.data(), split, &*got).ok());
    for (size_t i = 0; i < batch.size(); ++i) EXPECT_EQ((*got)[i].token, (*want)[i].token) << "sequence " << i;
  }
  // Without go_on it computes the rows it was given, no more.
  int64_t split = least;
  std::vector<float> normed;
  ASSERT_TRUE(FinishBatchShared(*last_, batch, x.data(), &split, nullptr, &normed).ok());
  EXPECT_EQ(split, least);
}

// What the last stage looks at between two groups: whether a message waits,
// from a given rank or any, without taking it.
TEST(SharedLmHead, ATransportTellsWhetherAMessageWaits) {
  InMemoryNetwork net(3);
  std::unique_ptr<Transport> a = net.Connect(0), b = net.Connect(1), c = net.Connect(2);
  EXPECT_FALSE(c->MessageWaiting(-1));
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_STATS);
  ASSERT_TRUE(b->Send(2, e).ok());
  EXPECT_TRUE(c->MessageWaiting(-1));
  EXPECT_TRUE(c->MessageWaiting(1));
  EXPECT_FALSE(c->MessageWaiting(0));
  EXPECT_TRUE(c->MessageWaiting(1));  // looking does not take it
  ASSERT_TRUE(c->Receive(1, 5).ok());
  EXPECT_FALSE(c->MessageWaiting(-1));
  EXPECT_FALSE(a->MessageWaiting(-1));
}

// Rank 0's share: what it holds, and the rows it computed on average.
TEST(SharedLmHead, CountsTheRowsRankZeroComputed) {
  LmHeadShare share(128000, 64000, true);
  EXPECT_EQ(share.split(), 64000);
  EXPECT_EQ(share.mean_rows(), 64000);  // before any batch: all it holds
  share.Record(0);
  share.Record(64000);
  share.Record(8000);
  EXPECT_EQ(share.mean_rows(), 24000);
  LmHeadShare fixed(128000, 32000, false);
  EXPECT_FALSE(fixed.steal());
  EXPECT_EQ(fixed.split(), 96000);
}

}  // namespace
}  // namespace strata
