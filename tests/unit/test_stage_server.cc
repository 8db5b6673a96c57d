// The pipeline's machinery without mpirun: the in-memory transport
// (worker/in_memory_transport.h), the wire codec (activation encodings,
// SequenceEntry <-> request and its validation), the stage server's message
// checks (StageRunner), the link probe and rule of --wire auto, and whole
// jobs of 2 and 3 ranks as threads: a split forward equals the unsplit one bit
// for bit, and malformed headers (the faults of worker/fault_injection.h) are
// reported by the receiving rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "coordinator/mpi_pipeline.h"
#include "coordinator/scheduler.h"
#include "coordinator/pipeline.h"
#include "kernels/fp16.h"
#include "model/model_files.h"
#include "worker/fault_injection.h"
#include "worker/in_memory_transport.h"
#include "worker/link_probe.h"
#include "worker/stage_server.h"
#include "worker/wire_codec.h"

namespace strata {
namespace {

const std::string kModel = std::string(STRATA_SOURCE_DIR) + "/models/smol-shakespeare-q4_k_m.gguf";

wire::Envelope ControlOf(wire::Control::Kind kind, uint64_t seq_id = 0) {
  wire::Envelope e;
  e.mutable_control()->set_kind(kind);
  e.mutable_control()->set_seq_id(seq_id);
  return e;
}

// ---------------------------------------------------------------------------
// The in-memory transport keeps MPI's guarantees
// ---------------------------------------------------------------------------

TEST(InMemoryTransport, KeepsOrderPerSenderAndFiltersBySource) {
  InMemoryNetwork net(3);
  auto t0 = net.Connect(0), t1 = net.Connect(1), t2 = net.Connect(2);
  ASSERT_TRUE(t1->Send(0, ControlOf(wire::Control::KIND_FREE, 10)).ok());
  ASSERT_TRUE(t2->Send(0, ControlOf(wire::Control::KIND_FREE, 20)).ok());
  ASSERT_TRUE(t1->Send(0, ControlOf(wire::Control::KIND_FREE, 11)).ok());
  auto from2 = t0->Receive(2, 1.0);  // skips rank 1's two messages
  ASSERT_TRUE(from2.ok()) << from2.status().ToString();
  EXPECT_EQ(from2->source, 2);
  EXPECT_EQ(from2->envelope.control().seq_id(), 20u);
  auto a = t0->Receive(-1, 1.0), b = t0->Receive(-1, 1.0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->envelope.control().seq_id(), 10u);  // rank 1's, in the order sent
  EXPECT_EQ(b->envelope.control().seq_id(), 11u);
  EXPECT_EQ(t0->rank(), 0);
  EXPECT_EQ(t0->size(), 3);
  EXPECT_EQ(t2->host(), "memory-2");
}

TEST(InMemoryTransport, PayloadTravelsWithItsHeaderAndMustMatchIt) {
  InMemoryNetwork net(2);
  auto t0 = net.Connect(0), t1 = net.Connect(1);
  wire::Envelope e;
  e.mutable_forward()->set_payload_bytes(3);
  const std::vector<uint8_t> bytes = {1, 2, 3};
  EXPECT_FALSE(t0->Send(1, e, std::span<const uint8_t>(bytes.data(), 2)).ok());  // 2 bytes, header says 3
  EXPECT_FALSE(t0->Send(2, e, bytes).ok());                                       // no rank 2
  ASSERT_TRUE(t0->Send(1, e, bytes).ok());
  auto m = t1->Receive(0, 1.0);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->payload, bytes);
}

TEST(InMemoryTransport, ReceiveTimesOutAndBarrierJoinsEveryRank) {
  InMemoryNetwork net(3);
  auto t0 = net.Connect(0);
  auto none = t0->Receive(-1, 0.05);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().kind(), ErrorKind::kDeadlineExceeded);
  // Two rounds of the barrier: each rank passes round k only when all arrived.
  std::atomic<int> passed{0};
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.emplace_back([&, r] {
      auto t = net.Connect(r);
      for (int round = 0; round < 2; ++round) {
        t->Barrier();
        ++passed;
        t->Barrier();
        EXPECT_EQ(passed.load(), 3 * (round + 1));
      }
    });
  for (auto& th : ranks) th.join();
  EXPECT_EQ(passed.load(), 6);
}

// ---------------------------------------------------------------------------
// Wire codec
// ---------------------------------------------------------------------------

std::vector<float> Activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

TEST(WireCodec, ParsesAndNamesTheDtypes) {
  for (const char* name : {"f32", "bf16", "f16", "q8_0"}) {
    auto d = ParseWireDType(name);
    ASSERT_TRUE(d.ok()) << name;
    EXPECT_STREQ(WireDTypeName(*d), name);
  }
  auto bad = ParseWireDType("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'int4'"), std::string::npos) << bad.status().message();
}

TEST(WireCodec, BytesPerDtypeAndShapeLimits) {
  EXPECT_EQ(*WireBytes(wire::DTYPE_F32, 3, 256), 3u * 256 * 4);
  EXPECT_EQ(*WireBytes(wire::DTYPE_BF16, 3, 256), 3u * 256 * 2);
  EXPECT_EQ(*WireBytes(wire::DTYPE_F16, 3, 256), 3u * 256 * 2);
  EXPECT_EQ(*WireBytes(wire::DTYPE_Q8_0, 3, 256), 3u * 8 * 34);  // 8 blocks of 32: f16 scale + 32 int8
  EXPECT_FALSE(WireBytes(wire::DTYPE_Q8_0, 1, 100).ok());          // not whole blocks
  EXPECT_FALSE(WireBytes(wire::DTYPE_F32, -1, 256).ok());
  EXPECT_FALSE(WireBytes(wire::DTYPE_F32, 1, 0).ok());
  EXPECT_FALSE(WireBytes(wire::DTYPE_F32, int64_t{1} << 25, 256).ok());
  EXPECT_FALSE(WireBytes(static_cast<wire::DType>(77), 1, 256).ok());
}

TEST(WireCodec, EncodingsRoundTripWithinTheirPrecision) {
  const int64_t rows = 5, hidden = 256;
  const std::vector<float> x = Activations(rows * hidden, 3);
  std::vector<float> y(x.size());
  // f32: exact.
  ASSERT_TRUE(DecodeActivations(wire::DTYPE_F32, EncodeActivations(wire::DTYPE_F32, x.data(), rows, hidden), rows, hidden, y.data()).ok());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);
  // bf16 / f16: each value rounded to nearest (ties to even) once.
  ASSERT_TRUE(DecodeActivations(wire::DTYPE_BF16, EncodeActivations(wire::DTYPE_BF16, x.data(), rows, hidden), rows, hidden, y.data()).ok());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(F32Bits(y[i]), F32Bits(Bf16ToF32(F32ToBf16(x[i])))) << i;
  ASSERT_TRUE(DecodeActivations(wire::DTYPE_F16, EncodeActivations(wire::DTYPE_F16, x.data(), rows, hidden), rows, hidden, y.data()).ok());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(F32Bits(y[i]), F32Bits(F16ToF32(F32ToF16(x[i])))) << i;
  // q8_0: within half a step (amax / 127 / 2) of each block's scale, plus the f16 scale's rounding.
  ASSERT_TRUE(DecodeActivations(wire::DTYPE_Q8_0, EncodeActivations(wire::DTYPE_Q8_0, x.data(), rows, hidden), rows, hidden, y.data()).ok());
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    for (size_t i = b; i < b + 32; ++i) ASSERT_LE(std::fabs(x[i] - y[i]), amax / 127.0f * 0.5f + amax * 1e-3f) << i;
  }
}

TEST(WireCodec, DecodeRefusesAPayloadOfTheWrongSize) {
  std::vector<float> y(2 * 256);
  const std::vector<uint8_t> short_payload(2 * 256 * 4 - 4);
  const Status st = DecodeActivations(wire::DTYPE_F32, short_payload, 2, 256, y.data());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.kind(), ErrorKind::kDataLoss);
  EXPECT_NE(st.message().find("2044 bytes, expected 2048"), std::string::npos) << st.message();
  EXPECT_FALSE(DecodeActivations(static_cast<wire::DType>(77), std::vector<uint8_t>(2048), 2, 256, y.data()).ok());
}

SequenceRequest SampleRequest() {
  SequenceRequest r;
  r.seq_id = 42;
  r.pos0 = 7;
  r.tokens = {5, 6, 7};
  r.output = SequenceRequest::Output::kSample;
  r.logits_from = 1;
  r.sampling.temperature = 0.7f;
  r.sampling.top_k = 12;
  r.sampling.top_p = 0.9f;
  r.sampling.min_p = 0.02f;
  r.sampling.repeat_penalty = 1.2f;
  r.sampling.repeat_last_n = 33;
  r.sampling.seed = 0xfeedfacecafebeefull;
  r.step = 9;
  r.recent = {1, 2, 3, 4};
  r.top_logprobs = 3;
  return r;
}

TEST(WireCodec, SequenceEntryRoundTrips) {
  const SequenceRequest r = SampleRequest();
  wire::SequenceEntry e;
  ToWire(r, &e);
  auto back = FromWire(e);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->seq_id, r.seq_id);
  EXPECT_EQ(back->pos0, r.pos0);
  EXPECT_EQ(back->tokens, r.tokens);
  EXPECT_EQ(back->output, r.output);
  EXPECT_EQ(back->logits_from, r.logits_from);
  EXPECT_EQ(back->sampling.temperature, r.sampling.temperature);
  EXPECT_EQ(back->sampling.top_k, r.sampling.top_k);
  EXPECT_EQ(back->sampling.top_p, r.sampling.top_p);
  EXPECT_EQ(back->sampling.min_p, r.sampling.min_p);
  EXPECT_EQ(back->sampling.repeat_penalty, r.sampling.repeat_penalty);
  EXPECT_EQ(back->sampling.repeat_last_n, r.sampling.repeat_last_n);
  EXPECT_EQ(back->sampling.seed, r.sampling.seed);
  EXPECT_EQ(back->step, r.step);
  EXPECT_EQ(back->recent, r.recent);
  EXPECT_EQ(back->top_logprobs, r.top_logprobs);
  // No logprobs asked: none asked on the other side either (proto3's 0 is a valid count).
  SequenceRequest plain = r;
  plain.top_logprobs = -1;
  wire::SequenceEntry pe;
  ToWire(plain, &pe);
  EXPECT_EQ(FromWire(pe)->top_logprobs, -1);
}

TEST(WireCodec, FromWireRefusesWhatAPeerMustNotSend) {
  struct Bad {
    const char* words;
    void (*spoil)(wire::SequenceEntry*);
  };
  const Bad cases[] = {
      {"n_tok 4 with 3 token ids", [](wire::SequenceEntry* e) { e->set_n_tok(4); }},
      {"n_tok 0 with 0 token ids", [](wire::SequenceEntry* e) { e->set_n_tok(0); e->clear_tokens(); }},
      {"negative position", [](wire::SequenceEntry* e) { e->set_pos0(-1); }},
      {"unknown output kind", [](wire::SequenceEntry* e) { e->set_output(static_cast<wire::SequenceEntry::Output>(9)); }},
      {"temperature", [](wire::SequenceEntry* e) { e->mutable_sampling()->set_temperature(std::nanf("")); }},
      {"top_p", [](wire::SequenceEntry* e) { e->mutable_sampling()->set_top_p(2.0f); }},
      {"top_logprobs 21", [](wire::SequenceEntry* e) { e->set_top_logprobs(21); }},
      {"top_logprobs -1", [](wire::SequenceEntry* e) { e->set_top_logprobs(-1); }},
  };
  for (const Bad& c : cases) {
    wire::SequenceEntry e;
    ToWire(SampleRequest(), &e);
    c.spoil(&e);
    auto r = FromWire(e);
    ASSERT_FALSE(r.ok()) << c.words;
    EXPECT_EQ(r.status().kind(), ErrorKind::kDataLoss) << c.words;
    EXPECT_NE(r.status().message().find("sequence 42"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(c.words), std::string::npos) << r.status().message();
  }
}

// ---------------------------------------------------------------------------
// The stage server's checks of what arrives (StageRunner on rank 1, the last
// stage, answering rank 0)
// ---------------------------------------------------------------------------

class StageRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = ModelFiles::Open(kModel);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(m).value();
    StageOptions so;
    so.layers = {0, model_->config().n_layers - 1};
    so.n_ctx = 64;
    so.max_sequences = 2;
    auto s = Stage::Load(*model_, so, &pool_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    stage_ = std::move(s).value();
    runner_ = std::make_unique<StageRunner>(*stage_, *t1_, -1, wire::DTYPE_F32);
  }

  wire::ForwardBatch Batch(uint64_t id, std::vector<int32_t> tokens, uint64_t seq = 1, int64_t pos0 = 0) {
    SequenceRequest r;
    r.seq_id = seq;
    r.pos0 = pos0;
    r.tokens = std::move(tokens);
    r.sampling.temperature = 0;
    wire::ForwardBatch b;
    b.set_batch_id(id);
    b.set_hidden(model_->config().hidden);
    ToWire(r, b.add_entries());
    return b;
  }

  InMemoryNetwork net_{2};
  std::unique_ptr<Transport> t0_ = net_.Connect(0), t1_ = net_.Connect(1);
  ThreadPool pool_{1};
  std::unique_ptr<ModelFiles> model_;
  std::unique_ptr<Stage> stage_;
  std::unique_ptr<StageRunner> runner_;
};

TEST_F(StageRunnerTest, AnswersAValidBatchWithItsResult) {
  ASSERT_TRUE(runner_->HandleForward(Batch(1, {650, 1131, 268}), {}).ok());
  auto m = t0_->Receive(1, 5.0);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(m->envelope.has_result());
  EXPECT_EQ(m->envelope.result().batch_id(), 1u);
  ASSERT_EQ(m->envelope.result().outputs_size(), 1);
  const int32_t token = m->envelope.result().outputs(0).token();
  EXPECT_GE(token, 0);
  EXPECT_LT(token, model_->config().vocab);
}

TEST_F(StageRunnerTest, RefusesBatchIdsThatDoNotIncrease) {
  ASSERT_TRUE(runner_->HandleForward(Batch(5, {650}), {}).ok());
  const Status st = runner_->HandleForward(Batch(5, {1131}, 1, 1), {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.kind(), ErrorKind::kDataLoss);
  EXPECT_NE(st.message().find("batch ids must increase"), std::string::npos) << st.message();
}

TEST_F(StageRunnerTest, RefusesEmptyBatchesBadEntriesAndWrongActivations) {
  wire::ForwardBatch empty;
  empty.set_batch_id(1);
  Status st = runner_->HandleForward(empty, {});
  EXPECT_NE(st.message().find("has no sequences"), std::string::npos) << st.message();

  wire::ForwardBatch bad = Batch(2, {650, 1131});
  bad.mutable_entries(0)->set_n_tok(3);
  st = runner_->HandleForward(bad, {});
  EXPECT_NE(st.message().find("n_tok 3 with 2 token ids"), std::string::npos) << st.message();

  const int64_t hidden = model_->config().hidden;
  std::vector<uint8_t> payload(2 * hidden * 4);
  wire::ForwardBatch wrong_hidden = Batch(3, {650, 1131});
  wrong_hidden.set_hidden(hidden - 1);
  wrong_hidden.set_payload_bytes(payload.size());
  st = runner_->HandleForward(wrong_hidden, payload);
  EXPECT_NE(st.message().find("hidden size " + std::to_string(hidden - 1)), std::string::npos) << st.message();

  wire::ForwardBatch short_payload = Batch(4, {650, 1131});
  short_payload.set_payload_bytes(payload.size() - 4);
  st = runner_->HandleForward(short_payload, std::vector<uint8_t>(payload.size() - 4));
  EXPECT_NE(st.message().find("activation payload"), std::string::npos) << st.message();
  EXPECT_EQ(st.kind(), ErrorKind::kDataLoss);
}

// ---------------------------------------------------------------------------
// Whole jobs: rank 0 runs MpiPipeline, ranks 1..N-1 RunWorker, as threads
// ---------------------------------------------------------------------------

class InProcessJob {
 public:
  // `fault` (optional) is injected around rank 0's transport.
  // `share` and `max_sequences`: --share-lm-head and --parallel.
  InProcessJob(int ranks, const std::string& split, bool coordinator_only, wire::DType wire,
               const FaultSpec* fault = nullptr, int cached_sequences = 0, bool wire_auto = false,
               const LmHeadShareSpec& share = {}, int max_sequences = 1)
      : net_(ranks), exit_codes_(ranks, -1) {
    for (int r = 1; r < ranks; ++r)
      workers_.emplace_back([this, r] {
        WorkerOptions wo;
        wo.model_path = kModel;
        wo.threads = 1;
        std::unique_ptr<Transport> t = net_.Connect(r);
        exit_codes_[r] = RunWorker(*t, wo);
      });
    t0_ = net_.Connect(0);
    if (fault != nullptr) t0_ = InjectFaults(std::move(t0_), *fault);
    auto m = ModelFiles::Open(kModel);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return;
    model_ = std::move(m).value();
    MpiPipelineOptions opts;
    opts.split = split;
    opts.n_ctx = 64;
    opts.wire_dtype = wire;
    opts.wire_auto = wire_auto;
    opts.coordinator_only = coordinator_only;
    opts.stage_timeout_s = 60;
    opts.cached_sequences = cached_sequences;
    opts.share_lm_head = share;
    opts.max_sequences = max_sequences;
    auto p = MpiPipeline::Start(*t0_, *model_, opts, &pool_);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) pipeline_ = std::move(p).value();
  }
  // Ends the job (shutdown with `error` when non-empty) and joins the workers.
  std::vector<int> End(const std::string& error = "") {
    if (pipeline_) pipeline_->Shutdown(error);
    else MpiPipeline::StopWorkers(*t0_, error.empty() ? "the test ended" : error);
    for (auto& w : workers_) w.join();
    workers_.clear();
    return exit_codes_;
  }
  ~InProcessJob() {
    if (!workers_.empty()) End("the test ended");
  }
  MpiPipeline* pipeline() { return pipeline_.get(); }
  const ModelFiles& model() const { return *model_; }

 private:
  InMemoryNetwork net_;
  std::vector<int> exit_codes_;
  std::vector<std::thread> workers_;
  std::unique_ptr<Transport> t0_;
  ThreadPool pool_{1};
  std::unique_ptr<ModelFiles> model_;
  std::unique_ptr<MpiPipeline> pipeline_;
};

const std::vector<int32_t> kPrompt = {650, 1131, 268, 1056, 30, 12, 2047, 333, 4100, 7};

// Logits of every prompt position, then two greedy decode steps.
Result<std::vector<float>> RunPrompt(Pipeline& p, std::vector<int32_t>* decoded) {
  SequenceRequest req;
  req.seq_id = 3;
  req.tokens = kPrompt;
  req.output = SequenceRequest::Output::kLogits;
  STRATA_ASSIGN_OR_RETURN(std::vector<SequenceResult> out, p.Forward({req}));
  std::vector<float> logits = std::move(out[0].logits);
  SequenceRequest step;
  step.seq_id = 3;
  step.pos0 = static_cast<int64_t>(kPrompt.size());
  step.tokens = {kPrompt.back()};
  step.sampling.temperature = 0;
  for (int k = 0; k < 2; ++k) {
    STRATA_ASSIGN_OR_RETURN(std::vector<SequenceResult> s, p.Forward({step}));
    decoded->push_back(s[0].token);
    step.tokens = {s[0].token};
    ++step.pos0;
  }
  STRATA_RETURN_IF_ERROR(p.Free(3));
  return logits;
}

struct SplitCase {
  int ranks;
  const char* split;
  bool coordinator_only;
};

TEST(InProcessPipeline, SplitForwardEqualsUnsplitBitForBit) {
  auto model = ModelFiles::Open(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ThreadPool pool(1);
  auto local = LocalPipeline::Create(**model, 64, &pool);
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  std::vector<int32_t> want_tokens;
  auto want = RunPrompt(**local, &want_tokens);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_EQ(want->size(), kPrompt.size() * static_cast<size_t>((*model)->config().vocab));

  for (const SplitCase& c : {SplitCase{2, "auto", false}, SplitCase{3, "0-4,5-19,20-35", false},
                             SplitCase{3, "0-17,18-35", true}}) {
    SCOPED_TRACE(std::to_string(c.ranks) + " ranks, split " + c.split + (c.coordinator_only ? ", coordinator-only" : ""));
    InProcessJob job(c.ranks, c.split, c.coordinator_only, wire::DTYPE_F32);
    ASSERT_NE(job.pipeline(), nullptr);
    EXPECT_EQ(job.pipeline()->n_stages(), c.coordinator_only ? c.ranks - 1 : c.ranks);
    std::vector<int32_t> tokens;
    auto got = RunPrompt(*job.pipeline(), &tokens);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), want->size());
    EXPECT_EQ(std::memcmp(got->data(), want->data(), want->size() * sizeof(float)), 0);
    EXPECT_EQ(tokens, want_tokens);
    const std::vector<StagePlacement> placement = job.pipeline()->Placement();
    ASSERT_EQ(static_cast<int>(placement.size()), job.pipeline()->n_stages());
    EXPECT_EQ(placement.front().layers.first, 0);
    EXPECT_EQ(placement.back().layers.last, (*model)->config().n_layers - 1);
    EXPECT_EQ(placement.back().host, "memory-" + std::to_string(placement.back().rank));
    const std::vector<int> codes = job.End();
    for (int r = 1; r < c.ranks; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
  }
}

// The prefix cache's reuse travels down the pipeline (wire::Control
// KIND_REUSE): a copy and a move of a kept state, cut back, then the rest of
// the prompt, give the whole prompt's logits bit for bit on every split; a
// reuse a stage refuses ends the job with its reason.
TEST(InProcessPipeline, ReusedStatesGiveTheWholePromptsBits) {
  auto model = ModelFiles::Open(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const size_t vocab = static_cast<size_t>((*model)->config().vocab);
  ThreadPool pool(1);
  auto local = LocalPipeline::Create(**model, 64, &pool);
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  std::vector<int32_t> unused;
  auto want = RunPrompt(**local, &unused);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  for (const SplitCase& c : {SplitCase{2, "auto", false}, SplitCase{3, "0-17,18-35", true}}) {
    SCOPED_TRACE(std::to_string(c.ranks) + " ranks, split " + c.split + (c.coordinator_only ? ", coordinator-only" : ""));
    InProcessJob job(c.ranks, c.split, c.coordinator_only, wire::DTYPE_F32, nullptr, /*cached_sequences=*/2);
    Pipeline* p = job.pipeline();
    ASSERT_NE(p, nullptr);
    // Sequence 1: the first 6 prompt tokens and 3 others, kept.
    SequenceRequest other;
    other.seq_id = 1;
    other.tokens.assign(kPrompt.begin(), kPrompt.begin() + 6);
    other.tokens.insert(other.tokens.end(), {5, 6, 7});
    other.output = SequenceRequest::Output::kNone;
    ASSERT_TRUE(p->Forward({other}).ok());
    for (bool copy : {true, false}) {
      const uint64_t seq = copy ? 2 : 3;
      const int64_t keep = copy ? 6 : 4;
      ASSERT_TRUE(p->Reuse(seq, 1, keep, copy).ok());
      SequenceRequest rest;
      rest.seq_id = seq;
      rest.pos0 = keep;
      rest.tokens.assign(kPrompt.begin() + keep, kPrompt.end());
      rest.output = SequenceRequest::Output::kLogits;
      auto out = p->Forward({rest});
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      const size_t n = (kPrompt.size() - keep) * vocab;
      ASSERT_EQ((*out)[0].logits.size(), n);
      EXPECT_EQ(std::memcmp((*out)[0].logits.data(), want->data() + keep * vocab, n * sizeof(float)), 0) << "copy " << copy;
      ASSERT_TRUE(p->Free(seq).ok());
    }
    // Sequence 1 was moved: a stage refuses, at once when it is rank 0's,
    // else the next batch ends the job with its reason.
    Status st = p->Reuse(4, 1, 2, false);
    if (st.ok()) {
      SequenceRequest after;
      after.seq_id = 4;
      after.pos0 = 2;
      after.tokens = {7};
      st = p->Forward({after}).status();
    }
    EXPECT_NE(st.message().find("reusing sequence 1 for 4: no such sequence here"), std::string::npos) << st.message();
    job.End(st.message());
  }
}

TEST(InProcessPipeline, SmallerWiresStayCloseToF32) {
  InProcessJob f32(2, "auto", false, wire::DTYPE_F32);
  ASSERT_NE(f32.pipeline(), nullptr);
  std::vector<int32_t> unused;
  auto want = RunPrompt(*f32.pipeline(), &unused);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  f32.End();
  for (wire::DType d : {wire::DTYPE_BF16, wire::DTYPE_F16, wire::DTYPE_Q8_0}) {
    SCOPED_TRACE(WireDTypeName(d));
    InProcessJob job(2, "auto", false, d);
    ASSERT_NE(job.pipeline(), nullptr);
    auto got = RunPrompt(*job.pipeline(), &unused);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    double err = 0, ref = 0;
    for (size_t i = 0; i < want->size(); ++i) {
      err += ((*got)[i] - (*want)[i]) * static_cast<double>((*got)[i] - (*want)[i]);
      ref += (*want)[i] * static_cast<double>((*want)[i]);
    }
    EXPECT_GT(err, 0.0) << "a rounding wire changed nothing: was it used?";
    // One rounding of the activations at one stage boundary: ~0.3% for each
    // (measured), bounded here with room.
    EXPECT_LT(std::sqrt(err / ref), 0.02) << "relative L2 error of the logits";
  }
}

// ---------------------------------------------------------------------------
// --wire auto: the link probe and the rule
// ---------------------------------------------------------------------------

// The figures of docs/cluster.md: a 4-token decode micro-batch of hidden 2048
// (32 KiB in f32) against a 73 ms stage step.
TEST(WireAuto, KeepsF32WhereTheLinkKeepsUpAndQ8Elsewhere) {
  const double step_s = 0.073;
  const LinkMeasure gbit{.latency_s = 1e-4, .bytes_per_s = 119e6};
  const LinkMeasure mbit100{.latency_s = 1e-4, .bytes_per_s = 11.9e6};
  WireChoice fast = ChooseWire(gbit, 4, 2048, step_s);
  EXPECT_EQ(fast.dtype, wire::DTYPE_F32);
  EXPECT_NEAR(fast.f32_bytes_s, 32768 / 119e6, 1e-9);
  EXPECT_NEAR(fast.share, fast.f32_bytes_s / step_s, 1e-12);
  WireChoice slow = ChooseWire(mbit100, 4, 2048, step_s);
  EXPECT_EQ(slow.dtype, wire::DTYPE_Q8_0);
  EXPECT_GT(slow.share, kWireShareOfStep);
  // q8_0 needs blocks of 32 values.
  EXPECT_EQ(ChooseWire(mbit100, 4, 2040, step_s).dtype, wire::DTYPE_BF16);
  // Latency alone never chooses: every type pays it; bytes that take less
  // than it are not worth rounding.
  EXPECT_EQ(ChooseWire({.latency_s = 0.05, .bytes_per_s = 119e6}, 4, 2048, step_s).dtype, wire::DTYPE_F32);
  EXPECT_EQ(ChooseWire({.latency_s = 0.004, .bytes_per_s = 11.9e6}, 4, 2048, step_s).dtype, wire::DTYPE_F32);
  // A short step (a small model) over a fast link: 1 KiB is 2.5 us at 400 MB/s,
  // 1 % of a 0.23 ms step but a tenth of the link's latency.
  EXPECT_EQ(ChooseWire({.latency_s = 30e-6, .bytes_per_s = 400e6}, 1, 256, 0.00023).dtype, wire::DTYPE_F32);
  // Nothing measured: f32.
  EXPECT_EQ(ChooseWire({}, 4, 2048, step_s).dtype, wire::DTYPE_F32);
  EXPECT_EQ(ChooseWire(mbit100, 4, 2048, 0).dtype, wire::DTYPE_F32);
  const std::string line = DescribeWireChoice("rank 0 (h1)", "rank 1 (h2)", mbit100, 4, step_s, slow);
  EXPECT_NE(line.find("rank 0 (h1) -> rank 1 (h2): 11.9 MB/s"), std::string::npos) << line;
  EXPECT_NE(line.find(": q8_0"), std::string::npos) << line;
}

TEST(WireAuto, MeasuresALinkAndFailsOnASilentPeer) {
  InMemoryNetwork net(2);
  auto t0 = net.Connect(0);
  std::thread peer([&] {
    auto t1 = net.Connect(1);
    for (;;) {
      auto m = t1->Receive(0, 10);
      if (!m.ok() || !m->envelope.has_probe_data()) return;
      if (!m->payload.empty()) {
        EXPECT_EQ(m->payload.size(), m->envelope.probe_data().payload_bytes());
      }
      ASSERT_TRUE(AnswerProbe(*t1, *m).ok());
    }
  });
  auto link = MeasureLink(*t0, 1, 10);
  (void)t0->Send(1, ControlOf(wire::Control::KIND_SHUTDOWN));
  peer.join();
  ASSERT_TRUE(link.ok()) << link.status().ToString();
  EXPECT_GE(link->latency_s, 0.0);
  EXPECT_GT(link->bytes_per_s, 1e6) << "memory moves more than a megabyte a second";

  // Rank 1 never answers.
  const auto start = std::chrono::steady_clock::now();
  auto silent = MeasureLink(*t0, 1, 0.2);
  ASSERT_FALSE(silent.ok());
  EXPECT_EQ(silent.status().kind(), ErrorKind::kDeadlineExceeded);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

// --share-lm-head auto with sequences enough to fill 2 and 3 stages: the last
// stage hands rank 0 what it has not reached whenever a message waits for it,
// so every batch may split the vocabulary elsewhere; each sequence's tokens,
// greedy or sampled (top-k, top-p, penalty, seed), are those of one process.
TEST(InProcessPipeline, TheSharedLmHeadKeepsEverySequencesTokens) {
  auto model = ModelFiles::Open(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto jobs = [] {
    std::vector<SequenceJob> j(6);
    for (size_t i = 0; i < j.size(); ++i) {
      j[i].seq_id = i + 1;
      j[i].prompt.assign(kPrompt.begin(), kPrompt.begin() + 3 + static_cast<std::ptrdiff_t>(i));
      j[i].n_predict = 12;
      j[i].ignore_eos = true;
      if (i % 2) {
        j[i].sampling.temperature = 0.8f;
        j[i].sampling.top_k = 20;
        j[i].sampling.top_p = 0.9f;
        j[i].sampling.repeat_penalty = 1.3f;
        j[i].sampling.seed = 40 + i;
      } else {
        j[i].sampling.temperature = 0;
      }
    }
    return j;
  };
  ThreadPool pool(1);
  auto local = LocalPipeline::Create(**model, 64, &pool, 6);
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  std::vector<SequenceJob> want = jobs();
  const Status one = RunSequences(**local, want, {.n_ctx = 64, .eos_ids = {}}, nullptr);
  ASSERT_TRUE(one.ok()) << one.ToString();
  auto share = ParseLmHeadShare("auto");
  ASSERT_TRUE(share.ok());
  for (int ranks : {2, 3}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    InProcessJob job(ranks, "auto", false, wire::DTYPE_F32, nullptr, 0, false, *share, 6);
    ASSERT_NE(job.pipeline(), nullptr);
    std::vector<SequenceJob> got = jobs();
    auto st = RunSequences(*job.pipeline(), got, {.n_ctx = 64, .eos_ids = {}}, nullptr);
    ASSERT_TRUE(st.ok()) << st.ToString();
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].ids, want[i].ids) << "sequence " << i;
    // Rank 0 computed a part of the half it holds, on average (where each
    // batch stopped depends on the threads' timing).
    const std::vector<StagePlacement> placement = job.pipeline()->Placement();
    const int64_t vocab = job.model().config().vocab;
    EXPECT_GE(placement.front().lm_head_rows, 0);
    EXPECT_LE(placement.front().lm_head_rows, LmHeadRows(vocab, share->max_fraction));
    EXPECT_EQ(placement.front().lm_head_rows + placement.back().lm_head_rows, vocab);
    const std::vector<int> codes = job.End();
    for (int r = 1; r < ranks; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
  }
}

// A whole job with --wire auto: every stage but the last is given a type from
// its link, the plan carries it, and the pipeline runs (in memory the links
// are fast: f32, bit for bit).
TEST(WireAuto, AJobProbesEveryLinkAndSendsWhatWasChosen) {
  InProcessJob f32(3, "auto", false, wire::DTYPE_F32);
  ASSERT_NE(f32.pipeline(), nullptr);
  std::vector<int32_t> want_tokens, got_tokens;
  auto want = RunPrompt(*f32.pipeline(), &want_tokens);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  f32.End();
  InProcessJob job(3, "auto", false, wire::DTYPE_F32, nullptr, 0, /*wire_auto=*/true);
  ASSERT_NE(job.pipeline(), nullptr);
  const std::vector<StagePlacement> placement = job.pipeline()->Placement();
  ASSERT_EQ(placement.size(), 3u);
  EXPECT_EQ(placement[0].sends, "f32");
  EXPECT_EQ(placement[1].sends, "f32");
  EXPECT_EQ(placement[2].sends, "");
  auto got = RunPrompt(*job.pipeline(), &got_tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), want->size());
  EXPECT_EQ(std::memcmp(got->data(), want->data(), want->size() * sizeof(float)), 0);
  EXPECT_EQ(got_tokens, want_tokens);
  const std::vector<int> codes = job.End();
  for (int r = 1; r < 3; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

TEST(InProcessPipeline, MalformedHeadersAreReportedByTheReceivingRank) {
  struct Case {
    FaultSpec::Kind kind;
    const char* words;
  };
  for (const Case& c : {Case{FaultSpec::Kind::kCorruptHidden, "hidden size 255"}, Case{FaultSpec::Kind::kCorruptNTok, "n_tok"},
                        Case{FaultSpec::Kind::kCorruptPayload, "activation payload"},
                        Case{FaultSpec::Kind::kCorruptDType, "wire dtype"}}) {
    SCOPED_TRACE(c.words);
    FaultSpec fault;
    fault.kind = c.kind;
    fault.rank = 0;
    InProcessJob job(2, "auto", false, wire::DTYPE_F32, &fault);
    ASSERT_NE(job.pipeline(), nullptr);
    std::vector<int32_t> unused;
    auto r = RunPrompt(*job.pipeline(), &unused);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("rank 1 (memory-1)"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(c.words), std::string::npos) << r.status().message();
    const std::vector<int> codes = job.End(r.status().message());
    EXPECT_EQ(codes[1], 1);  // the worker ends with the job's error
  }
}

TEST(FaultInjection, ParsesSpecsAndRefusesOthers) {
  auto f = ParseFaultSpec("perturb-input@2");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, FaultSpec::Kind::kPerturbInput);
  EXPECT_EQ(f->rank, 2);
  EXPECT_TRUE(ParseFaultSpec("stop-after-header@1").ok());
  EXPECT_FALSE(ParseFaultSpec("corrupt-hidden").ok());
  EXPECT_FALSE(ParseFaultSpec("explode@1").ok());
  EXPECT_FALSE(ParseFaultSpec("corrupt-dtype@x").ok());
  EXPECT_FALSE(ParseFaultSpec("corrupt-dtype@").ok());
  EXPECT_EQ(FaultHook(*ParseFaultSpec("corrupt-hidden@0")), nullptr);
  EXPECT_NE(FaultHook(*ParseFaultSpec("stop-after-header@1")), nullptr);
}

}  // namespace
}  // namespace strata
