// The scheduler (coordinator/scheduler.h): micro-batch formation against a
// fake pipeline that checks every batch it is given, and bit-identical
// tokens for sequences run together (chunked prefill, several micro-batches
// in flight) versus each run alone, on the shared Q4_K_M model.
#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "coordinator/generate.h"
#include "model/tokenizer.h"

namespace strata {
namespace {

// A pipeline of `n_stages` that computes nothing: it checks that every
// sequence's positions continue its cache, and answers with token
// (seq_id * 1000 + position) so the test can check what came back where.
class FakePipeline : public Pipeline {
 public:
  explicit FakePipeline(int n_stages) : n_stages_(n_stages) { cfg_.vocab = 1 << 20; }
  const ModelConfig& config() const override { return cfg_; }
  Result<uint64_t> Submit(const std::vector<SequenceRequest>& batch) override {
    BatchOutput out;
    out.batch_id = next_id_++;
    for (const SequenceRequest& r : batch) {
      EXPECT_EQ(r.pos0, cached_[r.seq_id]) << "sequence " << r.seq_id;
      cached_[r.seq_id] = r.pos0 + static_cast<int64_t>(r.tokens.size());
      SequenceResult res;
      res.seq_id = r.seq_id;
      if (r.output == SequenceRequest::Output::kSample)
        res.token = static_cast<int32_t>(r.seq_id * 1000 + cached_[r.seq_id]);
      out.results.push_back(res);
    }
    batches_.push_back(batch);
    queue_.push_back(std::move(out));
    max_in_flight_ = std::max(max_in_flight_, static_cast<int>(queue_.size()));
    return queue_.back().batch_id;
  }
  Result<BatchOutput> Wait() override {
    if (queue_.empty()) return FailedPrecondition("nothing in flight");
    BatchOutput out = std::move(queue_.front());
    queue_.pop_front();
    return out;
  }
  int in_flight() const override { return static_cast<int>(queue_.size()); }
  Status Free(uint64_t seq_id) override {
    freed_.push_back(seq_id);
    return Status::Ok();
  }
  int n_stages() const override { return n_stages_; }
  Result<std::vector<StageStats>> Stats() override { return std::vector<StageStats>(n_stages_); }
  std::vector<StagePlacement> Placement() const override { return std::vector<StagePlacement>(n_stages_); }
  void EnableDump(const std::string&, LayerRange) override { ADD_FAILURE() << "the scheduler never dumps"; }

  int n_stages_;
  ModelConfig cfg_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, int64_t> cached_;
  std::deque<BatchOutput> queue_;
  std::vector<std::vector<SequenceRequest>> batches_;
  std::vector<uint64_t> freed_;
  int max_in_flight_ = 0;
};

std::vector<SequenceJob> Jobs(int n, int prompt_len, int n_predict) {
  std::vector<SequenceJob> jobs(n);
  for (int i = 0; i < n; ++i) {
    jobs[i].seq_id = 10 + i;
    jobs[i].prompt.assign(prompt_len + i, 7);
    jobs[i].n_predict = n_predict;
    jobs[i].sampling.temperature = 0;
  }
  return jobs;
}

TEST(SchedulerTest, ChunksPromptsAndKeepsInflightBatches) {
  FakePipeline p(3);
  std::vector<SequenceJob> jobs = Jobs(6, 40, 5);
  SchedulerOptions o;
  o.chunk = 16;
  o.inflight = 3;
  ASSERT_TRUE(RunSequences(p, jobs, o, nullptr).ok());
  EXPECT_EQ(p.max_in_flight_, 3);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const int64_t n = static_cast<int64_t>(jobs[i].prompt.size());
    // Token k is answered at position n + k.
    ASSERT_EQ(jobs[i].ids.size(), 5u);
    for (int k = 0; k < 5; ++k) EXPECT_EQ(jobs[i].ids[k], static_cast<int32_t>(jobs[i].seq_id * 1000 + n + k));
    EXPECT_EQ(jobs[i].finish_reason, "length");
  }
  EXPECT_EQ(p.freed_.size(), jobs.size());
  for (const auto& batch : p.batches_) {
    int64_t tokens = 0;
    bool decode = true;
    for (const auto& r : batch) {
      tokens += static_cast<int64_t>(r.tokens.size());
      decode = decode && r.tokens.size() == 1 && r.pos0 >= static_cast<int64_t>(jobs[r.seq_id - 10].prompt.size());
    }
    if (decode) EXPECT_LE(batch.size(), 2u);  // 6 sequences in 3 groups
    else EXPECT_LE(tokens, 16);
  }
}

// One long prompt's chunks do not wait for each other: two per stage are in
// flight (a stage runs ahead through the others' jitter), in 64-token chunks
// (16 per stage); decode keeps one micro-batch per stage.
TEST(SchedulerTest, APromptRunsTwoChunksPerStageAheadDecodeOne) {
  EXPECT_EQ(ChunkTokens(0, 256, 2), 16);
  EXPECT_EQ(ChunkTokens(0, 512, 2), 32);
  EXPECT_EQ(ChunkTokens(0, 1024, 2), 64);
  EXPECT_EQ(ChunkTokens(0, 2048, 2), 64);
  EXPECT_EQ(ChunkTokens(0, 4096, 2), 128);
  EXPECT_EQ(ChunkTokens(0, 1 << 20, 2), 512);
  EXPECT_EQ(ChunkTokens(0, 300, 1), 300);
  EXPECT_EQ(ChunkTokens(40, 2048, 2), 40);
  EXPECT_EQ(InflightBatches(0, 2, true), 4);
  EXPECT_EQ(InflightBatches(0, 2, false), 2);
  EXPECT_EQ(InflightBatches(0, 1, true), 1);
  EXPECT_EQ(InflightBatches(3, 2, true), 3);

  FakePipeline p(2);
  std::vector<SequenceJob> jobs = Jobs(1, 2048, 2);
  ASSERT_TRUE(RunSequences(p, jobs, {}, nullptr).ok());
  EXPECT_EQ(p.max_in_flight_, 4);
  ASSERT_EQ(p.batches_.size(), 32u + 1u);  // 32 chunks, then one decode step
  for (size_t b = 0; b < 32; ++b) EXPECT_EQ(p.batches_[b][0].tokens.size(), 64u) << "chunk " << b;
  EXPECT_EQ(jobs[0].ids.size(), 2u);

  // Eight decoding sequences: after their one-token prompts, never more
  // than one micro-batch per stage.
  FakePipeline d(2);
  std::vector<SequenceJob> many = Jobs(8, 1, 6);
  for (SequenceJob& j : many) j.prompt.resize(1);
  ASSERT_TRUE(RunSequences(d, many, {}, nullptr).ok());
  EXPECT_EQ(d.max_in_flight_, 2);
}

// Short prompts of many sequences (the first step of a decode batch) are
// shared among the free pipeline slots: two stages each get a batch at once
// instead of one batch of all eight and an idle stage.
TEST(SchedulerTest, ShortPromptsFillEveryFreeSlot) {
  FakePipeline p(2);
  std::vector<SequenceJob> jobs(8);
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].seq_id = 10 + i;
    jobs[i].prompt = {7};
    jobs[i].n_predict = 3;
    jobs[i].sampling.temperature = 0;
  }
  ASSERT_TRUE(RunSequences(p, jobs, {}, nullptr).ok());
  ASSERT_GE(p.batches_.size(), 2u);
  EXPECT_EQ(p.batches_[0].size(), 4u);
  EXPECT_EQ(p.batches_[1].size(), 4u);
  EXPECT_EQ(p.max_in_flight_, 2);
  for (const SequenceJob& j : jobs) EXPECT_EQ(j.ids.size(), 3u);
}

TEST(SchedulerTest, StopsAtEosAndAtTheContext) {
  FakePipeline p(1);
  std::vector<SequenceJob> jobs = Jobs(2, 10, 50);
  SchedulerOptions o;
  o.n_ctx = 14;
  // Job 0 (seq 10, a 10-token prompt) samples 10010 first, then 10011: make that an EOS id.
  o.eos_ids = {10011};
  ASSERT_TRUE(RunSequences(p, jobs, o, nullptr).ok());
  EXPECT_EQ(jobs[0].finish_reason, "stop");
  EXPECT_EQ(jobs[0].ids.size(), 2u);
  // Job 1: an 11-token prompt in a 14-position context leaves room for 3 more tokens.
  EXPECT_EQ(jobs[1].finish_reason, "length");
  EXPECT_EQ(jobs[1].ids.size(), 4u);
}

TEST(SchedulerTest, RejectsBadJobs) {
  FakePipeline p(1);
  std::vector<SequenceJob> jobs = Jobs(2, 4, 2);
  jobs[1].seq_id = jobs[0].seq_id;
  Status st = RunSequences(p, jobs, {}, nullptr);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("used twice"), std::string::npos) << st.message();
  jobs = Jobs(1, 4, 2);
  jobs[0].prompt.clear();
  EXPECT_FALSE(RunSequences(p, jobs, {}, nullptr).ok());
}

// On the real model: several sequences with different prompts, batched
// with chunked prefill and several micro-batches in flight, produce exactly
// the tokens each produces alone.
TEST(SchedulerTest, BatchedSequencesEqualTheirSoloRuns) {
  const std::string path = std::string(STRATA_SHARED_DIR) + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf";
  auto model = ModelFiles::Open(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto vocab = (*model)->LoadVocab();
  ASSERT_TRUE(vocab.ok());
  auto tok = Tokenizer::Create(std::move(vocab).value());
  ASSERT_TRUE(tok.ok());
  ThreadPool pool(2);
  auto pipeline = LocalPipeline::Create(**model, 512, &pool, /*max_sequences=*/4);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
  const char* prompts[] = {"ROMEO: But soft, what light", "KING HENRY: Once more unto the breach, dear friends, once more;",
                           "First Citizen:", "O, what a rogue and peasant slave am I! Is it not monstrous that this player here"};
  std::vector<SequenceJob> solo_jobs;
  for (int i = 0; i < 4; ++i) {
    SequenceJob j;
    j.seq_id = 1 + i;
    j.prompt = tok->Encode(prompts[i], tok->add_bos());
    j.n_predict = 12;
    j.ignore_eos = true;
    j.sampling.temperature = i % 2 ? 0.8f : 0.0f;  // greedy and seeded sampling
    j.sampling.seed = 42 + i;
    solo_jobs.push_back(j);
  }
  std::vector<std::vector<int32_t>> solo;
  for (const SequenceJob& j : solo_jobs) {
    std::vector<SequenceJob> one{j};
    SchedulerOptions o;
    o.chunk = 512;
    ASSERT_TRUE(RunSequences(**pipeline, one, o, nullptr).ok());
    solo.push_back(one[0].ids);
  }
  for (int64_t chunk : {3, 7, 0}) {
    for (int inflight : {1, 2, 4}) {
      SCOPED_TRACE("chunk " + std::to_string(chunk) + " inflight " + std::to_string(inflight));
      std::vector<SequenceJob> jobs = solo_jobs;
      SchedulerOptions o;
      o.chunk = chunk;
      o.inflight = inflight;
      ASSERT_TRUE(RunSequences(**pipeline, jobs, o, nullptr).ok());
      for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(jobs[i].ids, solo[i]) << "sequence " << i;
    }
  }
  EXPECT_EQ((*pipeline)->stage().kv_bytes(), 0u);  // every cache freed
}

}  // namespace
}  // namespace strata
