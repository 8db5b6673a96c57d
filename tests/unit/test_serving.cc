// The server's pieces without sockets: OpenAI request parsing and its errors
// (coordinator/openai_api.h: every field OpenAI defines checked, honoured or
// refused), the completion text (stop strings held back across tokens,
// end-of-sequence ids, reasoning split), and the serving loop
// (coordinator/serving.h) on the shared Q4_K_M model: requests from several
// threads equal their solo runs, the exact admission bound under a burst,
// the queue bound, cancellation, notifications, and Stop. Every wait is
// bounded: a request that does not end fails the test instead of hanging it.
#include <gtest/gtest.h>

#include <barrier>
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
          "chat_template_kwargs": {"enable_thinking": false}, "user": "ignored", "presence_penalty": 0,
          "logit_bias": {"5": -100, "17": 2.5}, "response_format": {"type": "text"}, "tool_choice": "auto",
          "parallel_tool_calls": false, "metadata": {"k": "v"}, "store": false, "service_tier": "auto",
          "prediction": {"type": "content", "content": "x"}, "modalities": ["text"], "unknown_extension": [1]})",
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
  EXPECT_EQ(r.sampling.logit_bias, (std::vector<std::pair<int32_t, float>>{{5, -100.0f}, {17, 2.5f}}));

  EXPECT_EQ(ParseOk(R"({"prompt": "abc", "model": "/models/smol.gguf"})").prompt, "abc");
  EXPECT_EQ(ParseOk(R"({"prompt": ["abc"]})").prompt, "abc");
  EXPECT_EQ(ParseOk(R"({"prompt": [1, 2, 3]})").prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ParseOk(R"({"prompt": [[4, 5]]})").prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "stop": "x"})").stop, std::vector<std::string>{"x"});
  // max_completion_tokens is the newer name of max_tokens; nulls mean absent.
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "max_completion_tokens": 9, "temperature": null})").max_tokens, 9);
  EXPECT_FALSE(ParseOk(R"({"prompt": "a"})").max_tokens.has_value());
  // top_p 0 is OpenAI's too (the top token); one below float's smallest is 0.
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "top_p": 0})").sampling.top_p, 0.0f);
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "top_p": 1e-300})").sampling.top_p, 0.0f);
  // A developer message is a system message to the templates; an assistant
  // turn that only calls tools needs no content.
  CompletionRequest dev = ParseOk(R"({"messages": [{"role": "developer", "content": "Be brief."},
      {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "1", "content": "42"}, {"role": "user", "content": "and?"}]})", ApiKind::kChat);
  EXPECT_EQ(dev.conversation.messages[0]["role"], "system");
  // tool_choice none: the model is shown no tools.
  const char* tools = R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])";
  EXPECT_FALSE(ParseOk(std::string(R"({"messages": [{"role": "user", "content": "x"}], )") + tools + "}", ApiKind::kChat)
                   .conversation.tools.is_null());
  EXPECT_TRUE(ParseOk(std::string(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none", )") + tools + "}",
                      ApiKind::kChat)
                  .conversation.tools.is_null());
  // tool_choice required / named; logprobs in both shapes.
  CompletionRequest req = ParseOk(std::string(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required", )") + tools + "}",
                                  ApiKind::kChat);
  EXPECT_EQ(req.tool_choice, ToolChoice::kRequired);
  EXPECT_TRUE(req.has_tools);
  CompletionRequest named = ParseOk(std::string(R"({"messages": [{"role": "user", "content": "x"}],
      "tool_choice": {"type": "function", "function": {"name": "f"}}, )") + tools + "}", ApiKind::kChat);
  EXPECT_EQ(named.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(named.tool_name, "f");
  EXPECT_EQ(ParseOk(R"({"messages": [{"role": "user", "content": "x"}]})", ApiKind::kChat).top_logprobs, -1);
  EXPECT_EQ(ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", ApiKind::kChat).top_logprobs, 0);
  EXPECT_EQ(ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 20})", ApiKind::kChat)
                .top_logprobs, 20);
  EXPECT_EQ(ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": false})", ApiKind::kChat).top_logprobs, -1);
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "logprobs": 3})").top_logprobs, 3);
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "logprobs": 0})").top_logprobs, 0);
  EXPECT_EQ(ParseOk(R"({"prompt": "a", "logprobs": null})").top_logprobs, -1);
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
      {R"({"messages": [{"content": "x"}]})", ApiKind::kChat, 400, "messages[0].role"},
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
      {R"({"prompt": "a", "top_p": -0.1})", ApiKind::kCompletion, 400, "top_p"},
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
      {R"({"prompt": "a", "logprobs": 21})", ApiKind::kCompletion, 400, "logprobs"},
      {R"({"prompt": "a", "logprobs": true})", ApiKind::kCompletion, 400, "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", ApiKind::kChat, 400, "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})", ApiKind::kChat, 400, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": -1})", ApiKind::kChat, 400, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": false, "top_logprobs": 2})", ApiKind::kChat, 400, "top_logprobs"},
      {R"({"messages": [{"role": "tool", "content": "42"}]})", ApiKind::kChat, 400, "messages[0].tool_call_id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]})",
       ApiKind::kChat, 400, "tools[0].function.parameters"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "g"}}})", ApiKind::kChat, 400, "tool_choice"},
      // Nothing silently ignored: roles, content, every OpenAI field's type,
      // and the fields asking for what strata does not do.
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", ApiKind::kChat, 400, "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "", "content": "x"}]})", ApiKind::kChat, 400, "messages[1].role"},
      {R"({"messages": [{"role": "function", "content": "x", "name": "f"}]})", ApiKind::kChat, 400, "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", ApiKind::kChat, 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": null}]})", ApiKind::kChat, 400, "messages[0].content"},
      {R"({"messages": [{"role": "assistant"}]})", ApiKind::kChat, 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 5}]})", ApiKind::kChat, 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "x", "name": 5}]})", ApiKind::kChat, 400, "messages[0].name"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})", ApiKind::kChat, 400, "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}})",
       ApiKind::kChat, 400, "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "bogus"}})", ApiKind::kChat, 400, "response_format.type"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": 5})", ApiKind::kChat, 400, "response_format"},
      {R"({"prompt": "a", "logit_bias": "x"})", ApiKind::kCompletion, 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"abc": 1}})", ApiKind::kCompletion, 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"-1": 1}})", ApiKind::kCompletion, 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"5": 101}})", ApiKind::kCompletion, 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"5": "1"}})", ApiKind::kCompletion, 400, "logit_bias"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": 5})", ApiKind::kChat, 400, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", ApiKind::kChat, 400, "tool_choice"},  // no tools
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "always"})", ApiKind::kChat, 400, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "f"}}})",
       ApiKind::kChat, 400, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": "x"})", ApiKind::kChat, 400, "parallel_tool_calls"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", ApiKind::kChat, 400, "tools[0].function"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", ApiKind::kChat, 400, "tools"},
      {R"({"prompt": "a", "metadata": 5})", ApiKind::kCompletion, 400, "metadata"},
      {R"({"prompt": "a", "user": 5})", ApiKind::kCompletion, 400, "user"},
      {R"({"prompt": "a", "store": true})", ApiKind::kCompletion, 400, "store"},
      {R"({"prompt": "a", "echo": true})", ApiKind::kCompletion, 400, "echo"},
      {R"({"prompt": "a", "suffix": "z"})", ApiKind::kCompletion, 400, "suffix"},
      {R"({"prompt": "a", "best_of": 2})", ApiKind::kCompletion, 400, "best_of"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", ApiKind::kChat, 400, "top_logprobs"},  // no logprobs
      {R"({"messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]})", ApiKind::kChat, 400, "modalities"},
      {R"({"messages": [{"role": "user", "content": "x"}], "audio": {"voice": "x"}})", ApiKind::kChat, 400, "audio"},
      {R"({"messages": [{"role": "user", "content": "x"}], "functions": []})", ApiKind::kChat, 400, "functions"},
      {R"({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "high"})", ApiKind::kChat, 400, "reasoning_effort"},
      {R"({"messages": [{"role": "user", "content": "x"}], "service_tier": 1})", ApiKind::kChat, 400, "service_tier"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"custom": 1}})", ApiKind::kChat, 400,
       "chat_template_kwargs.custom"},
      {R"({"prompt": "a", "max_tokens": 18446744073709551616})", ApiKind::kCompletion, 400, "max_tokens"},
      {R"({"prompt": "a", "seed": 18446744073709551616})", ApiKind::kCompletion, 400, "seed"},
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
  // Integers past 64 bits are out of range, not "fractional".
  for (const char* key : {"max_tokens", "seed"}) {
    ApiError e = ParseError(std::string(R"({"prompt": "a", ")") + key + R"(": 18446744073709551616})");
    EXPECT_NE(e.message.find("18446744073709551616 is outside"), std::string::npos) << e.message;
  }
  // A client's string is never echoed whole.
  const std::string huge(5 << 20, 'm');
  ApiError model = ParseError(R"({"prompt": "a", "model": ")" + huge + R"("})");
  EXPECT_EQ(model.status, 404);
  EXPECT_LT(model.message.size(), 300u) << model.message.substr(0, 300);
  EXPECT_NE(model.message.find("5242880 bytes"), std::string::npos) << model.message.substr(0, 300);
  ApiError role = ParseError(R"({"messages": [{"role": ")" + std::string(1 << 20, 'r') + R"(", "content": "x"}]})", ApiKind::kChat);
  EXPECT_EQ(role.param, "messages[0].role");
  EXPECT_LT(role.message.size(), 300u);
  // Token ids are checked against the vocabulary when it is known.
  ApiLimits with_vocab = kLimits;
  with_vocab.vocab = 100;
  for (const char* body : {R"({"prompt": "a", "logit_bias": {"100": 1}})", R"({"prompt": [1, 100]})"}) {
    auto r = ParseCompletionRequest(body, ApiKind::kCompletion, with_vocab);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    EXPECT_NE(std::get<ApiError>(r).message.find("outside the vocabulary of 100"), std::string::npos);
  }
  EXPECT_TRUE(std::holds_alternative<CompletionRequest>(
      ParseCompletionRequest(R"({"prompt": [99], "logit_bias": {"99": 1}})", ApiKind::kCompletion, with_vocab)));
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

// Waits (at most `limit`) for a request to end; returns its ids. A request
// that does not end is a failure, not a hang.
std::vector<int32_t> Collect(ServingRequest& r, std::chrono::seconds limit = std::chrono::seconds(120)) {
  std::vector<int32_t> ids;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!r.Wait(&ids, deadline)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ADD_FAILURE() << "the request did not end within " << limit.count() << " s";
      break;
    }
  }
  return ids;
}

// Waits (at most 30 s) for a request's first token.
bool FirstToken(ServingRequest& r, std::vector<int32_t>* ids) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ids->empty() && std::chrono::steady_clock::now() < deadline)
    if (r.Wait(ids, deadline)) break;
  return !ids->empty();
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
  ASSERT_TRUE(FirstToken(**running, &ids));
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
  ASSERT_TRUE(FirstToken(**last, &ids));
  EXPECT_TRUE(loop.Stop(std::chrono::milliseconds(0), "shutting down").ok());
  Collect(**last);
  EXPECT_EQ((*last)->error().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(loop.Submit(long_job).status().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ((*pipeline)->stage().kv_bytes(), 0u);
}

// parallel + max_queue requests sent together to an idle loop are all
// admitted, however the loop thread is scheduled: the bound counts the
// admitted requests, not the queue alone (which refused about one burst in
// four while slots were free). Many rounds, each a burst from 6 threads
// released together; then one more than the bound is refused, exactly.
TEST_F(ServingTest, AdmissionBoundIsExactUnderABurst) {
  ThreadPool pool(1);
  auto pipeline = LocalPipeline::Create(*model_, 256, &pool, /*max_sequences=*/2);
  ASSERT_TRUE(pipeline.ok());
  ServingOptions so;
  so.scheduler.n_ctx = 256;
  so.parallel = 2;
  so.max_queue = 4;
  ServingLoop loop(**pipeline, so);
  SequenceJob job;
  job.prompt = Ids("ROMEO:");
  job.n_predict = 1;
  job.sampling.temperature = 0;
  constexpr int kBurst = 6, kRounds = 100;
  int refused = 0;
  for (int round = 0; round < kRounds && refused == 0; ++round) {
    std::vector<Result<std::shared_ptr<ServingRequest>>> got(kBurst, Internal("not submitted"));
    std::barrier start(kBurst);
    std::vector<std::thread> threads;
    for (int i = 0; i < kBurst; ++i)
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        got[i] = loop.Submit(job);
      });
    for (auto& t : threads) t.join();
    for (int i = 0; i < kBurst; ++i) {
      if (!got[i].ok()) {
        ++refused;
        ADD_FAILURE() << "round " << round << ": request " << i << " refused: " << got[i].status().message();
        continue;
      }
      Collect(**got[i], std::chrono::seconds(60));
      EXPECT_TRUE((*got[i])->error().ok());
    }
    const ServingLoop::Counts c = loop.counts();
    ASSERT_EQ(c.running + c.queued, 0u) << "round " << round;
  }
  // Seven long requests at once: six admitted (two running, four waiting), one refused.
  job.n_predict = 200;
  job.ignore_eos = true;
  std::vector<Result<std::shared_ptr<ServingRequest>>> got(kBurst + 1, Internal("not submitted"));
  std::barrier start(kBurst + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i <= kBurst; ++i)
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      got[i] = loop.Submit(job);
    });
  for (auto& t : threads) t.join();
  int admitted = 0;
  for (auto& g : got) {
    if (g.ok()) {
      ++admitted;
    } else {
      EXPECT_EQ(g.status().kind(), ErrorKind::kUnavailable);
      EXPECT_NE(g.status().message().find("4 requests are already waiting for one of the 2 sequence slots"), std::string::npos)
          << g.status().message();
    }
  }
  EXPECT_EQ(admitted, kBurst);
  // A cancelled request waiting in the queue does not hold a place.
  for (auto& g : got)
    if (g.ok()) (*g)->Cancel();
  auto after = loop.Submit(job);
  EXPECT_TRUE(after.ok()) << after.status().message();
  if (after.ok()) (*after)->Cancel();
  for (auto& g : got)
    if (g.ok()) Collect(**g, std::chrono::seconds(60));
  if (after.ok()) Collect(**after, std::chrono::seconds(60));
  EXPECT_TRUE(loop.Stop(std::chrono::milliseconds(0), "done").ok());
}

// The event-loop interface: on_update is called on every change, Take hands
// out what Wait would, started() says the request left the queue; Stop ends
// queued requests at once and gives the running ones the grace.
TEST_F(ServingTest, NotificationsTakeAndStopEndsTheQueueAtOnce) {
  ThreadPool pool(1);
  auto pipeline = LocalPipeline::Create(*model_, 2048, &pool, /*max_sequences=*/1);
  ASSERT_TRUE(pipeline.ok());
  ServingOptions so;
  so.scheduler.n_ctx = 2048;
  so.parallel = 1;
  so.max_queue = 2;
  ServingLoop loop(**pipeline, so);
  SequenceJob short_job;
  short_job.prompt = Ids("ROMEO:");
  short_job.n_predict = 12;
  short_job.ignore_eos = true;
  short_job.sampling.temperature = 0;
  std::vector<SequenceJob> solo{short_job};
  solo[0].seq_id = 1;
  ASSERT_TRUE(RunSequences(**pipeline, solo, {.n_ctx = 2048, .eos_ids = {}}, nullptr).ok());

  std::atomic<int> updates{0};
  auto r = loop.Submit(short_job, [&] { updates.fetch_add(1); });
  ASSERT_TRUE(r.ok());
  std::vector<int32_t> ids;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    ended = (*r)->Take(&ids);
    if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(ended);
  EXPECT_TRUE((*r)->started());
  EXPECT_EQ(ids, solo[0].ids);
  EXPECT_GE(updates.load(), 2 + static_cast<int>(ids.size()));  // start, each token, end

  // Stop with a long grace: the queued request ends now, with the reason;
  // the running one is still running then, and ends when cancelled.
  SequenceJob long_job = short_job;
  long_job.n_predict = 2000;
  auto running = loop.Submit(long_job);
  ASSERT_TRUE(running.ok());
  ids.clear();
  ASSERT_TRUE(FirstToken(**running, &ids));
  auto queued = loop.Submit(long_job);
  ASSERT_TRUE(queued.ok());
  EXPECT_FALSE((*queued)->started());
  std::thread stopper([&] { EXPECT_TRUE(loop.Stop(std::chrono::seconds(120), "the server is shutting down").ok()); });
  Collect(**queued, std::chrono::seconds(30));
  EXPECT_EQ((*queued)->error().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ((*queued)->error().message(), "the server is shutting down");
  EXPECT_TRUE((*queued)->job().ids.empty());
  std::vector<int32_t> more;
  EXPECT_FALSE((*running)->Take(&more)) << "the running request ended with the queued one";
  EXPECT_EQ(loop.Submit(short_job).status().kind(), ErrorKind::kUnavailable);
  (*running)->Cancel();
  Collect(**running, std::chrono::seconds(60));
  stopper.join();
  EXPECT_TRUE((*running)->error().ok());
  EXPECT_EQ((*running)->job().finish_reason, "cancelled");
}

}  // namespace
}  // namespace strata
