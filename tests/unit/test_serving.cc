// The server's pieces without sockets: OpenAI request parsing and its errors
// (coordinator/openai_api.h), the completion text (stop strings held back
// across tokens, end-of-sequence ids, reasoning split), and the serving loop
// (coordinator/serving.h) on the shared Q4_K_M model: requests from several
// threads equal their solo runs, the queue bound, cancellation, and Stop.
#include <gtest/gtest.h>

#include <thread>

#include "coordinator/openai_api.h"
#include "coordinator/serving.h"
#include "model/model_files.h"
#include "model/tokenizer.h"

namespace strata {
namespace {

const ApiLimits kLimits{{"smol", "/models/smol.gguf"}, 256, 4};

CompletionRequest ParseOk(const std::string& body, ApiKind kind = ApiKind::kCompletion) {
  auto r = ParseCompletionRequest(body, kind, kLimits);
  if (auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << ": " << e->message;
  return std::holds_alternative<CompletionRequest>(r) ? std::get<CompletionRequest>(r) : CompletionRequest{};
}

ApiError ParseError(const std::string& body, ApiKind kind = ApiKind::kCompletion) {
  auto r = ParseCompletionRequest(body, kind, kLimits);
  EXPECT_TRUE(std::holds_alternative<ApiError>(r)) << body << " was accepted";
  return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
}

TEST(OpenAiApiTest, ParsesEveryField) {
  CompletionRequest r = ParseOk(
      R"({"model": "smol", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
          "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 7, "min_p": 0.1, "seed": -3,
          "stop": ["\n\n", "END"], "stream": true, "stream_options": {"include_usage": true},
          "chat_template_kwargs": {"enable_thinking": false}, "user": "ignored", "presence_penalty": 0})",
      ApiKind::kChat);
  EXPECT_EQ(r.conversation.messages.size(), 2u);
  EXPECT_EQ(r.conversation.messages[1]["content"], "Hi there");  // text parts joined
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.sampling.seed, static_cast<uint64_t>(int64_t{-3}));
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.enable_thinking, false);

  EXPECT_EQ(ParseOk(R"({"prompt": "abc", "model": "/models/smol.gguf"})").prompt, "abc");
  EXPECT_EQ(ParseOk(R"({"prompt": ["abc"]})").prompt, "abc");
  EXPECT_EQ(ParseOk(R"({"prompt": [1, 2, 3]})").prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ParseOk(R"({"prompt": [[4, 5]]})").prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "stop": "x"})").stop, std::vector<std::string>{"x"});
  // max_completion_tokens is the newer name of max_tokens; nulls mean absent.
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "max_completion_tokens": 9, "temperature": null})").max_tokens, 9);
  EXPECT_FALSE(ParseOk(R"({"prompt": "a"})").max_tokens.has_value());
}

TEST(OpenAiApiTest, UnseededRequestsDrawDifferentSeeds) {
  CompletionRequest a = ParseOk(R"({"prompt": "a"})"), b = ParseOk(R"({"prompt": "a"})");
  EXPECT_FALSE(a.seeded);
  EXPECT_NE(a.sampling.seed, b.sampling.seed);
}

TEST(OpenAiApiTest, ErrorsNameTheField) {
  struct Case {
    const char* body;
    ApiKind kind;
    int status;
    const char* param;
  } cases[] = {
      {R"({"messages": [)", ApiKind::kChat, 400, ""},
      {R"([1])", ApiKind::kChat, 400, ""},
      {R"({"a": 1, "a": 2, "messages": []})", ApiKind::kChat, 400, ""},  // duplicate key
      {R"({})", ApiKind::kChat, 400, "messages"},
      {R"({"messages": {}})", ApiKind::kChat, 400, "messages"},
      {R"({"messages": []})", ApiKind::kChat, 400, "messages"},
      {R"({"messages": [{"content": "x"}]})", ApiKind::kChat, 400, "messages"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", ApiKind::kChat, 400, "messages[0].content[0]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": 1})", ApiKind::kChat, 400, "chat_template_kwargs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"})", ApiKind::kChat, 404, "model"},
      {R"({})", ApiKind::kCompletion, 400, "prompt"},
      {R"({"prompt": ""})", ApiKind::kCompletion, 400, "prompt"},
      {R"({"prompt": ["a", "b"]})", ApiKind::kCompletion, 400, "prompt"},
      {R"({"prompt": [1, -2]})", ApiKind::kCompletion, 400, "prompt"},
      {R"({"prompt": 5})", ApiKind::kCompletion, 400, "prompt"},
      {R"({"prompt": "a", "model": 3})", ApiKind::kCompletion, 400, "model"},
      {R"({"prompt": "a", "max_tokens": 0})", ApiKind::kCompletion, 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 257})", ApiKind::kCompletion, 400, "max_tokens"},  // over the server's limit
      {R"({"prompt": "a", "max_tokens": "5"})", ApiKind::kCompletion, 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1e3})", ApiKind::kCompletion, 400, "max_tokens"},
      {R"({"prompt": "a", "temperature": -1})", ApiKind::kCompletion, 400, "temperature"},
      {R"({"prompt": "a", "temperature": "1"})", ApiKind::kCompletion, 400, "temperature"},
      {R"({"prompt": "a", "top_p": 0})", ApiKind::kCompletion, 400, "top_p"},
      {R"({"prompt": "a", "top_k": -1})", ApiKind::kCompletion, 400, "top_k"},
      {R"({"prompt": "a", "min_p": 2})", ApiKind::kCompletion, 400, "min_p"},
      {R"({"prompt": "a", "seed": 1.5})", ApiKind::kCompletion, 400, "seed"},
      {R"({"prompt": "a", "seed": 18446744073709551615})", ApiKind::kCompletion, 400, "seed"},
      {R"({"prompt": "a", "n": 3})", ApiKind::kCompletion, 400, "n"},
      {R"({"prompt": "a", "stream": 1})", ApiKind::kCompletion, 400, "stream"},
      {R"({"prompt": "a", "stream_options": {"include_usage": true}})", ApiKind::kCompletion, 400, "stream_options"},
      {R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})", ApiKind::kCompletion, 400, "stop"},
      {R"({"prompt": "a", "stop": [""]})", ApiKind::kCompletion, 400, "stop"},
      {R"({"prompt": "a", "stop": 7})", ApiKind::kCompletion, 400, "stop"},
      {R"({"prompt": "a", "presence_penalty": 0.5})", ApiKind::kCompletion, 400, "presence_penalty"},
      {R"({"prompt": "a", "logprobs": 2})", ApiKind::kCompletion, 400, "logprobs"},
  };
  for (const Case& c : cases) {
    ApiError e = ParseError(c.body, c.kind);
    EXPECT_EQ(e.status, c.status) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_FALSE(e.message.empty()) << c.body;
    const nlohmann::json j = ErrorJson(e);
    EXPECT_EQ(j["error"]["message"], e.message);
    EXPECT_TRUE(j["error"].contains("type") && j["error"].contains("code") && j["error"].contains("param"));
  }
  ApiError bad_utf8 = ParseError("{\"prompt\": \"\xff\"}");
  EXPECT_EQ(bad_utf8.status, 400);
  EXPECT_EQ(ParseError(R"({"messages": [{"role": "user", "content": "x"}], "model": "nope"})", ApiKind::kChat).code,
            "model_not_found");
}

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = ModelFiles::Open(std::string(STRATA_SHARED_DIR) + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf");
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(model).value().release();
    auto vocab = model_->LoadVocab();
    ASSERT_TRUE(vocab.ok());
    auto tok = Tokenizer::Create(std::move(vocab).value());
    ASSERT_TRUE(tok.ok());
    tokenizer_ = new Tokenizer(std::move(tok).value());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
  }
  std::vector<int32_t> Ids(const std::string& text) { return tokenizer_->Encode(text, tokenizer_->add_bos()); }
  std::string Text(const std::vector<int32_t>& ids) { return tokenizer_->Decode(ids); }

  static ModelFiles* model_;
  static Tokenizer* tokenizer_;
};
ModelFiles* ServingTest::model_ = nullptr;
Tokenizer* ServingTest::tokenizer_ = nullptr;

TEST_F(ServingTest, CompletionTextHoldsBackStopStringsAcrossTokens) {
  const std::string text = "But, madam, I'll tell thee, I'll tell you.";
  const std::vector<int32_t> ids = tokenizer_->Encode(text, false);
  ASSERT_GT(ids.size(), 5u);
  for (const std::string& stop : {std::string("madam"), std::string(", I'll"), std::string("l tell t"), std::string("you.")}) {
    CompletionText ct(*tokenizer_, {8190}, {"never there", stop}, false, false);
    std::string out;
    for (int32_t id : ids) {
      out += ct.Push(id).content;
      // Nothing that could begin the stop string has been let out.
      EXPECT_EQ(out.find(stop), std::string::npos);
      if (ct.stopped()) break;
    }
    out += ct.Finish().content;
    EXPECT_TRUE(ct.stopped()) << stop;
    EXPECT_EQ(out, text.substr(0, text.find(stop))) << stop;
  }
  // No stop string met: all of the text, the end-of-sequence id adds none.
  CompletionText ct(*tokenizer_, {8190}, {"zzz"}, false, false);
  std::string out;
  for (int32_t id : ids) out += ct.Push(id).content;
  out += ct.Push(8190).content;
  out += ct.Finish().content;
  EXPECT_EQ(out, text);
  EXPECT_FALSE(ct.stopped());
}

TEST_F(ServingTest, CompletionTextSplitsReasoning) {
  const std::vector<int32_t> ids = tokenizer_->Encode("<think>\nHe ponders.\n</think>\nI will.", false, true);
  CompletionText ct(*tokenizer_, {8190}, {}, /*split_thinking=*/true, /*opens_thinking=*/false);
  TextDelta all;
  for (int32_t id : ids) {
    TextDelta d = ct.Push(id);
    all.content += d.content;
    all.reasoning += d.reasoning;
  }
  TextDelta rest = ct.Finish();
  EXPECT_EQ(all.reasoning + rest.reasoning, "He ponders.");
  EXPECT_EQ(all.content + rest.content, "I will.");
}

// Runs a request through the loop; returns its ids.
std::vector<int32_t> Collect(ServingRequest& r) {
  std::vector<int32_t> ids;
  while (!r.Wait(&ids, std::chrono::steady_clock::now() + std::chrono::seconds(60))) {
  }
  return ids;
}

TEST_F(ServingTest, RequestsFromManyThreadsEqualTheirSoloRuns) {
  ThreadPool pool(2);
  auto pipeline = LocalPipeline::Create(*model_, 256, &pool, /*max_sequences=*/3);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
  const char* prompts[] = {"ROMEO:", "KING HENRY: Once more unto the breach,", "First Citizen: Before we proceed",
                           "JULIET: O Romeo, Romeo", "To be, or not", "MENENIUS: What work's, my countrymen,"};
  std::vector<SequenceJob> jobs;
  for (int i = 0; i < 6; ++i) {
    SequenceJob j;
    j.seq_id = 100 + i;
    j.prompt = Ids(prompts[i]);
    j.n_predict = 10 + i;
    j.ignore_eos = true;
    j.sampling.temperature = i % 2 ? 0.9f : 0.0f;
    j.sampling.seed = 5 + i;
    jobs.push_back(j);
  }
  std::vector<std::vector<int32_t>> solo;
  for (const SequenceJob& j : jobs) {
    std::vector<SequenceJob> one{j};
    ASSERT_TRUE(RunSequences(**pipeline, one, {.n_ctx = 256, .eos_ids = {}}, nullptr).ok());
    solo.push_back(one[0].ids);
  }
  ServingOptions so;
  so.scheduler.n_ctx = 256;
  so.parallel = 3;
  so.max_queue = 6;
  ServingLoop loop(**pipeline, so);
  std::vector<std::vector<int32_t>> got(jobs.size());
  std::vector<std::string> reasons(jobs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); ++i)
    threads.emplace_back([&, i] {
      auto r = loop.Submit(jobs[i]);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      got[i] = Collect(**r);
      EXPECT_TRUE((*r)->error().ok());
      reasons[i] = (*r)->job().finish_reason;
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(got[i], solo[i]) << "request " << i;
    EXPECT_EQ(reasons[i], "length");
  }
  EXPECT_TRUE(loop.Stop(std::chrono::milliseconds(0), "done").ok());
  EXPECT_EQ(loop.counts().finished, jobs.size());
  EXPECT_EQ((*pipeline)->stage().kv_bytes(), 0u);  // every cache freed
}

TEST_F(ServingTest, QueueBoundCancellationAndStop) {
  ThreadPool pool(1);
  auto pipeline = LocalPipeline::Create(*model_, 512, &pool, /*max_sequences=*/1);
  ASSERT_TRUE(pipeline.ok());
  ServingOptions so;
  so.scheduler.n_ctx = 512;
  so.parallel = 1;
  so.max_queue = 1;
  ServingLoop loop(**pipeline, so);
  SequenceJob long_job;
  long_job.prompt = Ids("ROMEO:");
  long_job.n_predict = 400;
  long_job.ignore_eos = true;
  long_job.sampling.temperature = 0;
  auto running = loop.Submit(long_job);
  ASSERT_TRUE(running.ok());
  // Wait until it runs, so the next one queues.
  std::vector<int32_t> ids;
  (*running)->Wait(&ids, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  ASSERT_FALSE(ids.empty());
  auto queued = loop.Submit(long_job);
  ASSERT_TRUE(queued.ok());
  auto refused = loop.Submit(long_job);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().kind(), ErrorKind::kUnavailable);
  EXPECT_NE(refused.status().message().find("waiting"), std::string::npos) << refused.status().message();
  // Bad jobs are refused before they queue.
  SequenceJob empty = long_job;
  empty.prompt.clear();
  EXPECT_EQ(loop.Submit(empty).status().kind(), ErrorKind::kInvalidArgument);
  SequenceJob too_long = long_job;
  too_long.prompt.assign(512, 1);
  EXPECT_EQ(loop.Submit(too_long).status().kind(), ErrorKind::kInvalidArgument);

  // Cancelling the queued one takes it out; cancelling the running one ends it.
  (*queued)->Cancel();
  (*running)->Cancel();
  Collect(**running);
  EXPECT_EQ((*running)->job().finish_reason, "cancelled");
  EXPECT_LT((*running)->job().ids.size(), 400u);
  Collect(**queued);
  EXPECT_EQ((*queued)->job().finish_reason, "cancelled");
  EXPECT_TRUE((*queued)->job().ids.empty());

  // Stop: a running request ends with Unavailable; new ones are refused.
  auto last = loop.Submit(long_job);
  ASSERT_TRUE(last.ok());
  ids.clear();
  (*last)->Wait(&ids, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  EXPECT_TRUE(loop.Stop(std::chrono::milliseconds(0), "shutting down").ok());
  Collect(**last);
  EXPECT_EQ((*last)->error().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(loop.Submit(long_job).status().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ((*pipeline)->stage().kv_bytes(), 0u);
}

}  // namespace
}  // namespace strata
