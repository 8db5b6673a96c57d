// The OpenAI-compatible HTTP server (rank 0; the pipeline computes on every
// rank). Routes:
//   POST /v1/chat/completions   messages -> the model's chat template; answer
//                               and reasoning_content apart; SSE with stream
//   POST /v1/completions        prompt text (or token ids)
//   GET  /v1/models             the one model served
//   GET  /health                ok / shutting_down / error, with slot counts
// Requests run through a ServingLoop (coordinator/serving.h): at most
// `parallel` sequences at once, a bounded queue (503 + Retry-After beyond
// it), a per-request deadline (504), a body size limit (413). A client that
// disconnects cancels its sequence, which frees its caches on every stage.
// Errors are OpenAI-style JSON with the 4xx/5xx status that fits.
//
//   HttpServer server(loop, tokenizer, &tmpl, config, opts);
//   STRATA_ASSIGN_OR_RETURN(int port, server.Bind());
//   server.Listen();          // blocks until Stop() (another thread, or a signal watcher)
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/chat_template.h"
#include "coordinator/openai_api.h"
#include "coordinator/serving.h"
#include "model/model_files.h"
#include "model/tokenizer.h"

namespace httplib {
class Server;
}

namespace strata {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (Bind returns it)
  std::vector<std::string> model_ids; // what "model" may say; the first is the one reported
  int64_t n_ctx = 4096;
  int max_tokens = 0;                 // per request; 0: the context
  size_t max_body_bytes = 8u << 20;
  double request_timeout_s = 600;     // queue + generation
  int http_threads = 16;              // connections served at once
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
  // Stops listening and waits for the connections being served. Any thread.
  void Stop();

  struct Counters {
    uint64_t requests = 0, ok = 0, client_errors = 0, server_errors = 0, disconnects = 0;
  };
  Counters counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata
