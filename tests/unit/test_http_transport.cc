// The server's HTTP connection layer (coordinator/http_transport.h) against
// raw sockets on 127.0.0.1, where an HTTP client library would hide the
// bytes: request framing as RFC 9112 wants it (each bad case a 400 / 413 /
// 501 / 505 and a closed connection, at once), Expect: 100-continue,
// pipelined requests answered in order, a half-closed client answered, a
// reset client reported gone, deadlines for slow headers, slow bodies and
// clients that stop reading, the connection bounds (overall, per address),
// streams (chunked, and close-delimited for HTTP/1.0), and Stop. Deadlines
// are short here (fractions of a second); every wait is bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/http_transport.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A client socket to 127.0.0.1:port, from `from` (any 127.x.y.z address).
class RawClient {
 public:
  RawClient(int port, const char* from = "127.0.0.1") {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    inet_pton(AF_INET, from, &local.sin_addr);
    bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  // Closes with a reset (SO_LINGER 0).
  void Reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    Close();
  }
  bool Send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }

  // Reads until the server closes or `limit` passes; returns what came.
  std::string ReadAll(std::chrono::milliseconds limit = 5000ms) {
    std::string out;
    closed_ = false;
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (poll(&p, 1, std::max(1, left)) <= 0) continue;
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Reads until `text` has arrived (or the close, or `limit`).
  std::string ReadUntil(const std::string& text, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = Clock::now() + limit;
    while (buffered_.find(text) == std::string::npos && Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      buffered_.append(buf, static_cast<size_t>(n));
    }
    return buffered_;
  }
  // True when the server closed the connection (after ReadAll / ReadUntil).
  bool server_closed() const { return closed_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buffered_;
};

int StatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
  return std::stoi(response.substr(9, 3));
}

// Responses in `s`: status lines at the start of a line.
int Responses(const std::string& s) {
  int n = s.rfind("HTTP/1.1 ", 0) == 0 ? 1 : 0;
  for (size_t at = s.find("\nHTTP/1.1 "); at != std::string::npos; at = s.find("\nHTTP/1.1 ", at + 1)) ++n;
  return n;
}

int CountOf(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// A transport with a test handler on its own I/O thread:
//   /echo      200, the body's size and the method
//   /slow      200 after `delay_ms` in the query ("/slow?300")
//   /stream    a stream of 3 pieces, 50 ms apart
//   /flood     an endless stream
//   /hold      no answer until the client goes (counts it)
class TestServer {
 public:
  explicit TestServer(HttpTransportOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    transport_ = std::make_unique<HttpTransport>(o, [this](std::shared_ptr<HttpExchange> ex) { Handle(std::move(ex)); });
    auto port = transport_->Bind();
    EXPECT_TRUE(port.ok()) << port.status().message();
    port_ = port.ok() ? *port : 0;
    thread_ = std::thread([this] { transport_->Run(); });
  }
  ~TestServer() {
    transport_->Stop();
    thread_.join();
  }
  int port() const { return port_; }
  HttpTransport& transport() { return *transport_; }
  int gone() const { return gone_.load(); }
  int handled() const { return handled_.load(); }

 private:
  void Handle(std::shared_ptr<HttpExchange> ex) {
    ++handled_;
    const HttpRequest& q = ex->request();
    if (q.path == "/echo") {
      return ex->Respond(200, "text/plain", q.method + " " + std::to_string(q.body.size()) + " " + q.target);
    }
    if (q.path == "/slow") {
      const int ms = std::stoi(q.target.substr(q.target.find('?') + 1));
      auto keep = ex;
      ex->SetTimer(std::chrono::milliseconds(ms), [keep] { keep->Respond(200, "text/plain", "slow " + keep->request().target); });
      return;
    }
    if (q.path == "/stream") {
      ex->StartStream(200, "text/event-stream");
      auto n = std::make_shared<int>(0);
      auto step = std::make_shared<std::function<void()>>();
      std::weak_ptr<std::function<void()>> weak_step = step;
      *step = [ex, n, weak_step] {
        ex->Send("piece " + std::to_string(++*n) + "\n");
        if (*n == 3) return ex->End();
        if (auto s = weak_step.lock()) ex->SetTimer(50ms, *s);
      };
      ex->OnClientGone([step] {});  // keeps `step` alive while the stream runs
      return ex->SetTimer(50ms, *step);
    }
    if (q.path == "/flood") {  // 64 KiB every 5 ms until the client is gone
      ex->StartStream(200, "application/octet-stream");
      auto step = std::make_shared<std::function<void()>>();
      std::weak_ptr<std::function<void()>> weak_step = step;
      *step = [ex, weak_step] {
        ex->Send(std::string(64u << 10, 'x'));
        if (auto s = weak_step.lock()) ex->SetTimer(5ms, *s);
      };
      ex->OnClientGone([this, step] { ++gone_; });
      return (*step)();
    }
    if (q.path == "/hold") {
      ex->OnClientGone([this, ex] { ++gone_; });
      return;
    }
    ex->Respond(404, "text/plain", "no");
  }

  std::unique_ptr<HttpTransport> transport_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> gone_{0}, handled_{0};
};

std::string Get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n";
}

std::string Post(const std::string& target, const std::string& body, const std::string& extra = "") {
  return "POST " + target + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

TEST(HttpTransportTest, AnswersAndKeepsTheConnection) {
  TestServer srv;
  RawClient c(srv.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(Post("/echo", "hello")));
  std::string r = c.ReadUntil("POST 5 /echo");
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Length: 12\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Date: "), std::string::npos) << r;
  EXPECT_EQ(r.find("Connection: close"), std::string::npos) << r;
  // The same connection takes the next request.
  ASSERT_TRUE(c.Send(Get("/echo?again")));
  r = c.ReadUntil("GET 0 /echo?again");
  EXPECT_NE(r.find("GET 0 /echo?again"), std::string::npos) << r;
  // A chunked body is decoded.
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"));
  r = c.ReadUntil("POST 8 /echo");
  EXPECT_NE(r.find("POST 8 /echo"), std::string::npos) << r;
  // HEAD: the headers only.
  RawClient h(srv.port());
  ASSERT_TRUE(h.Send("HEAD /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  r = h.ReadAll();
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Length: 12\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.find("HEAD 0"), std::string::npos) << r;
  EXPECT_TRUE(h.server_closed());
}

// Each framing error of RFC 9112: its status, at once, and the connection
// closed (so that nothing after it is read as another request).
TEST(HttpTransportTest, FramingErrorsAreRefusedAtOnceAndClose) {
  HttpTransportOptions o;
  o.max_body_bytes = 1000;
  o.header_timeout_s = 30;  // a refusal that waited for a deadline would not come within the 3 s read
  TestServer srv(o);
  struct Case {
    const char* name;
    std::string request;
    int status;
  } cases[] = {
      {"two different Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
      {"Content-Length list that differs", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!", 400},
      {"Content-Length then chunked", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"chunked then Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
      {"gzip then Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", 400},
      {"Transfer-Encoding: gzip", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400},
      {"chunked, gzip", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
      {"chunked twice", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
      {"gzip, chunked", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
      {"Transfer-Encoding in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"Content-Length: -5", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400},
      {"Content-Length: +5", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400},
      {"Content-Length: 0x10", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\n", 400},
      {"Content-Length past 64 bits", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"a header line without a colon", "GET /echo HTTP/1.1\r\nHost: t\r\nBadLine\r\n\r\n", 400},
      {"white space before the colon", "GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length : 0\r\n\r\n", 400},
      {"a control character in a value", "GET /echo HTTP/1.1\r\nHost: t\r\nX: a\x01" "b\r\n\r\n", 400},
      {"a bare CR", "GET /echo HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400},
      {"a bad chunk size", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
      {"a chunk size past 64 bits", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n", 400},
      {"no Host in HTTP/1.1", "GET /echo HTTP/1.1\r\n\r\n", 400},
      {"two Host fields", "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"HTTP/2.0 in the request line", "GET /echo HTTP/2.0\r\nHost: t\r\n\r\n", 505},
      {"a malformed request line", "GET  /echo HTTP/1.1\r\nHost: t\r\n\r\n", 400},
      {"an unknown expectation", "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417},
      {"a declared body over the limit", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413},
      {"a chunked body over the limit",
       "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + std::string(1001, 'a') + "\r\n0\r\n\r\n", 413},
      {"header fields over the limit", "GET /echo HTTP/1.1\r\nHost: t\r\nX: " + std::string(20000, 'a') + "\r\n\r\n", 431},
  };
  for (const Case& c : cases) {
    RawClient cl(srv.port());
    ASSERT_TRUE(cl.connected());
    // A request after it: smuggled if the server read the first one's body as a request.
    cl.Send(c.request + Get("/echo?smuggled"));
    const auto t0 = Clock::now();
    const std::string r = cl.ReadAll(3000ms);
    EXPECT_EQ(StatusOf(r), c.status) << c.name << ": " << r.substr(0, 200);
    EXPECT_TRUE(cl.server_closed()) << c.name << ": the connection stayed open";
    EXPECT_LT(Clock::now() - t0, 2500ms) << c.name;
    EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos) << c.name << ": " << r.substr(0, 200);
    EXPECT_EQ(r.find("smuggled"), std::string::npos) << c.name << ": a second request was read";
    EXPECT_EQ(Responses(r), 1) << c.name << ": " << r;
  }
  // Identical Content-Length values are one (RFC 9112 6.3 allows either).
  RawClient same(srv.port());
  same.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  EXPECT_EQ(StatusOf(same.ReadAll()), 200);
  // A body of exactly the limit is taken.
  RawClient limit(srv.port());
  limit.Send(Post("/echo", std::string(1000, 'b'), "Connection: close\r\n"));
  EXPECT_NE(limit.ReadAll().find("POST 1000"), std::string::npos);
  EXPECT_EQ(srv.handled(), 2);  // no refused request reached the handler
}

// Expect: 100-continue: 100 and then the body; a body over the limit gets
// its 413 instead of the 100, without being sent.
TEST(HttpTransportTest, ExpectContinue) {
  HttpTransportOptions o;
  o.max_body_bytes = 1000;
  TestServer srv(o);
  RawClient ok(srv.port());
  ok.Send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  std::string r = ok.ReadUntil("\r\n\r\n");
  EXPECT_EQ(r, "HTTP/1.1 100 Continue\r\n\r\n");
  ok.Send("hello");
  r = ok.ReadUntil("POST 5");
  EXPECT_NE(r.find("HTTP/1.1 200 OK"), std::string::npos) << r;

  RawClient big(srv.port());
  big.Send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n");
  r = big.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 413) << r;
  EXPECT_EQ(r.find("100 Continue"), std::string::npos) << r;
  EXPECT_TRUE(big.server_closed());
}

// Three requests written at once are answered, in order, each in full
// (/slow?200 answers after the two requests behind it have arrived).
TEST(HttpTransportTest, PipelinedRequestsAreAnsweredInOrder) {
  TestServer srv;
  RawClient c(srv.port());
  ASSERT_TRUE(c.Send(Get("/slow?200") + Post("/echo", "abc") + Get("/slow?10") + Get("/echo?last", "Connection: close\r\n")));
  const std::string r = c.ReadAll(5000ms);
  EXPECT_EQ(CountOf(r, "HTTP/1.1 200 OK"), 4) << r;
  const size_t a = r.find("slow /slow?200"), b = r.find("POST 3 /echo"), d = r.find("slow /slow?10"), e = r.find("GET 0 /echo?last");
  ASSERT_TRUE(a != std::string::npos && b != std::string::npos && d != std::string::npos && e != std::string::npos) << r;
  EXPECT_TRUE(a < b && b < d && d < e) << r;
  EXPECT_TRUE(c.server_closed());  // after the one that asked for it
}

// A client that shuts its sending side after the request is answered; one
// that resets the connection is reported gone.
TEST(HttpTransportTest, HalfClosedClientsAreAnsweredResetOnesAreGone) {
  TestServer srv;
  RawClient half(srv.port());
  half.Send(Get("/slow?300"));
  half.ShutdownWrite();
  std::string r = half.ReadAll(5000ms);
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("slow /slow?300"), std::string::npos) << r;
  EXPECT_TRUE(half.server_closed());
  // A half-closed stream too.
  RawClient half_stream(srv.port());
  half_stream.Send(Get("/stream"));
  half_stream.ShutdownWrite();
  r = half_stream.ReadAll(5000ms);
  EXPECT_NE(r.find("piece 3"), std::string::npos) << r;
  EXPECT_NE(r.find("0\r\n\r\n"), std::string::npos) << r;

  RawClient reset(srv.port());
  reset.Send(Get("/hold"));
  const auto until = Clock::now() + 5s;
  while (srv.handled() < 3 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  reset.Reset();
  while (srv.gone() < 1 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(srv.gone(), 1);
  EXPECT_EQ(srv.transport().counts().open, 0);
}

// Slow headers get a 408 at the header deadline however steadily they
// trickle; an idle connection is closed without a word; a slow body gets a
// 408 once it falls below the minimum rate; a client that stops reading a
// response is given up (and the handler told).
TEST(HttpTransportTest, DeadlinesForSlowClients) {
  HttpTransportOptions o;
  o.header_timeout_s = 0.6;
  o.body_timeout_s = 0.6;
  o.body_min_rate = 1000;  // bytes/s after the first 0.6 s
  o.write_timeout_s = 0.6;
  TestServer srv(o);

  RawClient trickle(srv.port()), idle(srv.port()), slow_body(srv.port()), steady_body(srv.port());
  const std::string req = Get("/echo");
  slow_body.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
  steady_body.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1500\r\nConnection: close\r\n\r\n");
  const auto t0 = Clock::now();
  // For 1 s: one byte of the request every 50 ms (all of it would need
  // 1.5 s), the slow body at 20 bytes/s, the steady one at 1500 bytes/s.
  bool trickle_answered = false;
  for (int i = 0; i < 20; ++i) {
    pollfd p{trickle.fd(), POLLIN, 0};
    trickle_answered = trickle_answered || poll(&p, 1, 0) > 0;
    if (!trickle_answered) trickle.Send(std::string(1, req[static_cast<size_t>(i)]));
    slow_body.Send("x");
    steady_body.Send(std::string(75, 'y'));
    std::this_thread::sleep_for(50ms);
  }
  std::string r = trickle.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 408) << r;
  EXPECT_TRUE(trickle.server_closed());
  EXPECT_LT(Clock::now() - t0, 2500ms);
  r = idle.ReadAll(3000ms);
  EXPECT_EQ(r, "");
  EXPECT_TRUE(idle.server_closed());
  r = slow_body.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 408) << r;
  r = steady_body.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("POST 1500"), std::string::npos) << r;
  EXPECT_GE(srv.transport().counts().timed_out, 2u);

  // A client that does not read an endless stream: the writes stall, the
  // client is given up and the handler told.
  RawClient stalled(srv.port());
  stalled.Send(Get("/flood"));
  const auto until = Clock::now() + 10s;
  while (srv.gone() < 1 && Clock::now() < until) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(srv.gone(), 1);
}

// The bounds: connections past max_connections_per_client from one address
// get a 503 at once (and those from another address are served); past
// max_connections, every address does.
TEST(HttpTransportTest, ConnectionBounds) {
  HttpTransportOptions o;
  o.max_connections = 12;
  o.max_connections_per_client = 5;
  o.header_timeout_s = 30;
  TestServer srv(o);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 5; ++i) held.push_back(std::make_unique<RawClient>(srv.port(), "127.0.0.2"));
  auto wait_open = [&](int n) {
    const auto until = Clock::now() + 5s;
    while (srv.transport().counts().open < n && Clock::now() < until) std::this_thread::sleep_for(5ms);
    return srv.transport().counts().open;
  };
  ASSERT_EQ(wait_open(5), 5);
  RawClient sixth(srv.port(), "127.0.0.2");
  sixth.Send(Get("/echo"));
  std::string r = sixth.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_NE(r.find("--max-connections-per-client"), std::string::npos) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
  {
    RawClient other(srv.port(), "127.0.0.3");
    other.Send(Get("/echo", "Connection: close\r\n"));
    EXPECT_EQ(StatusOf(other.ReadAll()), 200);
  }
  const auto closed = Clock::now() + 5s;
  while (srv.transport().counts().open > 5 && Clock::now() < closed) std::this_thread::sleep_for(5ms);
  // Fill the server.
  for (int i = 0; i < 7; ++i) held.push_back(std::make_unique<RawClient>(srv.port(), ("127.0.1." + std::to_string(i + 1)).c_str()));
  ASSERT_EQ(wait_open(12), 12);
  RawClient over(srv.port(), "127.0.0.4");
  over.Send(Get("/echo"));
  r = over.ReadAll(3000ms);
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_NE(r.find("--max-connections)"), std::string::npos) << r;
  // One closes: room again.
  held.pop_back();
  const auto until = Clock::now() + 5s;
  while (srv.transport().counts().open > 11 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  RawClient again(srv.port(), "127.0.0.4");
  again.Send(Get("/echo", "Connection: close\r\n"));
  EXPECT_EQ(StatusOf(again.ReadAll()), 200);
  EXPECT_GE(srv.transport().counts().refused, 2u);
}

// A stream is chunked to an HTTP/1.1 client and close-delimited to an
// HTTP/1.0 one; keep-alive for HTTP/1.0 only when asked.
TEST(HttpTransportTest, StreamsAndHttp10) {
  TestServer srv;
  RawClient c11(srv.port());
  c11.Send(Get("/stream"));
  std::string r = c11.ReadUntil("0\r\n\r\n");
  EXPECT_NE(r.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("8\r\npiece 1\n\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("8\r\npiece 3\n\r\n0\r\n\r\n"), std::string::npos) << r;
  RawClient c10(srv.port());
  c10.Send("GET /stream HTTP/1.0\r\n\r\n");
  r = c10.ReadAll(5000ms);
  EXPECT_EQ(r.find("Transfer-Encoding"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\n\r\npiece 1\npiece 2\npiece 3\n"), std::string::npos) << r;
  EXPECT_TRUE(c10.server_closed());
  RawClient keep10(srv.port());
  keep10.Send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  r = keep10.ReadUntil("GET 0");
  EXPECT_NE(r.find("Connection: keep-alive\r\n"), std::string::npos) << r;
  keep10.Send("GET /echo?2 HTTP/1.0\r\n\r\n");
  r = keep10.ReadAll(3000ms);
  EXPECT_NE(r.find("GET 0 /echo?2"), std::string::npos) << r;
  EXPECT_TRUE(keep10.server_closed());
}

// Stop: idle connections close at once, a response being written finishes,
// one that does not finish within stop_drain_s is given up; Run returns.
TEST(HttpTransportTest, StopDrainsThenCloses) {
  HttpTransportOptions o;
  o.stop_drain_s = 0.5;
  auto srv = std::make_unique<TestServer>(o);
  RawClient idle(srv->port()), answered(srv->port()), held(srv->port());
  answered.Send(Get("/slow?200"));
  held.Send(Get("/hold"));
  const auto until = Clock::now() + 5s;
  while (srv->handled() < 2 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  const auto t0 = Clock::now();
  srv->transport().Stop();
  EXPECT_EQ(idle.ReadAll(3000ms), "");
  EXPECT_TRUE(idle.server_closed());
  const std::string r = answered.ReadAll(3000ms);
  EXPECT_NE(r.find("slow /slow?200"), std::string::npos) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  held.ReadAll(3000ms);
  EXPECT_TRUE(held.server_closed());
  srv.reset();  // joins Run
  EXPECT_LT(Clock::now() - t0, 3s);
}

}  // namespace
}  // namespace strata
