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

#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/log.h"

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

}  // namespace

struct HttpServer::Impl {
  ServingLoop& loop;
  const Tokenizer& tokenizer;
  const ChatTemplate* chat_template;
  const ModelConfig& config;
  HttpServerOptions opts;
  ApiLimits limits;
  std::time_t created = std::time(nullptr);
  mutable std::mutex mu;
  Counters counters;
  std::unique_ptr<HttpTransport> transport;

  Impl(ServingLoop& l, const Tokenizer& t, const ChatTemplate* c, const ModelConfig& cfg, const HttpServerOptions& o)
      : loop(l), tokenizer(t), chat_template(c), config(cfg), opts(o) {
    if (opts.max_tokens <= 0) opts.max_tokens = static_cast<int>(std::min<int64_t>(opts.n_ctx, 1 << 30));
    if (opts.model_ids.empty()) opts.model_ids.push_back("strata");
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

  void Count(int status, bool disconnected = false) {
    std::lock_guard<std::mutex> lock(mu);
    ++counters.requests;
    if (disconnected) ++counters.disconnects;
    else if (status < 400) ++counters.ok;
    else if (status < 500) ++counters.client_errors;
    else ++counters.server_errors;
  }

  void SendError(HttpExchange& ex, const ApiError& e, HttpHeaders headers = {}) {
    if (e.status == 503) headers.emplace_back("Retry-After", "1");
    ex.Respond(e.status, "application/json", Dump(ErrorJson(e)), headers);
    Count(e.status);
  }

  // A request checked and tokenized, ready for the loop.
  struct Prepared {
    CompletionRequest req;
    std::vector<int32_t> prompt;
    bool split_thinking = false, opens_thinking = false;
    int n_predict = 0;
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
      ChatOptions co;
      co.enable_thinking = p.req.enable_thinking;
      auto text = chat_template->Apply(p.req.conversation, co);
      if (!text.ok()) {
        ApiError e;
        e.param = "messages";
        e.message = "the chat template could not render these messages: " + text.status().message();
        return e;
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
};

// One completion request, from its body to the end of its answer. Lives on
// the I/O thread (but for Prepare, on a worker thread, and the loop's
// notification, which only posts).
class HttpServer::Impl::CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(Impl& s, std::shared_ptr<HttpExchange> ex, ApiKind kind)
      : s_(s), ex_(std::move(ex)), kind_(kind), id_(NewCompletionId(kind)) {}

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
    text_.emplace(s_.tokenizer, s_.config.eos_ids, p.req.stop, p.split_thinking, p.opens_thinking);
    SequenceJob job;
    job.prompt = std::move(p.prompt);
    job.n_predict = p.n_predict;
    job.ignore_eos = p.req.ignore_eos;
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
    const bool ended = req_->Take(&ids);
    TextDelta d;
    for (int32_t id : ids) {
      TextDelta t = text_->Push(id);
      d.content += t.content;
      d.reasoning += t.reasoning;
      if (text_->stopped()) req_->Cancel();
    }
    const bool failed = ended && !req_->error().ok();
    if (stream_) {
      if (!ex_->started()) {
        if (failed) return Fail(ApiErrorOf(req_->error()));  // never began: the error as the status
        if (!req_->started() && !ended) return;              // still queued
        ex_->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
        if (kind_ == ApiKind::kChat)
          ex_->Send(Event(s_.Chunk(kind_, id_, {{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}})));
      }
      if (!d.empty()) {
        ex_->Send(Event(s_.Chunk(kind_, id_, DeltaChoice(d, nullptr))));
        last_sent_ = Clock::now();
      }
    } else {
      all_.content += d.content;
      all_.reasoning += d.reasoning;
    }
    if (failed) return Fail(ApiErrorOf(req_->error()));  // after the text that came before it
    if (ended) Finish();
  }

  // The request ended well: the rest of the text, the finish, usage.
  void Finish() {
    over_ = true;
    TextDelta rest = text_->Finish();
    const std::string finish = text_->stopped() ? "stop" : req_->job().finish_reason == "length" ? "length" : "stop";
    if (stream_) {
      if (!rest.empty()) ex_->Send(Event(s_.Chunk(kind_, id_, DeltaChoice(rest, nullptr))));
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
      json choice;
      if (kind_ == ApiKind::kChat) {
        json message = {{"role", "assistant"}, {"content", all_.content}};
        if (!all_.reasoning.empty()) message["reasoning_content"] = all_.reasoning;
        choice = {{"index", 0}, {"message", message}, {"finish_reason", finish}};
      } else {
        choice = {{"index", 0}, {"text", all_.content}, {"logprobs", nullptr}, {"finish_reason", finish}};
      }
      json body = {{"id", id_}, {"object", kind_ == ApiKind::kChat ? "chat.completion" : "text_completion"},
                   {"created", static_cast<int64_t>(std::time(nullptr))}, {"model", s_.opts.model_ids[0]},
                   {"choices", json::array({choice})}, {"usage", Usage()}};
      ex_->Respond(200, "application/json", Dump(body));
    }
    s_.Count(200);
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
    s_.Count(e.status);
  }

  void ClientGone() {
    if (over_) return;
    over_ = true;
    if (req_) req_->Cancel();
    s_.Count(499, true);
  }

  json DeltaChoice(const TextDelta& d, const json& finish) const {
    if (kind_ == ApiKind::kCompletion) return {{"index", 0}, {"text", d.content}, {"logprobs", nullptr}, {"finish_reason", finish}};
    json delta = json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty()) delta["content"] = d.content;
    return {{"index", 0}, {"delta", delta}, {"finish_reason", finish}};
  }

  json Usage() const {
    const int64_t prompt = static_cast<int64_t>(req_->job().prompt.size());
    const int64_t completion = static_cast<int64_t>(req_->job().ids.size());
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  Impl& s_;
  std::shared_ptr<HttpExchange> ex_;
  const ApiKind kind_;
  const std::string id_;
  bool stream_ = false, include_usage_ = false;
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
  Count(200);
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
