// The OpenAI-compatible HTTP server (rank 0; the pipeline computes on every
// rank). Routes:
//   POST /v1/chat/completions   messages -> the model's chat template; answer
//                               and reasoning_content apart; SSE with stream
//   POST /v1/completions        prompt text (or token ids)
//   GET  /v1/models             the one model served
//   GET  /health                ok / shutting_down / error, with slot counts
//   GET  /metrics               Prometheus text (coordinator/metrics.h)
//   GET  /slots                 each sequence slot: idle, or the sequence in it
//   POST /tokenize              {"content": text} -> {"tokens": ids} (llama-server's)
// Chat answers are parsed for tool calls in the format the chat template
// teaches (coordinator/tool_calls.h) when the request gives tools; logprobs
// come from the last stage with each token (worker/sampler.h LogprobsOf).
// Requests run through a ServingLoop (coordinator/serving.h): at most
// `parallel` sequences at once, a bounded queue (503 + Retry-After beyond
// it), a per-request deadline (504), a body size limit (413). A client that
// resets its connection cancels its sequence, which frees its caches on every
// stage. Errors are OpenAI-style JSON with the 4xx/5xx status that fits; a
// stream that cannot finish ends with an error event and [DONE].
//
// Connections are served by coordinator/http_transport.h (one I/O thread;
// slow clients cost a descriptor, not a thread); parsing a request, the chat
// template and tokenization run on `prep_threads` worker threads, and the
// tokens come back from the loop by notification, never by a waiting thread.
//
//   HttpServer server(loop, tokenizer, &tmpl, config, opts);
//   STRATA_ASSIGN_OR_RETURN(int port, server.Bind());
//   server.Listen();          // blocks until Stop() (another thread, or a signal watcher)
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/chat_template.h"
#include "coordinator/http_transport.h"
#include "coordinator/metrics.h"
#include "coordinator/openai_api.h"
#include "coordinator/serving.h"
#include "model/model_files.h"
#include "model/tokenizer.h"

namespace strata {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (Bind returns it)
  std::vector<std::string> model_ids; // what "model" may say; the first is the one reported
  int64_t n_ctx = 4096;
  int max_tokens = 0;                 // per request; 0: the context
  size_t max_body_bytes = 8u << 20;
  double request_timeout_s = 600;     // queue + generation
  int prep_threads = 2;               // parsing, chat templates, tokenization
  int max_connections = 4096;         // open at once (503 beyond)
  int max_connections_per_client = 256;  // from one address (503 beyond); 0: no bound
  double header_timeout_s = 10;       // a request's line and headers must arrive within (408 beyond)
  double body_timeout_s = 10;         // its body within this plus 1 s per 64 KiB (408 beyond)
  // > 0: a stream that sent nothing for this long gets an SSE comment line
  // (": keep-alive"), which clients ignore: the supervised front's streams
  // stay open while it relaunches a failed job.
  double sse_keepalive_s = 0;
  // When set, adds to /health's JSON (and may change its "status"; the answer
  // is 200 only for "ok" and "recovering").
  std::function<void(nlohmann::json*)> health;
  int parallel = 1;                   // the loop's sequence slots (for /metrics)
  Metrics* metrics = nullptr;         // shared with the ServingLoop; null: the server keeps its own
};

class HttpServer {
 public:
  // `chat_template` may be null: /v1/chat/completions then answers 400.
  HttpServer(ServingLoop& loop, const Tokenizer& tokenizer, const ChatTemplate* chat_template, const ModelConfig& config,
             const HttpServerOptions& opts);
  ~HttpServer();
  // Binds the listening socket; returns the port.
  Result<int> Bind();
  // Serves until Stop().
  void Listen();
  // Stops listening, closes idle connections, lets responses being written
  // finish for up to a second, then closes the rest; Listen returns. Any thread.
  void Stop();

  struct Counters {
    uint64_t requests = 0, ok = 0, client_errors = 0, server_errors = 0, disconnects = 0;
    uint64_t connections = 0, refused_connections = 0, timed_out = 0;  // the transport's
  };
  Counters counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata
