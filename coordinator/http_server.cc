// The HTTP server of http_server.h, on cpp-httplib (Debian's
// libcpp-httplib-dev). Each connection is served by one of httplib's pool
// threads; a request's thread tokenizes, submits to the ServingLoop, and
// turns the tokens that come back into the response (or the SSE stream).
#include "coordinator/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>

#include <httplib.h>

#include "common/log.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The socket of the connection a request came on, found by its addresses
// (httplib does not hand it to handlers): used to notice a client that went
// away while its answer is computed. -1 when not found.
int FindClientSocket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    char ip[INET6_ADDRSTRLEN] = {0};
    int peer_port = -1, local_port = -1;
    if (peer.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&peer);
      inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
      peer_port = ntohs(a->sin_port);
      local_port = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&peer);
      inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
      peer_port = ntohs(a->sin6_port);
      local_port = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
    } else {
      continue;
    }
    if (peer_port == req.remote_port && local_port == req.local_port && req.remote_addr == ip) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// True when the peer closed its end (or the connection broke).
bool PeerClosed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

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

ApiError ApiErrorOf(const Status& st) {
  ApiError e;
  e.status = HttpStatusOf(st);
  e.message = st.message();
  if (e.status == 503) e.type = "server_overloaded";
  else if (e.status == 504) e.type = "timeout_error";
  else if (e.status >= 500) e.type = "server_error";
  return e;
}

}  // namespace

struct HttpServer::Impl {
  ServingLoop& loop;
  const Tokenizer& tokenizer;
  const ChatTemplate* chat_template;
  const ModelConfig& config;
  HttpServerOptions opts;
  ApiLimits limits;
  httplib::Server svr;
  std::time_t created = std::time(nullptr);
  mutable std::mutex mu;
  Counters counters;

  Impl(ServingLoop& l, const Tokenizer& t, const ChatTemplate* c, const ModelConfig& cfg, const HttpServerOptions& o)
      : loop(l), tokenizer(t), chat_template(c), config(cfg), opts(o) {
    if (opts.max_tokens <= 0) opts.max_tokens = static_cast<int>(std::min<int64_t>(opts.n_ctx, 1 << 30));
    limits.model_ids = opts.model_ids;
    limits.max_tokens = opts.max_tokens;
  }

  void Count(int status, bool disconnected = false) {
    std::lock_guard<std::mutex> lock(mu);
    ++counters.requests;
    if (disconnected) ++counters.disconnects;
    else if (status < 400) ++counters.ok;
    else if (status < 500) ++counters.client_errors;
    else ++counters.server_errors;
  }

  void SendError(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    if (e.status == 503) res.set_header("Retry-After", "1");
    res.set_content(Dump(ErrorJson(e)), "application/json");
    Count(e.status);
  }

  // A request checked and tokenized, ready for the loop.
  struct Prepared {
    CompletionRequest req;
    std::vector<int32_t> prompt;
    bool split_thinking = false, opens_thinking = false;
    int n_predict = 0;
  };

  std::variant<Prepared, ApiError> Prepare(const httplib::Request& http, ApiKind kind) {
    auto parsed = ParseCompletionRequest(http.body, kind, limits);
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
      for (int32_t id : p.req.prompt_ids)
        if (id >= config.vocab) {
          ApiError e;
          e.param = "prompt";
          e.message = "'prompt': token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(config.vocab);
          return e;
        }
      p.prompt = p.req.prompt_ids;
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

  json Usage(const ServingRequest& r) const {
    const int64_t prompt = static_cast<int64_t>(r.job().prompt.size());
    const int64_t completion = static_cast<int64_t>(r.job().ids.size());
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  static std::string FinishReason(const ServingRequest& r, const CompletionText& text) {
    if (text.stopped()) return "stop";
    return r.job().finish_reason == "length" ? "length" : "stop";
  }

  json Chunk(ApiKind kind, const std::string& id, const json& choice) const {
    return {{"id", id}, {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
            {"created", static_cast<int64_t>(std::time(nullptr))}, {"model", opts.model_ids[0]},
            {"choices", json::array({choice})}};
  }

  json DeltaChoice(ApiKind kind, const TextDelta& d, const json& finish) const {
    if (kind == ApiKind::kCompletion)
      return {{"index", 0}, {"text", d.content}, {"logprobs", nullptr}, {"finish_reason", finish}};
    json delta = json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty()) delta["content"] = d.content;
    return {{"index", 0}, {"delta", delta}, {"finish_reason", finish}};
  }

  // Waits up to 50 ms (or the deadline) for tokens, appends their text to
  // *out, and ends the sequence once a stop string is met. True when the
  // request has ended.
  static bool NextText(ServingRequest& r, CompletionText& text, Clock::time_point deadline, TextDelta* out) {
    std::vector<int32_t> ids;
    const bool ended = r.Wait(&ids, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    for (int32_t t : ids) {
      TextDelta d = text.Push(t);
      out->content += d.content;
      out->reasoning += d.reasoning;
      if (text.stopped()) r.Cancel();
    }
    return ended;
  }

  void Completion(const httplib::Request& http, httplib::Response& res, ApiKind kind) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(opts.request_timeout_s));
    auto prepared = Prepare(http, kind);
    if (auto* e = std::get_if<ApiError>(&prepared)) return SendError(res, *e);
    Prepared p = std::move(std::get<Prepared>(prepared));
    SequenceJob job;
    job.prompt = p.prompt;
    job.n_predict = p.n_predict;
    job.ignore_eos = p.req.ignore_eos;
    job.sampling = p.req.sampling;
    auto submitted = loop.Submit(std::move(job));
    if (!submitted.ok()) return SendError(res, ApiErrorOf(submitted.status()));
    std::shared_ptr<ServingRequest> r = *submitted;
    auto text = std::make_shared<CompletionText>(tokenizer, config.eos_ids, p.req.stop, p.split_thinking, p.opens_thinking);
    const std::string id = NewCompletionId(kind);
    const int fd = FindClientSocket(http);

    if (!p.req.stream) {
      TextDelta all;
      for (;;) {
        if (NextText(*r, *text, deadline, &all)) break;
        if (PeerClosed(fd)) {
          r->Cancel();
          Count(499, true);
          return;
        }
        if (Clock::now() >= deadline) {
          r->Cancel();
          return SendError(res, ApiErrorOf(DeadlineExceeded(RequestTimeoutMessage())));
        }
      }
      if (!r->error().ok()) return SendError(res, ApiErrorOf(r->error()));
      TextDelta rest = text->Finish();
      all.content += rest.content;
      all.reasoning += rest.reasoning;
      json choice;
      if (kind == ApiKind::kChat) {
        json message = {{"role", "assistant"}, {"content", all.content}};
        if (!all.reasoning.empty()) message["reasoning_content"] = all.reasoning;
        choice = {{"index", 0}, {"message", message}, {"finish_reason", FinishReason(*r, *text)}};
      } else {
        choice = {{"index", 0}, {"text", all.content}, {"logprobs", nullptr}, {"finish_reason", FinishReason(*r, *text)}};
      }
      json body = {{"id", id}, {"object", kind == ApiKind::kChat ? "chat.completion" : "text_completion"},
                   {"created", static_cast<int64_t>(std::time(nullptr))}, {"model", opts.model_ids[0]},
                   {"choices", json::array({choice})}, {"usage", Usage(*r)}};
      res.set_content(Dump(body), "application/json");
      Count(200);
      return;
    }

    // Streaming: one SSE event per piece of text, then the finish, usage when
    // asked, and [DONE]. A failed write means the client went away.
    const bool include_usage = p.req.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, r, text, kind, id, fd, deadline, include_usage](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string ev = "data: " + Dump(j) + "\n\n";
            return sink.write(ev.data(), ev.size());
          };
          auto gone = [&] {
            r->Cancel();
            Count(499, true);
            return false;
          };
          if (kind == ApiKind::kChat &&
              !send(Chunk(kind, id, {{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}})))
            return gone();
          bool ended = false;
          while (!ended) {
            TextDelta d;
            ended = NextText(*r, *text, deadline, &d);
            if (!d.empty() && !send(Chunk(kind, id, DeltaChoice(kind, d, nullptr)))) return gone();
            if (ended) break;
            if (PeerClosed(fd)) return gone();
            if (Clock::now() >= deadline) {
              r->Cancel();
              send(ErrorJson(ApiErrorOf(DeadlineExceeded(RequestTimeoutMessage()))));
              sink.done();
              Count(504);
              return true;
            }
          }
          if (!r->error().ok()) {
            send(ErrorJson(ApiErrorOf(r->error())));
            sink.done();
            Count(HttpStatusOf(r->error()));
            return true;
          }
          TextDelta rest = text->Finish();
          if (!rest.empty() && !send(Chunk(kind, id, DeltaChoice(kind, rest, nullptr)))) return gone();
          if (!send(Chunk(kind, id, DeltaChoice(kind, TextDelta{}, FinishReason(*r, *text))))) return gone();
          if (include_usage) {
            json u = Chunk(kind, id, json::object());
            u["choices"] = json::array();
            u["usage"] = Usage(*r);
            if (!send(u)) return gone();
          }
          static const std::string kDone = "data: [DONE]\n\n";
          if (!sink.write(kDone.data(), kDone.size())) return gone();
          sink.done();
          Count(200);
          return true;
        },
        [r](bool) { r->Cancel(); });  // ends the sequence however the stream ended (a no-op once done)
  }

  std::string RequestTimeoutMessage() const {
    char b[128];
    std::snprintf(b, sizeof b, "the request did not finish within %g s (--request-timeout)", opts.request_timeout_s);
    return b;
  }

  void Routes() {
    svr.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& s) { Completion(q, s, ApiKind::kChat); });
    svr.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& s) { Completion(q, s, ApiKind::kCompletion); });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& s) {
      json m = {{"id", opts.model_ids[0]}, {"object", "model"}, {"created", static_cast<int64_t>(created)}, {"owned_by", "strata"},
                {"meta", {{"architecture", config.arch}, {"n_ctx", opts.n_ctx}, {"n_layers", config.n_layers}, {"vocab", config.vocab}}}};
      s.set_content(Dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
      Count(200);
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& s) {
      const ServingLoop::Counts c = loop.counts();
      const Status failure = loop.failure();
      json j = {{"status", !failure.ok() ? "error" : c.stopping ? "shutting_down" : "ok"},
                {"running", c.running}, {"queued", c.queued}, {"finished", c.finished}};
      if (!failure.ok()) j["error"] = failure.message();
      s.status = j["status"] == "ok" ? 200 : 503;
      s.set_content(Dump(j), "application/json");
    });
    // Known paths with the wrong method: 405 rather than 404.
    auto wrong_method = [this](const char* allowed) {
      return [this, allowed](const httplib::Request& q, httplib::Response& s) {
        ApiError e;
        e.status = 405;
        e.message = q.path + " takes " + allowed;
        s.set_header("Allow", allowed);
        SendError(s, e);
      };
    };
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) svr.Get(path, wrong_method("POST"));
    for (const char* path : {"/v1/models", "/health"}) svr.Post(path, wrong_method("GET"));
    // httplib's own refusals (unknown path, body too large, unreadable
    // request) get an OpenAI-style body too.
    svr.set_error_handler([this](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return;
      ApiError e;
      e.status = s.status;
      if (s.status == 404) e.message = "no such endpoint: " + q.method + " " + q.path;
      else if (s.status == 413) e.message = "the request body is larger than " + std::to_string(opts.max_body_bytes) + " bytes (--max-body)";
      else e.message = "the request could not be read (HTTP " + std::to_string(s.status) + ")";
      if (s.status >= 500) e.type = "server_error";
      s.set_content(Dump(ErrorJson(e)), "application/json");
      Count(s.status);
    });
    svr.set_exception_handler([this](const httplib::Request&, httplib::Response& s, std::exception_ptr ep) {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      e.message = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& x) {
        e.message = std::string("internal error: ") + x.what();
      } catch (...) {
      }
      SendError(s, e);
    });
  }
};

HttpServer::HttpServer(ServingLoop& loop, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                       const ModelConfig& config, const HttpServerOptions& opts)
    : impl_(std::make_unique<Impl>(loop, tokenizer, chat_template, config, opts)) {
  if (impl_->opts.model_ids.empty()) impl_->opts.model_ids.push_back("strata");
  impl_->limits.model_ids = impl_->opts.model_ids;
  const int threads = std::max(2, impl_->opts.http_threads);
  impl_->svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  impl_->svr.set_payload_max_length(impl_->opts.max_body_bytes);
  impl_->svr.set_read_timeout(10);
  impl_->svr.set_write_timeout(10);
  impl_->svr.set_keep_alive_timeout(5);
  impl_->Routes();
}

HttpServer::~HttpServer() = default;

Result<int> HttpServer::Bind() {
  const HttpServerOptions& o = impl_->opts;
  int port = o.port;
  if (o.port == 0) {
    port = impl_->svr.bind_to_any_port(o.host);
    if (port <= 0) return IoError("cannot listen on " + o.host + ": " + std::strerror(errno));
  } else if (!impl_->svr.bind_to_port(o.host, o.port)) {
    return IoError("cannot listen on " + o.host + ":" + std::to_string(o.port) + " (in use, or not an address of this host)");
  }
  return port;
}

void HttpServer::Listen() { impl_->svr.listen_after_bind(); }

void HttpServer::Stop() { impl_->svr.stop(); }

HttpServer::Counters HttpServer::counters() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counters;
}

}  // namespace strata
