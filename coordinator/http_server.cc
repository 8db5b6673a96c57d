// The OpenAI routes of http_server.h over the connection layer of
// http_transport.h (rank 0).
//
// A completion request is a CompletionCall: its body is parsed, run through
// the chat template and tokenized on a worker thread (Prepare), submitted to
// the ServingLoop from the I/O thread, and then driven by the loop's
// notifications: each posts one Drain to the I/O thread, which turns the new
// tokens into text and writes it (a stream) or keeps it (a whole answer).
// No thread waits for a request. A stream's 200 is sent when its request
// leaves the queue, so a request that never runs (the server stops, the
// deadline passes) gets its error as a status, before any header.
#include "coordinator/http_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/log.h"
#include "coordinator/tool_calls.h"
#include "model/untrusted_json.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Event(const json& j) { return "data: " + Dump(j) + "\n\n"; }

int HttpStatusOf(const Status& st) {
  switch (st.kind()) {
    case ErrorKind::kInvalidArgument: return 400;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kUnimplemented: return 400;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ErrorType(int status) {
  if (status == 503) return "server_overloaded";
  if (status == 504 || status == 408) return "timeout_error";
  if (status >= 500 && status != 505 && status != 501) return "server_error";
  return "invalid_request_error";
}

ApiError ApiErrorOf(const Status& st) {
  ApiError e;
  e.status = HttpStatusOf(st);
  e.message = st.message();
  e.type = ErrorType(e.status);
  return e;
}

Clock::duration Seconds(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

// The endpoint label of /metrics: the known routes, else "other" (a client
// must not grow the label set with made-up paths).
std::string EndpointLabel(const std::string& path) {
  for (const char* p : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/slots", "/tokenize"})
    if (path == p) return p;
  return "other";
}

// A log-probability for JSON: -inf (a token the model rules out) as OpenAI's -9999.
double LogprobValue(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

}  // namespace

struct HttpServer::Impl {
  ServingLoop& loop;
  const Tokenizer& tokenizer;
  const ChatTemplate* chat_template;
  const ModelConfig& config;
  HttpServerOptions opts;
  ApiLimits limits;
  std::time_t created = std::time(nullptr);
  Clock::time_point started = Clock::now();
  Metrics own_metrics;
  Metrics* metrics = nullptr;
  ToolCallFormat tool_format = ToolCallFormat::kNone;  // what the chat template teaches
  mutable std::mutex mu;
  Counters counters;
  std::unique_ptr<HttpTransport> transport;

  Impl(ServingLoop& l, const Tokenizer& t, const ChatTemplate* c, const ModelConfig& cfg, const HttpServerOptions& o)
      : loop(l), tokenizer(t), chat_template(c), config(cfg), opts(o) {
    if (opts.max_tokens <= 0) opts.max_tokens = static_cast<int>(std::min<int64_t>(opts.n_ctx, 1 << 30));
    if (opts.model_ids.empty()) opts.model_ids.push_back("strata");
    metrics = opts.metrics != nullptr ? opts.metrics : &own_metrics;
    if (chat_template != nullptr) tool_format = DetectToolCallFormat(chat_template->source());
    limits.model_ids = opts.model_ids;
    limits.max_tokens = opts.max_tokens;
    limits.vocab = config.vocab;
    HttpTransportOptions to;
    to.host = opts.host;
    to.port = opts.port;
    to.max_body_bytes = opts.max_body_bytes;
    to.max_connections = opts.max_connections;
    to.max_connections_per_client = opts.max_connections_per_client;
    to.header_timeout_s = opts.header_timeout_s;
    to.body_timeout_s = opts.body_timeout_s;
    to.worker_threads = std::max(1, opts.prep_threads);
    to.error_body = [](int status, const std::string& message) {
      ApiError e;
      e.status = status;
      e.message = message;
      e.type = ErrorType(status);
      return std::make_pair(std::string("application/json"), Dump(ErrorJson(e)));
    };
    transport = std::make_unique<HttpTransport>(to, [this](std::shared_ptr<HttpExchange> ex) { Handle(std::move(ex)); });
  }

  void Count(const std::string& endpoint, int status, bool disconnected = false) {
    metrics->CountRequest(endpoint, disconnected ? 499 : status);
    std::lock_guard<std::mutex> lock(mu);
    ++counters.requests;
    if (disconnected) ++counters.disconnects;
    else if (status < 400) ++counters.ok;
    else if (status < 500) ++counters.client_errors;
    else ++counters.server_errors;
  }

  void SendError(HttpExchange& ex, const ApiError& e, HttpHeaders headers = {}) {
    if (e.status == 503) headers.emplace_back("Retry-After", "1");
    const std::string endpoint = EndpointLabel(ex.request().path);
    ex.Respond(e.status, "application/json", Dump(ErrorJson(e)), headers);
    Count(endpoint, e.status);
  }

  // A request checked and tokenized, ready for the loop.
  struct Prepared {
    CompletionRequest req;
    std::vector<int32_t> prompt;
    bool split_thinking = false, opens_thinking = false;
    int n_predict = 0;
    ToolCallFormat tool_format = ToolCallFormat::kNone;  // parse the answer for calls in this format
    std::string forced_prefix;                            // tool_choice required / named: the answer's forced start
  };
  using Preparation = std::variant<Prepared, ApiError>;

  // Parse, template, tokenize: a worker thread's (reads only shared state).
  Preparation Prepare(const std::string& body, ApiKind kind) const {
    auto parsed = ParseCompletionRequest(body, kind, limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
    Prepared p;
    p.req = std::move(std::get<CompletionRequest>(parsed));
    if (kind == ApiKind::kChat) {
      if (chat_template == nullptr) {
        ApiError e;
        e.message = "the model has no chat template; use /v1/completions";
        return e;
      }
      const bool forced = p.req.tool_choice == ToolChoice::kRequired || p.req.tool_choice == ToolChoice::kNamed;
      if (forced && tool_format == ToolCallFormat::kNone) {
        ApiError e;
        e.param = "tool_choice";
        e.message = "forcing a tool call needs a chat template that teaches a tool-call format (<tool_call>, [TOOL_CALLS], "
                    "Llama 3's JSON or LFM2's list); this one teaches none (strata serve --chat-template-file)";
        return e;
      }
      ChatOptions co;
      co.enable_thinking = p.req.enable_thinking;
      // A forced call starts the answer: no reasoning block before it.
      if (forced) co.enable_thinking = false;
      auto text = chat_template->Apply(p.req.conversation, co);
      if (!text.ok()) {
        ApiError e;
        e.param = "messages";
        e.message = "the chat template could not render these messages: " + text.status().message();
        return e;
      }
      if (p.req.has_tools) p.tool_format = tool_format;
      if (forced) {
        p.forced_prefix = ForcedCallPrefix(tool_format, p.req.tool_choice == ToolChoice::kNamed ? p.req.tool_name : "");
        *text += p.forced_prefix;
      }
      p.prompt = tokenizer.Encode(*text, false, true);
      p.split_thinking = true;
      p.opens_thinking = PromptOpensThinking(*text);
    } else if (!p.req.prompt_ids.empty()) {
      p.prompt = p.req.prompt_ids;  // checked against the vocabulary by the parser
    } else {
      p.prompt = tokenizer.Encode(p.req.prompt, tokenizer.add_bos());
    }
    const int64_t n = static_cast<int64_t>(p.prompt.size());
    const int64_t room = opts.n_ctx - n;
    if (room < 1 || (p.req.max_tokens && *p.req.max_tokens > room)) {
      ApiError e;
      e.param = kind == ApiKind::kChat ? "messages" : "prompt";
      e.code = "context_length_exceeded";
      e.message = "the prompt has " + std::to_string(n) + " tokens" +
                  (p.req.max_tokens ? " and max_tokens is " + std::to_string(*p.req.max_tokens) : std::string()) +
                  "; the context holds " + std::to_string(opts.n_ctx) + " tokens (--ctx)";
      return e;
    }
    p.n_predict = static_cast<int>(std::min<int64_t>(p.req.max_tokens.value_or(opts.max_tokens), room));
    return p;
  }

  std::string RequestTimeoutMessage() const {
    char b[128];
    std::snprintf(b, sizeof b, "the request did not finish within %g s (--request-timeout)", opts.request_timeout_s);
    return b;
  }

  json Chunk(ApiKind kind, const std::string& id, const json& choice) const {
    return {{"id", id}, {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
            {"created", static_cast<int64_t>(std::time(nullptr))}, {"model", opts.model_ids[0]},
            {"choices", json::array({choice})}};
  }

  class CompletionCall;
  void Handle(std::shared_ptr<HttpExchange> ex);
  void Health(HttpExchange& ex);
  void Models(HttpExchange& ex);
  void MetricsPage(std::shared_ptr<HttpExchange> ex);
  void Slots(HttpExchange& ex);
  void Tokenize(std::shared_ptr<HttpExchange> ex);

  // A token as OpenAI's logprobs show it: its text, log-probability and bytes.
  json TokenJson(int32_t id, float logprob) const {
    const std::string b = tokenizer.TokenBytes(id);
    json bytes = json::array();
    for (unsigned char c : b) bytes.push_back(static_cast<int>(c));
    return {{"token", b}, {"logprob", LogprobValue(logprob)}, {"bytes", bytes}};
  }
};

// One completion request, from its body to the end of its answer. Lives on
// the I/O thread (but for Prepare, on a worker thread, and the loop's
// notification, which only posts).
class HttpServer::Impl::CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(Impl& s, std::shared_ptr<HttpExchange> ex, ApiKind kind)
      : s_(s), ex_(std::move(ex)), kind_(kind), id_(NewCompletionId(kind)), endpoint_(EndpointLabel(ex_->request().path)) {}

  void Begin() {
    auto self = shared_from_this();
    ex_->OnClientGone([self] { self->ClientGone(); });
    deadline_ = Clock::now() + Seconds(s_.opts.request_timeout_s);
    last_sent_ = Clock::now();
    ArmTimer();
    auto body = std::make_shared<std::string>(std::move(ex_->request().body));
    s_.transport->Offload([self, body] {
      auto prepared = std::make_shared<Preparation>(self->s_.Prepare(*body, self->kind_));
      body->clear();
      self->ex_->Post([self, prepared] { self->Submit(std::move(*prepared)); });
    });
  }

 private:
  // The exchange has one timer: the request's deadline, or the next
  // keep-alive check of a stream when that comes first.
  void ArmTimer() {
    auto self = shared_from_this();
    const auto left = deadline_ - Clock::now();
    const double ka = s_.opts.sse_keepalive_s;
    if (ka <= 0 || left <= Seconds(ka)) {
      ex_->SetTimer(std::max(left, Clock::duration::zero()),
                    [self] { self->Fail(ApiErrorOf(DeadlineExceeded(self->s_.RequestTimeoutMessage()))); });
      return;
    }
    ex_->SetTimer(Seconds(ka), [self] {
      if (self->over_) return;
      if (self->stream_ && self->ex_->started() && Clock::now() - self->last_sent_ >= Seconds(self->s_.opts.sse_keepalive_s)) {
        self->ex_->Send(": keep-alive\n\n");
        self->last_sent_ = Clock::now();
      }
      self->ArmTimer();
    });
  }

  void Submit(Preparation prepared) {
    if (over_) return;  // the client went away, or the deadline passed, meanwhile
    if (auto* e = std::get_if<ApiError>(&prepared)) return Fail(*e);
    Prepared& p = std::get<Prepared>(prepared);
    stream_ = p.req.stream;
    include_usage_ = p.req.include_usage;
    top_logprobs_ = p.req.top_logprobs;
    text_.emplace(s_.tokenizer, s_.config.eos_ids, p.req.stop, p.split_thinking, p.opens_thinking);
    if (p.tool_format != ToolCallFormat::kNone) tools_.emplace(p.tool_format);
    forced_prefix_ = std::move(p.forced_prefix);
    SequenceJob job;
    job.top_logprobs = p.req.top_logprobs;
    job.prompt = std::move(p.prompt);
    job.n_predict = p.n_predict;
    job.ignore_eos = p.req.ignore_eos;
    job.cache_prompt = p.req.cache_prompt;
    job.sampling = std::move(p.req.sampling);
    // The loop's notification posts one Drain at a time; it holds the
    // exchange (to post) and only a weak reference to this call.
    auto pending = std::make_shared<std::atomic<bool>>(false);
    std::weak_ptr<CompletionCall> weak = weak_from_this();
    std::shared_ptr<HttpExchange> ex = ex_;
    auto submitted = s_.loop.Submit(std::move(job), [pending, weak, ex] {
      if (pending->exchange(true)) return;
      ex->Post([pending, weak] {
        pending->store(false);
        if (auto self = weak.lock()) self->Drain();
      });
    });
    if (!submitted.ok()) return Fail(ApiErrorOf(submitted.status()));
    req_ = *submitted;
    Drain();
  }

  // New tokens, the start, or the end of the request.
  void Drain() {
    if (over_ || !req_) return;
    std::vector<int32_t> ids;
    std::vector<TokenLogprobs> lps;
    const bool ended = req_->Take(&ids, top_logprobs_ >= 0 ? &lps : nullptr);
    TextDelta d;
    json lp_items = json::array();
    for (size_t k = 0; k < ids.size(); ++k) {
      const int32_t id = ids[k];
      // Logprobs for the tokens whose text is the answer's (an end-of-
      // sequence id adds none; after a stop string nothing counts).
      const bool visible = !text_->stopped() &&
                           std::find(s_.config.eos_ids.begin(), s_.config.eos_ids.end(), id) == s_.config.eos_ids.end();
      TextDelta t = text_->Push(id);
      d.content += t.content;
      d.reasoning += t.reasoning;
      if (visible && k < lps.size()) AddLogprobs(lps[k], &lp_items);
      if (text_->stopped()) req_->Cancel();
    }
    std::vector<ToolCall> calls = ParseCalls(&d.content);
    const bool failed = ended && !req_->error().ok();
    if (stream_) {
      if (!ex_->started()) {
        if (failed) return Fail(ApiErrorOf(req_->error()));  // never began: the error as the status
        if (!req_->started() && !ended) return;              // still queued
        ex_->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
        if (kind_ == ApiKind::kChat)
          ex_->Send(Event(s_.Chunk(kind_, id_, {{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}})));
      }
      if (!d.empty() || !lp_items.empty()) {
        ex_->Send(Event(s_.Chunk(kind_, id_, DeltaChoice(d, nullptr, lp_items))));
        last_sent_ = Clock::now();
      }
      for (const json& it : lp_items) text_offset_ += it["bytes"].size();  // the next chunk's offsets go on
      SendCalls(calls);
    } else {
      all_.content += d.content;
      all_.reasoning += d.reasoning;
      KeepLogprobs(lp_items);
      for (ToolCall& c : calls) all_calls_.push_back(std::move(c));
    }
    if (failed) return Fail(ApiErrorOf(req_->error()));  // after the text that came before it
    if (ended) Finish();
  }

  // The request ended well: the rest of the text, the finish, usage.
  void Finish() {
    over_ = true;
    TextDelta rest = text_->Finish();
    std::vector<ToolCall> calls = ParseCalls(&rest.content);
    if (tools_) {
      ToolCallStream::Out o = tools_->Finish();
      rest.content += o.content;
      n_calls_ += o.calls.size();
      for (ToolCall& c : o.calls) calls.push_back(std::move(c));
    }
    // A parsed call ends the turn as OpenAI and vLLM report it, whatever
    // stopped the generation after it.
    const std::string finish = n_calls_ > 0            ? "tool_calls"
                               : text_->stopped()      ? "stop"
                               : req_->job().finish_reason == "length" ? "length" : "stop";
    if (stream_) {
      if (!rest.empty()) ex_->Send(Event(s_.Chunk(kind_, id_, DeltaChoice(rest, nullptr))));
      SendCalls(calls);
      ex_->Send(Event(s_.Chunk(kind_, id_, DeltaChoice(TextDelta{}, finish))));
      if (include_usage_) {
        json u = s_.Chunk(kind_, id_, json::object());
        u["choices"] = json::array();
        u["usage"] = Usage();
        ex_->Send(Event(u));
      }
      ex_->Send("data: [DONE]\n\n");
      ex_->End();
    } else {
      all_.content += rest.content;
      all_.reasoning += rest.reasoning;
      for (ToolCall& c : calls) all_calls_.push_back(std::move(c));
      json choice;
      if (kind_ == ApiKind::kChat) {
        json message = {{"role", "assistant"}, {"content", all_.content}};
        if (!all_calls_.empty()) {
          // Around calls, white space is layout: no content (null, as OpenAI).
          if (all_.content.find_first_not_of(" \t\r\n") == std::string::npos) message["content"] = nullptr;
          json tc = json::array();
          for (const ToolCall& c : all_calls_)
            tc.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
          message["tool_calls"] = tc;
        }
        if (!all_.reasoning.empty()) message["reasoning_content"] = all_.reasoning;
        choice = {{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish}};
        if (top_logprobs_ >= 0) choice["logprobs"] = {{"content", all_logprobs_}};
      } else {
        choice = {{"index", 0}, {"text", all_.content}, {"logprobs", nullptr}, {"finish_reason", finish}};
        if (top_logprobs_ >= 0) choice["logprobs"] = all_logprobs_;
      }
      json body = {{"id", id_}, {"object", kind_ == ApiKind::kChat ? "chat.completion" : "text_completion"},
                   {"created", static_cast<int64_t>(std::time(nullptr))}, {"model", s_.opts.model_ids[0]},
                   {"choices", json::array({choice})}, {"usage", Usage()}};
      ex_->Respond(200, "application/json", Dump(body));
    }
    s_.Count(endpoint_, 200);
  }

  // The request cannot be answered: a status before any header, or a final
  // error event (and [DONE]) in a stream already begun.
  void Fail(const ApiError& e) {
    if (over_) return;
    over_ = true;
    if (req_) req_->Cancel();
    if (!ex_->started()) return s_.SendError(*ex_, e);
    ex_->Send(Event(ErrorJson(e)));
    ex_->Send("data: [DONE]\n\n");
    ex_->End();
    s_.Count(endpoint_, e.status);
  }

  void ClientGone() {
    if (over_) return;
    over_ = true;
    if (req_) req_->Cancel();
    s_.Count(endpoint_, 499, true);
  }

  // One chunk's choice; `lp` the log-probabilities of its tokens (chat:
  // the content list; completions: the legacy object).
  json DeltaChoice(const TextDelta& d, const json& finish, const json& lp = json()) const {
    const bool with_lp = top_logprobs_ >= 0 && lp.is_array() && !lp.empty();
    if (kind_ == ApiKind::kCompletion)
      return {{"index", 0}, {"text", d.content}, {"logprobs", with_lp ? LegacyLogprobs(lp) : json()}, {"finish_reason", finish}};
    json delta = json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty() || with_lp) delta["content"] = d.content;
    json choice = {{"index", 0}, {"delta", delta}, {"finish_reason", finish}};
    if (with_lp) choice["logprobs"] = {{"content", lp}};
    return choice;
  }

  // The answer's text through the tool-call parser (when the request has
  // tools): what stays content in *content, the complete calls returned.
  std::vector<ToolCall> ParseCalls(std::string* content) {
    if (!tools_) return {};
    std::string in = std::move(*content);
    if (!forced_prefix_.empty()) in = std::exchange(forced_prefix_, {}) + in;  // the forced start is the answer's
    ToolCallStream::Out o = tools_->Push(in);
    *content = std::move(o.content);
    n_calls_ += o.calls.size();
    return std::move(o.calls);
  }

  // OpenAI's streamed calls: the id, type and name first, then the arguments.
  void SendCalls(const std::vector<ToolCall>& calls) {
    for (const ToolCall& c : calls) {
      const json head = {{"index", sent_calls_}, {"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", ""}}}};
      const json args = {{"index", sent_calls_}, {"function", {{"arguments", c.arguments}}}};
      for (const json& tc : {head, args})
        ex_->Send(Event(s_.Chunk(kind_, id_, {{"index", 0}, {"delta", {{"tool_calls", json::array({tc})}}}, {"finish_reason", nullptr}})));
      last_sent_ = Clock::now();
      ++sent_calls_;
    }
  }

  // One token's entry: chat's {token, logprob, bytes, top_logprobs}.
  void AddLogprobs(const TokenLogprobs& lp, json* items) const {
    json item = s_.TokenJson(lp.id, lp.logprob);
    json top = json::array();
    for (const auto& [id, v] : lp.top) top.push_back(s_.TokenJson(id, v));
    item["top_logprobs"] = top;
    items->push_back(std::move(item));
  }

  // Chat entries -> the completions API's legacy shape: tokens,
  // token_logprobs, top_logprobs ({text: logprob}) and text_offset (the
  // token's byte offset in the answer's text).
  json LegacyLogprobs(const json& items) const {
    json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
    size_t offset = text_offset_;
    for (const json& it : items) {
      out["tokens"].push_back(it["token"]);
      out["token_logprobs"].push_back(it["logprob"]);
      json top = json::object();
      for (const json& t : it["top_logprobs"]) top[t["token"].get<std::string>()] = t["logprob"];
      out["top_logprobs"].push_back(top);
      out["text_offset"].push_back(offset);
      offset += it["bytes"].size();
    }
    return out;
  }

  // A whole answer's log-probabilities so far; a stream's offsets go on.
  void KeepLogprobs(const json& items) {
    if (top_logprobs_ < 0 || items.empty()) return;
    if (kind_ == ApiKind::kChat) {
      if (!all_logprobs_.is_array()) all_logprobs_ = json::array();
      for (const json& it : items) all_logprobs_.push_back(it);
      return;
    }
    const json legacy = LegacyLogprobs(items);
    if (!all_logprobs_.is_object()) all_logprobs_ = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
    for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
      for (const json& x : legacy[k]) all_logprobs_[k].push_back(x);
    for (const json& it : items) text_offset_ += it["bytes"].size();
  }

  json Usage() const {
    const int64_t prompt = static_cast<int64_t>(req_->job().prompt.size());
    const int64_t completion = static_cast<int64_t>(req_->job().ids.size());
    // prompt_tokens_details.cached_tokens: prompt tokens the prefix cache served (OpenAI's field).
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", req_->job().cached_tokens}}}};
  }

  Impl& s_;
  std::shared_ptr<HttpExchange> ex_;
  const ApiKind kind_;
  const std::string id_;
  const std::string endpoint_;
  bool stream_ = false, include_usage_ = false;
  int top_logprobs_ = -1;
  std::optional<ToolCallStream> tools_;  // the request has tools: the answer is parsed for calls
  std::string forced_prefix_;            // not yet given to tools_
  size_t n_calls_ = 0, sent_calls_ = 0;
  std::vector<ToolCall> all_calls_;      // a whole answer's
  json all_logprobs_;                    // a whole answer's (chat: array; completions: legacy object)
  size_t text_offset_ = 0;               // completions: bytes of answer text before the next token
  std::optional<CompletionText> text_;
  std::shared_ptr<ServingRequest> req_;
  TextDelta all_;      // a whole answer, so far
  bool over_ = false;  // answered, failed, or the client is gone
  Clock::time_point deadline_, last_sent_;
};

void HttpServer::Impl::Handle(std::shared_ptr<HttpExchange> ex) {
  const HttpRequest& q = ex->request();
  auto wrong_method = [&](const char* allowed) {
    ApiError e;
    e.status = 405;
    e.message = QuoteForMessage(q.path, 256, false) + " takes " + allowed;
    SendError(*ex, e, {{"Allow", allowed}});
  };
  if (q.path == "/v1/chat/completions" || q.path == "/v1/completions") {
    if (q.method != "POST") return wrong_method("POST");
    auto call = std::make_shared<CompletionCall>(*this, ex, q.path == "/v1/completions" ? ApiKind::kCompletion : ApiKind::kChat);
    return call->Begin();
  }
  if (q.path == "/health") return q.method == "GET" ? Health(*ex) : wrong_method("GET");
  if (q.path == "/metrics") return q.method == "GET" ? MetricsPage(ex) : wrong_method("GET");
  if (q.path == "/slots") return q.method == "GET" ? Slots(*ex) : wrong_method("GET");
  if (q.path == "/tokenize") return q.method == "POST" ? Tokenize(ex) : wrong_method("POST");
  if (q.path == "/v1/models") return q.method == "GET" ? Models(*ex) : wrong_method("GET");
  ApiError e;
  e.status = 404;
  e.message = "no such endpoint: " + QuoteForMessage(q.method, 32, false) + " " + QuoteForMessage(q.path, 256, false);
  SendError(*ex, e);
}

void HttpServer::Impl::Health(HttpExchange& ex) {
  const ServingLoop::Counts c = loop.counts();
  const Status failure = loop.failure();
  json j = {{"status", !failure.ok() ? "error" : c.stopping ? "shutting_down" : "ok"},
            {"running", c.running}, {"queued", c.queued}, {"finished", c.finished},
            {"connections", transport->counts().open}};
  if (!failure.ok()) j["error"] = failure.message();
  if (opts.health) opts.health(&j);
  ex.Respond(j["status"] == "ok" || j["status"] == "recovering" ? 200 : 503, "application/json", Dump(j));
}

void HttpServer::Impl::Models(HttpExchange& ex) {
  json m = {{"id", opts.model_ids[0]}, {"object", "model"}, {"created", static_cast<int64_t>(created)}, {"owned_by", "strata"},
            {"meta", {{"architecture", config.arch}, {"n_ctx", opts.n_ctx}, {"n_layers", config.n_layers}, {"vocab", config.vocab}}}};
  ex.Respond(200, "application/json", Dump({{"object", "list"}, {"data", json::array({m})}}));
  Count("/v1/models", 200);
}

void HttpServer::Impl::MetricsPage(std::shared_ptr<HttpExchange> ex) {
  // The stages' counters come from the loop thread between batches: a
  // worker thread waits for them (up to a second), never the I/O thread.
  transport->Offload([this, ex] {
    ServingGauges g;
    const ServingLoop::Counts c = loop.counts();
    g.queued = c.queued;
    g.running = c.running;
    g.slots = opts.parallel;
    const HttpTransport::Counts t = transport->counts();
    g.connections_open = t.open;
    g.connections_refused = t.refused;
    g.requests_timed_out = t.timed_out;
    const PrefixCacheStats cache = loop.cache_stats();
    g.cache_lookups = cache.lookups;
    g.cache_hits = cache.hits;
    g.cache_evictions = cache.evictions;
    g.cache_sequences = cache.sequences;
    g.cache_bytes = cache.bytes;
    const double uptime = std::chrono::duration<double>(Clock::now() - started).count();
    auto stats = loop.ReadStageStats(std::chrono::milliseconds(1000));
    if (stats.ok()) {
      for (size_t i = 0; i < stats->size(); ++i) {
        const StageStats& st = (*stats)[i];
        StageGauges sg;
        sg.stage = static_cast<int>(i);
        sg.rank = st.rank;
        sg.host = st.host;
        sg.busy_s = st.busy_s;
        sg.busy_ratio = uptime > 0 ? st.busy_s / uptime : 0;
        sg.bytes_sent = st.bytes_sent;
        sg.tokens = st.tokens;
        g.stages.push_back(std::move(sg));
      }
    }
    auto body = std::make_shared<std::string>(metrics->Render(g));
    ex->Post([this, ex, body] {
      ex->Respond(200, "text/plain; version=0.0.4; charset=utf-8", std::move(*body));
      Count("/metrics", 200);
    });
  });
}

void HttpServer::Impl::Slots(HttpExchange& ex) {
  json out = json::array();
  for (const SlotInfo& s : loop.Slots()) {
    json j = {{"id", s.id}, {"state", s.busy ? "processing" : "idle"}};
    if (s.busy) {
      j["seq_id"] = s.seq_id;
      j["prompt_tokens"] = s.prompt_tokens;
      j["generated_tokens"] = s.generated;
      j["n_predict"] = s.n_predict;
      j["elapsed_s"] = s.elapsed_s;
    }
    out.push_back(std::move(j));
  }
  ex.Respond(200, "application/json", Dump(out));
  Count("/slots", 200);
}

void HttpServer::Impl::Tokenize(std::shared_ptr<HttpExchange> ex) {
  auto body = std::make_shared<std::string>(std::move(ex->request().body));
  transport->Offload([this, ex, body] {
    ApiError e;
    json answer;
    auto parsed = ParseUntrustedJson(*body, "the request body");
    if (!parsed.ok()) {
      e.message = parsed.status().message();
    } else if (!parsed->is_object() || !parsed->contains("content") || !(*parsed)["content"].is_string()) {
      e.param = "content";
      e.message = "'content': expected a string";
    } else if (parsed->contains("add_special") && !(*parsed)["add_special"].is_boolean()) {
      e.param = "add_special";
      e.message = "'add_special': expected a boolean";
    } else {
      const bool add_special = parsed->value("add_special", false);
      answer = {{"tokens", tokenizer.Encode((*parsed)["content"].get<std::string>(), add_special && tokenizer.add_bos(), true)}};
    }
    auto out = std::make_shared<std::string>(answer.is_null() ? std::string() : Dump(answer));
    ex->Post([this, ex, e, out] {
      if (out->empty()) return SendError(*ex, e);
      ex->Respond(200, "application/json", std::move(*out));
      Count("/tokenize", 200);
    });
  });
}

HttpServer::HttpServer(ServingLoop& loop, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                       const ModelConfig& config, const HttpServerOptions& opts)
    : impl_(std::make_unique<Impl>(loop, tokenizer, chat_template, config, opts)) {}

HttpServer::~HttpServer() = default;

Result<int> HttpServer::Bind() { return impl_->transport->Bind(); }

void HttpServer::Listen() { impl_->transport->Run(); }

void HttpServer::Stop() { impl_->transport->Stop(); }

HttpServer::Counters HttpServer::counters() const {
  Counters c;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    c = impl_->counters;
  }
  const HttpTransport::Counts t = impl_->transport->counts();
  c.connections = t.accepted;
  c.refused_connections = t.refused;
  c.timed_out = t.timed_out;
  return c;
}

}  // namespace strata
