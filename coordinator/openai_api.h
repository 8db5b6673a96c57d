// The OpenAI-compatible API's requests and responses (rank 0, the server's
// threads): parsing and checking a /v1/chat/completions or /v1/completions
// body, and turning a request's tokens into answer text, reasoning text and
// stop-string ends. No sockets here (coordinator/http_server.h has those).
//
//   STRATA_ASSIGN_OR_RETURN... (ApiError instead of Status: it carries the HTTP status)
//   auto req = ParseCompletionRequest(body, ApiKind::kChat, limits);
//   if (auto* err = std::get_if<ApiError>(&req)) -> send err->status, ErrorJson(*err)
//   CompletionText text(tokenizer, eos_ids, stop, opens_thinking, split_thinking);
//   TextDelta d = text.Push(id);  // d.content, d.reasoning; text.stopped() once a stop string was met
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/chat_template.h"
#include "worker/sampler.h"
#include "model/tokenizer.h"

namespace strata {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault; empty: none
  std::string code;   // e.g. "model_not_found", "context_length_exceeded"; empty: none
};
nlohmann::json ErrorJson(const ApiError& e);

// `s` for an error message: cut to `max_bytes` (at a UTF-8 boundary) with
// its length said, in single quotes unless `quotes` is false. A client's
// string never comes back whole (a 5 MB model name, a 1 MB role).
std::string QuoteForMessage(const std::string& s, size_t max_bytes = 64, bool quotes = true);

enum class ApiKind { kChat, kCompletion };

struct ApiLimits {
  std::vector<std::string> model_ids;  // names a request's "model" may use (the first is reported)
  int max_tokens = 4096;               // the most a request may ask for
  int max_stop = 4;                    // stop strings per request
  int32_t vocab = 0;                   // token ids (prompt, logit_bias) must be below; 0: unchecked
};

// tool_choice: kAuto parses calls when tools are given; kNone shows the
// template no tools and parses nothing; kRequired / kNamed force a call
// (coordinator/tool_calls.h ForcedCallPrefix).
enum class ToolChoice { kAuto, kNone, kRequired, kNamed };

struct CompletionRequest {
  ApiKind kind = ApiKind::kChat;
  Conversation conversation;             // chat
  std::optional<bool> enable_thinking;   // chat: chat_template_kwargs.enable_thinking
  ToolChoice tool_choice = ToolChoice::kAuto;  // chat
  std::string tool_name;                 // chat, kNamed: the function to call
  bool has_tools = false;                // chat: tools given (and not turned off by tool_choice none)
  std::string prompt;                    // completion: text (when prompt_ids is empty)
  std::vector<int32_t> prompt_ids;       // completion: token ids given directly
  std::optional<int> max_tokens;         // unset: up to the context (and the server's limit)
  SamplingParams sampling;
  bool seeded = false;                   // seed given (else the server draws one)
  std::vector<std::string> stop;
  bool stream = false;
  bool cache_prompt = true;              // llama.cpp's extension: false keeps the request out of the prefix cache
  bool include_usage = false;            // stream_options.include_usage
  bool ignore_eos = false;               // llama.cpp's extension
  int top_logprobs = -1;                 // < 0: no logprobs; chat logprobs: true with top_logprobs N, completions logprobs: N
};

// Parses and checks a request body. Errors name the field: malformed JSON,
// a body that is not an object, missing or wrongly typed fields, values out
// of range, an unknown role, a message without content, an unknown model
// (404), and every field OpenAI defines whose request strata cannot honour
// (n > 1, JSON response formats, non-zero
// presence/frequency penalties, non-text content parts, ...). Fields OpenAI
// does not define are ignored.
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(const std::string& body, ApiKind kind,
                                                                 const ApiLimits& limits);

struct TextDelta {
  std::string content;
  std::string reasoning;
  bool empty() const { return content.empty() && reasoning.empty(); }
};

// Generated ids -> text for one request: never a broken UTF-8 sequence;
// end-of-sequence ids add no text; a stop string ends the text before it
// (text that may begin a stop string is held back until it cannot); with
// `split_thinking`, a leading <think> block goes to `reasoning`.
class CompletionText {
 public:
  CompletionText(const Tokenizer& tokenizer, std::vector<int32_t> eos_ids, std::vector<std::string> stop,
                 bool split_thinking, bool opens_thinking);
  TextDelta Push(int32_t id);
  // The text held back, at the end of the request.
  TextDelta Finish();
  bool stopped() const { return stopped_; }

 private:
  TextDelta Emit(const std::string& raw);

  Tokenizer::StreamDecoder decoder_;
  std::vector<int32_t> eos_ids_;
  std::vector<std::string> stop_;
  bool split_thinking_;
  ThinkingSplitter splitter_;
  std::string held_;  // decoded text that may be the start of a stop string
  bool stopped_ = false;
};

// A fresh id for a response ("chatcmpl-..." / "cmpl-...").
std::string NewCompletionId(ApiKind kind);

}  // namespace strata
