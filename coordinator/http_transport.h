// The server's HTTP/1.1 connection layer (rank 0): Boost.Beast's request
// parser over Boost.Asio, every socket on one I/O thread, so that a slow or
// idle client costs a file descriptor and a few KB, never a thread.
//
// It reads each request under deadlines (the headers within
// `header_timeout_s` of the connection opening or of the previous response;
// the body at a minimum rate), bounds the open connections (overall and per
// client address: beyond, 503 at once), answers what is wrong with the
// request's framing itself (RFC 9112: conflicting or invalid Content-Length /
// Transfer-Encoding -> 400 and close; a declared body over `max_body_bytes`
// -> 413 at once, without reading it, also for Expect: 100-continue), and
// hands each complete request to the handler. Requests on one connection
// are answered in order: a pipelined request waits until the one before it
// is answered. A client that half-closes its side after its request is still
// answered; one that resets the connection, or stops reading a response, is
// reported gone. Knows nothing of OpenAI (coordinator/http_server.h does).
//
//   HttpTransport t(opts, [](std::shared_ptr<HttpExchange> ex) {
//     ex->Respond(200, "text/plain", "ok");       // on the I/O thread; may also answer later
//   });
//   STRATA_ASSIGN_OR_RETURN(int port, t.Bind());
//   t.Run();          // the I/O thread, until Stop() from any thread
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace strata {

struct HttpTransportOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (Bind returns it)
  size_t max_body_bytes = 8u << 20;       // 413 beyond
  size_t max_header_bytes = 16u << 10;    // request line + header fields; 431 beyond
  int max_connections = 4096;             // open at once; beyond, 503 and close
  int max_connections_per_client = 256;   // from one address; 0: no bound
  double header_timeout_s = 10;           // connection open / previous response -> end of the headers; 408 beyond
  double body_timeout_s = 10;             // the body: this plus 1 s per `body_min_rate` bytes; 408 beyond
  size_t body_min_rate = 64u << 10;       // bytes/s
  double write_timeout_s = 10;            // a response that makes no progress this long: the client is gone
  double stop_drain_s = 1;                // Stop(): how long responses still being written get
  int worker_threads = 2;                 // Offload's threads
  // The body of the answers the transport gives itself (400, 408, 413, 431,
  // 503, ...): (status, message) -> (content type, body). Plain text when unset.
  std::function<std::pair<std::string, std::string>(int status, const std::string& message)> error_body;
};

struct HttpRequest {
  std::string method;   // as sent: "GET", "POST", ...
  std::string target;   // as sent: "/v1/models?x=1"
  std::string path;     // the target without its query
  int version = 11;     // 10 or 11
  std::string body;     // the whole body (chunked bodies decoded)
  std::string client;   // the client's address
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

class HttpConnection;

// One request and its response. Every method but Post is for the I/O thread
// only (the handler, a Post-ed function, a timer); once the response is
// complete or the client gone, they do nothing.
class HttpExchange {
 public:
  HttpExchange(std::shared_ptr<HttpConnection> conn, uint64_t seq, HttpRequest request);
  HttpRequest& request() { return request_; }

  // A whole response. Content-Length, Date and Connection are added.
  void Respond(int status, std::string_view content_type, std::string body, const HttpHeaders& headers = {});
  // A streamed response (chunked; to an HTTP/1.0 client, ended by closing):
  // StartStream, any number of Send, then End.
  void StartStream(int status, std::string_view content_type, const HttpHeaders& headers = {});
  void Send(std::string_view data);
  void End();
  bool started() const { return started_; }
  bool done() const;  // the response is complete, or the client gone

  // `fn` runs once, on the I/O thread, if the client goes away before the
  // response is complete (a reset, a failed or stalled write).
  void OnClientGone(std::function<void()> fn);
  // `fn` runs on the I/O thread after `delay`, unless the response completed
  // or the client went away first. One timer per exchange (a new call replaces it).
  void SetTimer(std::chrono::steady_clock::duration delay, std::function<void()> fn);
  // Runs `fn` on the I/O thread. Any thread; dropped once the transport has stopped.
  void Post(std::function<void()> fn);

 private:
  friend class HttpConnection;
  std::shared_ptr<HttpConnection> conn_;
  uint64_t seq_;
  HttpRequest request_;
  bool started_ = false;
  std::function<void()> on_gone_;
};

class HttpTransport {
 public:
  using Handler = std::function<void(std::shared_ptr<HttpExchange>)>;
  HttpTransport(const HttpTransportOptions& opts, Handler handler);
  ~HttpTransport();
  // Binds the listening socket; returns the port. Raises the process's open
  // file limit to fit max_connections (or lowers max_connections to fit it).
  Result<int> Bind();
  // Serves on the calling thread until Stop().
  void Run();
  // Stops accepting, closes idle connections, gives responses still being
  // written `stop_drain_s`, then closes the rest and makes Run return. Any thread.
  void Stop();
  // Runs `work` on one of the worker threads (CPU work a handler must not do
  // on the I/O thread); it posts its result back with HttpExchange::Post.
  void Offload(std::function<void()> work);

  struct Counts {
    int open = 0;           // connections open now
    uint64_t accepted = 0;  // connections taken
    uint64_t refused = 0;   // connections refused (the bounds)
    uint64_t timed_out = 0; // requests that did not arrive in time
  };
  Counts counts() const;  // any thread
  const HttpTransportOptions& options() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace strata
