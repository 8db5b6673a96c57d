// The supervised server's pieces without mpirun (coordinator/supervisor.h,
// coordinator/job_link.h): hostfiles, which host a failure is blamed on, the
// exclusion window; the link's framing against a real ServeFront over TCP on
// 127.0.0.1; and the fact recovery rests on: a sequence's cache rebuilt by
// prefilling its prompt and generated ids, then sampled with the step offset,
// gives the tokens of the run that never stopped (greedy, seeded, repetition
// penalty), on the shared Q4_K_M model.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "coordinator/job_link.h"
#include "coordinator/serving.h"
#include "coordinator/supervisor.h"
#include "model/model_files.h"
#include "worker/wire_codec.h"

namespace strata {
namespace {

TEST(SupervisorHosts, ParsesHostfiles) {
  auto h = ParseHostfile("# the cluster\nnode-a slots=2\n\n  node-b   # one slot\nnode-c slots=3 max_slots=4\n", "h.txt");
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->size(), 3u);
  EXPECT_EQ((*h)[0].name, "node-a");
  EXPECT_EQ((*h)[0].slots, 2);
  EXPECT_EQ((*h)[1].slots, 1);
  EXPECT_EQ((*h)[2].slots, 3);
  EXPECT_EQ(HostfileText(*h), "node-a slots=2\nnode-b slots=1\nnode-c slots=3\n");
  // Ranks fill each host's slots in order.
  EXPECT_EQ(HostOfRank(*h, 0), 0u);
  EXPECT_EQ(HostOfRank(*h, 1), 0u);
  EXPECT_EQ(HostOfRank(*h, 2), 1u);
  EXPECT_EQ(HostOfRank(*h, 5), 2u);
  EXPECT_EQ(HostOfRank(*h, 99), 2u);

  auto twice = ParseHostfile("a\nb\na slots=2\n", "h.txt");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().message(), "hostfile 'h.txt' line 3: host 'a' is listed twice");
  auto slots = ParseHostfile("a slots=0\n", "h.txt");
  ASSERT_FALSE(slots.ok());
  EXPECT_NE(slots.status().message().find("line 1: slots must be"), std::string::npos);
  EXPECT_FALSE(ParseHostfile("a slots=x\n", "h.txt").ok());
  EXPECT_FALSE(ParseHostfile("a cores=2\n", "h.txt").ok());
  auto none = ParseHostfile("# nothing\n\n", "h.txt");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(), "hostfile 'h.txt' names no host");
}

TEST(SupervisorHosts, BlamesTheRankAFailureNames) {
  // Rank 0's stage deadline (coordinator/mpi_pipeline.cc) names the stopped stage.
  EXPECT_EQ(BlamedRank("no result for batch 7 after 3 s; not answering: stage 1 on rank 1 (node-b) (layers 15-29) "
                       "(stopped, or its link is down)", {}),
            1);
  // mpirun names a rank that died.
  EXPECT_EQ(BlamedRank("the link closed", {"[rank 0 node-a] loaded", "mpirun noticed that process rank 3 with PID 4242 on "
                                                                     "node node-c exited on signal 9 (Killed)."}),
            3);
  EXPECT_EQ(BlamedRank("the link closed", {"nothing here"}), -1);

  const std::vector<HostEntry> hosts = {{"node-a", 2}, {"node-b", 1}, {"node-c", 1}};
  // ssh could not reach a host at the launch: that host, whatever rank 0 says.
  EXPECT_EQ(BlamedHost("the job exited (status 255) before it was ready",
                       {"ssh: Could not resolve hostname node-c: Name or service not known", "ORTE was unable to ..."}, hosts),
            2u);
  EXPECT_EQ(BlamedHost("x", {"ssh: connect to host node-b port 22: No route to host"}, hosts), 1u);
  EXPECT_EQ(BlamedHost("x", {"ssh: Could not resolve hostname elsewhere: Name or service not known"}, hosts), 0u);
  // The rank a failure names, on the host that holds it; else rank 0's host.
  EXPECT_EQ(BlamedHost("not answering: stage 2 on rank 2 (b) (layers 1-2)", {}, hosts), 1u);
  EXPECT_EQ(BlamedHost("the link closed", {}, hosts), 0u);
}

TEST(SupervisorHosts, ExcludesAHostAfterKFailuresInTheWindow) {
  HostHealth h(3, 60);
  EXPECT_FALSE(h.RecordFailure("a", 0));
  EXPECT_FALSE(h.RecordFailure("a", 30));
  EXPECT_FALSE(h.RecordFailure("b", 31));
  EXPECT_EQ(h.failures("a", 31), 2);
  // The first failure has left the window: two, not three.
  EXPECT_FALSE(h.RecordFailure("a", 61));
  EXPECT_FALSE(h.excluded("a"));
  EXPECT_TRUE(h.RecordFailure("a", 62));
  EXPECT_TRUE(h.excluded("a"));
  EXPECT_FALSE(h.excluded("b"));
  EXPECT_EQ(h.excluded_hosts(), std::vector<std::string>{"a"});
  EXPECT_FALSE(h.RecordFailure("a", 63));  // already out: reported once
  h.Forgive();
  EXPECT_FALSE(h.excluded("a"));
  EXPECT_EQ(h.failures("a", 63), 0);
}

TEST(JobLink, ParsesHostPort) {
  auto a = ParseHostPort("127.0.0.1:4000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 4000);
  EXPECT_FALSE(ParseHostPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseHostPort(":80").ok());
  EXPECT_FALSE(ParseHostPort("h:0").ok());
  EXPECT_FALSE(ParseHostPort("h:65536").ok());
  EXPECT_FALSE(ParseHostPort("h:8x").ok());
}

class SupervisorModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = ModelFiles::Open(std::string(STRATA_SHARED_DIR) + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf");
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(model).value().release();
  }
  static void TearDownTestSuite() { delete model_; }

  // `n` tokens after `prompt`, one decode step at a time, as the scheduler does.
  static std::vector<int32_t> Decode(Pipeline& p, uint64_t seq, const std::vector<int32_t>& prompt, int n,
                                     const SamplingParams& sp) {
    std::vector<int32_t> all = prompt, out;
    for (int k = 0; k < n; ++k) {
      SequenceRequest r;
      r.seq_id = seq;
      r.pos0 = k == 0 ? 0 : static_cast<int64_t>(all.size()) - 1;
      r.tokens = k == 0 ? prompt : std::vector<int32_t>{all.back()};
      r.sampling = sp;
      r.step = static_cast<uint64_t>(k);
      r.recent = all;
      auto res = p.Forward({r});
      EXPECT_TRUE(res.ok()) << res.status().message();
      if (!res.ok()) return out;
      out.push_back((*res)[0].token);
      all.push_back(out.back());
    }
    return out;
  }

  static ModelFiles* model_;
};
ModelFiles* SupervisorModelTest::model_ = nullptr;

TEST_F(SupervisorModelTest, PrefillOfGeneratedTokensResumesIdentically) {
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = {1, 52, 2803, 30, 198, 40, 481, 286, 23};
  SamplingParams greedy;
  greedy.temperature = 0;
  SamplingParams seeded;
  seeded.temperature = 0.9f;
  seeded.seed = 1234;
  seeded.repeat_penalty = 1.3f;
  seeded.repeat_last_n = 16;
  for (const SamplingParams& sp : {greedy, seeded}) {
    auto a = LocalPipeline::Create(*model_, 128, &pool);
    ASSERT_TRUE(a.ok());
    const std::vector<int32_t> whole = Decode(**a, 1, prompt, 12, sp);
    ASSERT_EQ(whole.size(), 12u);
    // A new pipeline (the relaunched job): the prompt and the first 5
    // generated ids prefilled in chunks of 4 with no output, then the
    // decode goes on from step 5.
    auto b = LocalPipeline::Create(*model_, 128, &pool);
    ASSERT_TRUE(b.ok());
    std::vector<int32_t> taken = prompt;
    taken.insert(taken.end(), whole.begin(), whole.begin() + 5);
    const std::vector<int32_t> cached(taken.begin(), taken.end() - 1);  // the last id goes in the next decode step
    for (size_t at = 0; at < cached.size(); at += 4) {
      SequenceRequest r;
      r.seq_id = 7;
      r.pos0 = static_cast<int64_t>(at);
      r.output = SequenceRequest::Output::kNone;
      r.tokens.assign(cached.begin() + at, cached.begin() + std::min(at + 4, cached.size()));
      ASSERT_TRUE((*b)->Forward({r}).ok());
    }
    std::vector<int32_t> all = taken, resumed(whole.begin(), whole.begin() + 5);
    for (int k = 5; k < 12; ++k) {
      SequenceRequest r;
      r.seq_id = 7;
      r.pos0 = static_cast<int64_t>(all.size()) - 1;
      r.tokens = {all.back()};
      r.sampling = sp;
      r.step = static_cast<uint64_t>(k);
      r.recent = all;
      auto res = (*b)->Forward({r});
      ASSERT_TRUE(res.ok()) << res.status().message();
      resumed.push_back((*res)[0].token);
      all.push_back(resumed.back());
    }
    EXPECT_EQ(resumed, whole) << "temperature " << sp.temperature;
  }
}

TEST_F(SupervisorModelTest, ServeFrontAnswersBatchesOverTcp) {
  ThreadPool pool(2);
  auto job = LocalPipeline::Create(*model_, 128, &pool);
  auto oracle = LocalPipeline::Create(*model_, 128, &pool);
  ASSERT_TRUE(job.ok() && oracle.ok());
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  Status served;
  std::thread t([&] { served = ServeFront(**job, "127.0.0.1:" + std::to_string(ntohs(a.sin_port)), 5, 128); });
  const int fd = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(fd, 0);
  FrameReader reader(fd);
  auto hello = reader.Read(30000);
  ASSERT_TRUE(hello.ok() && hello->has_value());
  EXPECT_EQ((**hello).hello().launch(), 5u);
  EXPECT_EQ((**hello).hello().n_stages(), 1);

  SequenceRequest r;
  r.seq_id = 3;
  r.tokens = {1, 52, 2803, 30};
  r.sampling.temperature = 0;
  wire::JobFrame f;
  f.mutable_request()->set_kind(wire::JobRequest::KIND_SUBMIT);
  f.mutable_request()->set_batch_id(41);
  ToWire(r, f.mutable_request()->add_entries());
  ASSERT_TRUE(WriteFrame(fd, f).ok());
  auto reply = reader.Read(30000);
  ASSERT_TRUE(reply.ok() && reply->has_value()) << reply.status().message();
  const wire::JobReply& rep = (**reply).reply();
  EXPECT_EQ(rep.batch_id(), 41u);
  EXPECT_EQ(rep.error(), "");
  ASSERT_EQ(rep.outputs_size(), 1);
  auto want = (*oracle)->Forward({r});
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(rep.outputs(0).token(), (*want)[0].token);

  // A position that does not follow the cache: the job reports the error and ends.
  r.pos0 = 50;
  wire::JobFrame bad;
  bad.mutable_request()->set_kind(wire::JobRequest::KIND_SUBMIT);
  bad.mutable_request()->set_batch_id(42);
  ToWire(r, bad.mutable_request()->add_entries());
  ASSERT_TRUE(WriteFrame(fd, bad).ok());
  auto err = reader.Read(30000);
  ASSERT_TRUE(err.ok() && err->has_value());
  EXPECT_NE((**err).reply().error(), "");
  t.join();
  EXPECT_FALSE(served.ok());
  ::close(fd);
  ::close(lfd);
}

// A pipeline that fails its next Wait when told to (the supervised front's,
// when no job can run), and otherwise runs every layer here.
class FailingPipeline : public Pipeline {
 public:
  explicit FailingPipeline(std::unique_ptr<LocalPipeline> p) : p_(std::move(p)) {}
  const ModelConfig& config() const override { return p_->config(); }
  Result<uint64_t> Submit(const std::vector<SequenceRequest>& b) override { return p_->Submit(b); }
  Result<BatchOutput> Wait() override {
    auto out = p_->Wait();
    if (fail_next.exchange(false)) {
      // The failed job's batches and caches are gone with it.
      while (p_->in_flight() > 0) (void)p_->Wait();
      for (uint64_t seq = 1; seq < 16; ++seq) (void)p_->Free(seq);
      return Unavailable("no job can run the model: test");
    }
    return out;
  }
  int in_flight() const override { return p_->in_flight(); }
  Status Free(uint64_t seq) override { return p_->Free(seq); }
  int n_stages() const override { return 1; }
  Result<std::vector<StageStats>> Stats() override { return p_->Stats(); }
  std::vector<StagePlacement> Placement() const override { return p_->Placement(); }
  void EnableDump(const std::string&, LayerRange) override {}
  std::atomic<bool> fail_next{false};

 private:
  std::unique_ptr<LocalPipeline> p_;
};

TEST_F(SupervisorModelTest, ServingLoopSurvivesAPipelineFailure) {
  ThreadPool pool(2);
  auto local = LocalPipeline::Create(*model_, 128, &pool, 2);
  ASSERT_TRUE(local.ok());
  FailingPipeline pipeline(std::move(*local));
  ServingOptions so;
  so.parallel = 2;
  so.scheduler.n_ctx = 128;
  so.survive_pipeline_failure = true;
  ServingLoop loop(pipeline, so);
  auto run = [&](int n) {
    SequenceJob job;
    job.prompt = {1, 52, 2803, 30};
    job.n_predict = n;
    job.ignore_eos = true;
    job.sampling.temperature = 0;
    auto req = loop.Submit(std::move(job));
    EXPECT_TRUE(req.ok());
    std::vector<int32_t> ids;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!(*req)->Wait(&ids, until) && std::chrono::steady_clock::now() < until) {
    }
    return std::make_pair((*req)->error(), ids);
  };
  const auto before = run(6);
  ASSERT_TRUE(before.first.ok()) << before.first.message();
  ASSERT_EQ(before.second.size(), 6u);
  // The failure ends the request running with the pipeline's error (503) ...
  pipeline.fail_next = true;
  const auto failed = run(6);
  EXPECT_EQ(failed.first.kind(), ErrorKind::kUnavailable);
  EXPECT_NE(failed.first.message().find("no job can run the model"), std::string::npos) << failed.first.message();
  // ... and the loop goes on: the next request gets the same answer as before.
  EXPECT_TRUE(loop.failure().ok());
  const auto after = run(6);
  ASSERT_TRUE(after.first.ok()) << after.first.message();
  EXPECT_EQ(after.second, before.second);
}

}  // namespace
}  // namespace strata
