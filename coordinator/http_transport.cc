// The HTTP/1.1 connection layer of http_transport.h (rank 0), on Boost.Beast
// (Debian's libboost-dev): Beast parses each request (its parser is strict:
// a header line without a colon, white space before the colon, bare LF,
// conflicting Content-Length values, a bad chunk size are all errors);
// this file adds what RFC 9112 asks beyond it (Transfer-Encoding with
// Content-Length, a last coding other than chunked, Transfer-Encoding in
// HTTP/1.0, Host), the deadlines, the connection bounds, and writes the
// responses itself (status line, headers, chunks: a few lines).
//
// One I/O thread runs everything here; a connection is a state machine:
//
//   header -> [100 Continue] -> body -> handling (the response is written,
//   in pieces for a stream) -> header (keep-alive, maybe already buffered:
//   pipelining) ... -> closing (send side shut, the rest read and dropped for
//   a moment so that the client sees the last response, not a reset)
//
// Each connection has three timers: the deadline of the read or write in
// progress, a watch while its request is handled (a reset connection is a
// client gone: its work is cancelled), and the handler's own (SetTimer).
#include "coordinator/http_transport.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "common/log.h"

namespace strata {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kWatchPeriod = std::chrono::milliseconds(100);
constexpr auto kLinger = std::chrono::seconds(2);          // closing: how long the rest is read and dropped
constexpr auto kRefusalLinger = std::chrono::seconds(1);
constexpr size_t kMaxDiscard = 1u << 20;                   // closing: bytes read and dropped at most
constexpr int kMaxRefusing = 64;                           // refused connections being answered at once
constexpr rlim_t kSpareFds = 256;                          // files, MPI, pipes besides the connections

Clock::duration Seconds(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

std::string SecondsText(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", s);
  return b;
}

std::string HttpDate() {
  const std::time_t now = std::time(nullptr);
  std::tm g{};
  gmtime_r(&now, &g);
  char b[64];
  std::strftime(b, sizeof b, "%a, %d %b %Y %H:%M:%S GMT", &g);
  return b;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view View(beast::string_view s) { return std::string_view(s.data(), s.size()); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A connection reset (or closed both ways): POLLHUP / POLLERR. A peer that
// only shut its sending side (POLLRDHUP) is still there to read the answer.
bool PeerReset(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

// The answer to a Beast parse error: (status, message).
std::pair<int, std::string> ParseErrorAnswer(const beast::error_code& ec, const HttpTransportOptions& o) {
  switch (static_cast<http::error>(ec.value())) {
    case http::error::header_limit:
      return {431, "the request line and header fields exceed " + std::to_string(o.max_header_bytes) + " bytes"};
    case http::error::body_limit:
      return {413, "the request body is larger than " + std::to_string(o.max_body_bytes) + " bytes (--max-body)"};
    case http::error::bad_content_length:
      return {400, "invalid framing: Content-Length is not a number, or differs from another Content-Length, or "
                   "comes with Transfer-Encoding"};
    case http::error::bad_transfer_encoding:
      return {400, "invalid framing: Transfer-Encoding comes with Content-Length, or twice"};
    case http::error::bad_field:
      return {400, "a header line is malformed (no colon, or white space before it)"};
    case http::error::bad_value:
      return {400, "a header field value holds a character not allowed there"};
    case http::error::bad_line_ending:
      return {400, "a line does not end in CRLF"};
    case http::error::bad_method:
    case http::error::bad_target:
      return {400, "the request line is malformed"};
    case http::error::bad_version:
      return {505, "the request line does not name HTTP/1.0 or HTTP/1.1"};
    case http::error::bad_chunk:
    case http::error::bad_chunk_extension:
      return {400, "invalid framing: the chunked body is malformed"};
    default:
      return {400, "the request could not be parsed: " + ec.message()};
  }
}

}  // namespace

// Post() from any thread into the I/O thread while it exists.
class HttpPoster {
 public:
  explicit HttpPoster(asio::io_context* io) : io_(io) {}
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (io_ != nullptr) asio::post(*io_, std::move(fn));
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    io_ = nullptr;
  }

 private:
  std::mutex mu_;
  asio::io_context* io_;
};

struct HttpTransport::Impl {
  HttpTransportOptions opts;
  Handler handler;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_backoff{io};
  asio::steady_timer stop_timer{io};
  std::shared_ptr<HttpPoster> poster = std::make_shared<HttpPoster>(&io);
  asio::thread_pool workers;
  // The I/O thread's:
  std::unordered_set<HttpConnection*> conns;
  std::unordered_map<std::string, int> per_client;
  int open = 0, refusing = 0;
  bool stopping = false;
  Clock::time_point last_accept_error{};
  char discard[4096];  // closing connections read into it (one thread: never two at once)
  // For counts(), any thread:
  std::atomic<int> open_now{0};
  std::atomic<uint64_t> accepted{0}, refused{0}, timed_out{0};

  Impl(const HttpTransportOptions& o, Handler h)
      : opts(o), handler(std::move(h)), workers(static_cast<size_t>(std::max(1, o.worker_threads))) {}

  std::pair<std::string, std::string> ErrorBody(int status, const std::string& message) const {
    if (opts.error_body) return opts.error_body(status, message);
    return {"text/plain; charset=utf-8", message + "\n"};
  }

  void Accept();
  void OnAccepted(tcp::socket s);
  void Forget(HttpConnection* c, bool counted, const std::string& client);
  void BeginStop();
};

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(HttpTransport::Impl* t, tcp::socket s, std::string client, bool counted)
      : t_(t),
        poster_(t->poster),
        socket_(std::move(s)),
        client_(std::move(client)),
        counted_(counted),
        io_timer_(t->io),
        watch_timer_(t->io),
        app_timer_(t->io),
        idle_since_(Clock::now()) {}

  void Start() { ReadHeader(); }

  // A connection over the bounds: one 503, then closed.
  void Refuse(const std::string& message) {
    refusal_ = true;
    Fail(503, message, {{"Retry-After", "1"}});
  }

  // The transport stops: nothing more is read; a response being written is
  // finished (and the connection then closed).
  void OnStop() {
    if (phase_ == Phase::kHeader || phase_ == Phase::kBody) return Close();
    keep_alive_ = false;
  }

  // The client went away (or the transport gave up on it): the handler is told.
  void Gone() {
    std::function<void()> fn;
    if (exchange_ && !response_complete_) fn = std::move(exchange_->on_gone_);
    Close();
    if (fn) fn();
  }

  // --- HttpExchange's operations (I/O thread) ---
  bool Current(uint64_t seq) const { return !closed_ && exchange_ != nullptr && seq == seq_ && !response_complete_; }

  void Respond(uint64_t seq, int status, std::string_view type, std::string body, const HttpHeaders& headers) {
    if (!Current(seq)) return;
    if (t_->stopping) keep_alive_ = false;
    std::string bytes = Head(status, type, headers, body.size(), false);
    if (!head_) bytes += body;
    Queue(std::move(bytes), true);
  }

  void StartStream(uint64_t seq, int status, std::string_view type, const HttpHeaders& headers) {
    if (!Current(seq)) return;
    if (t_->stopping || http10_) keep_alive_ = false;  // HTTP/1.0 has no chunks: the end of the body is the close
    Queue(Head(status, type, headers, std::nullopt, !http10_), false);
  }

  void Send(uint64_t seq, std::string_view data) {
    if (!Current(seq) || data.empty() || head_) return;  // an empty chunk would end the stream
    if (http10_) return Queue(std::string(data), false);
    char size[24];
    std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::string bytes = size;
    bytes.append(data);
    bytes += "\r\n";
    Queue(std::move(bytes), false);
  }

  void End(uint64_t seq) {
    if (!Current(seq)) return;
    Queue(http10_ || head_ ? std::string() : std::string("0\r\n\r\n"), true);
  }

  void SetAppTimer(uint64_t seq, Clock::duration delay, std::function<void()> fn) {
    if (!Current(seq)) return;
    const uint64_t gen = ++app_gen_;
    app_timer_.expires_after(delay);
    app_timer_.async_wait([self = shared_from_this(), gen, seq, fn = std::move(fn)](const beast::error_code& ec) {
      if (ec || gen != self->app_gen_ || !self->Current(seq)) return;
      fn();
    });
  }

  HttpPoster& poster() { return *poster_; }

 private:
  enum class Phase { kHeader, kBody, kHandling, kClosing };

  // --- reading a request ---
  void ReadHeader() {
    phase_ = Phase::kHeader;
    if (t_->stopping) return Close();
    // RFC 9112 2.2: an empty line before a request line is ignored.
    while (buffer_.size() >= 2 && std::string_view(static_cast<const char*>(buffer_.data().data()), 2) == "\r\n")
      buffer_.consume(2);
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(std::min<size_t>(t_->opts.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(t_->opts.max_body_bytes);
    ArmIo(idle_since_ + Seconds(t_->opts.header_timeout_s));
    http::async_read_header(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnHeader(ec);
    });
  }

  void OnHeader(beast::error_code ec) {
    if (closed_) return;
    DisarmIo();
    if (ec) {
      if (timed_out_) {
        if (buffer_.size() == 0) return Close();  // nothing sent: an idle keep-alive connection
        ++t_->timed_out;
        return Fail(408, "the request line and headers did not arrive within " + SecondsText(t_->opts.header_timeout_s) + " s");
      }
      return OnReadError(ec);
    }
    if (auto bad = CheckFraming()) return Fail(bad->first, bad->second);
    if (parser_->is_done()) return Dispatch();
    if (expect_continue_) return SendContinue();
    ReadBody();
  }

  // What RFC 9112 asks beyond Beast's parser. Returns (status, message) for
  // a request to refuse (the connection is then closed).
  std::optional<std::pair<int, std::string>> CheckFraming() {
    const auto& m = parser_->get();
    http10_ = m.version() == 10;
    expect_continue_ = false;
    std::vector<std::string> codings;
    bool has_te = false;
    const auto te = m.equal_range(http::field::transfer_encoding);
    for (auto it = te.first; it != te.second; ++it) {
      has_te = true;
      std::string_view v = View(it->value());
      while (!v.empty()) {
        const size_t comma = v.find(',');
        std::string_view item = Trim(v.substr(0, comma));
        item = Trim(item.substr(0, item.find(';')));
        if (!item.empty()) codings.push_back(Lower(item));
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
      }
    }
    if (has_te) {
      if (http10_) return std::make_pair(400, std::string("invalid framing: Transfer-Encoding in an HTTP/1.0 request"));
      if (m.count(http::field::content_length) > 0)
        return std::make_pair(400, std::string("invalid framing: both Content-Length and Transfer-Encoding"));
      if (codings.empty() || codings.back() != "chunked")
        return std::make_pair(400, "invalid framing: the last transfer coding must be chunked (got '" +
                                       (codings.empty() ? std::string() : codings.back()) + "')");
      if (std::count(codings.begin(), codings.end(), "chunked") > 1)
        return std::make_pair(400, std::string("invalid framing: chunked is applied more than once"));
      if (codings.size() > 1) return std::make_pair(501, "the transfer coding '" + codings.front() + "' is not supported (only chunked)");
    }
    const size_t hosts = m.count(http::field::host);
    if (hosts > 1 || (!http10_ && hosts == 0))
      return std::make_pair(400, std::string(hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header"));
    if (m.count(http::field::expect) > 0) {
      if (m.count(http::field::expect) > 1 || Lower(Trim(View(m[http::field::expect]))) != "100-continue")
        return std::make_pair(417, std::string("only 'Expect: 100-continue' is understood"));
      expect_continue_ = !http10_;
    }
    return std::nullopt;
  }

  void SendContinue() {
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    ArmIo(Clock::now() + Seconds(t_->opts.write_timeout_s));
    asio::async_write(socket_, asio::buffer(kContinue), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (self->closed_) return;
      self->DisarmIo();
      if (ec) return self->Close();
      self->ReadBody();
    });
  }

  void ReadBody() {
    phase_ = Phase::kBody;
    body_start_ = Clock::now();
    ReadBodySome();
  }

  // The body must come at `body_min_rate` on average after the first
  // `body_timeout_s`: the deadline moves 1 s further for each
  // `body_min_rate` bytes received.
  void ReadBodySome() {
    const double got = static_cast<double>(parser_->get().body().size());
    const double allowed = t_->opts.body_timeout_s + got / static_cast<double>(std::max<size_t>(1, t_->opts.body_min_rate));
    ArmIo(body_start_ + Seconds(allowed));
    http::async_read_some(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnBody(ec);
    });
  }

  void OnBody(beast::error_code ec) {
    if (closed_) return;
    DisarmIo();
    if (ec) {
      if (timed_out_) {
        ++t_->timed_out;
        return Fail(408, "the request body did not arrive in time (" + SecondsText(t_->opts.body_timeout_s) + " s, then at least " +
                             std::to_string(t_->opts.body_min_rate) + " bytes/s)");
      }
      return OnReadError(ec);
    }
    if (parser_->is_done()) return Dispatch();
    ReadBodySome();
  }

  void OnReadError(const beast::error_code& ec) {
    // The client closed between requests, or in the middle of one (nobody
    // to answer), or the connection broke.
    if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec.category() != http::make_error_code(http::error::end_of_stream).category())
      return Close();
    const auto [status, message] = ParseErrorAnswer(ec, t_->opts);
    Fail(status, message);
  }

  void Dispatch() {
    auto& m = parser_->get();
    HttpRequest r;
    r.method = std::string(m.method_string());
    r.target = std::string(m.target());
    r.path = r.target.substr(0, r.target.find('?'));
    r.version = m.version();
    r.body = std::move(m.body());
    r.client = client_;
    keep_alive_ = parser_->keep_alive() && !t_->stopping;
    head_ = m.method() == http::verb::head;
    parser_.reset();
    phase_ = Phase::kHandling;
    response_complete_ = false;
    exchange_ = std::make_shared<HttpExchange>(shared_from_this(), ++seq_, std::move(r));
    StartWatch();
    std::shared_ptr<HttpExchange> ex = exchange_;
    t_->handler(ex);
  }

  // --- writing ---
  std::string Head(int status, std::string_view type, const HttpHeaders& headers, std::optional<size_t> length, bool chunked) const {
    std::string h = "HTTP/1.1 " + std::to_string(status) + " " +
                    std::string(http::obsolete_reason(static_cast<http::status>(status))) + "\r\nDate: " + HttpDate() + "\r\n";
    if (!type.empty()) h += "Content-Type: " + std::string(type) + "\r\n";
    for (const auto& [name, value] : headers) h += name + ": " + value + "\r\n";
    if (length) h += "Content-Length: " + std::to_string(*length) + "\r\n";
    if (chunked) h += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_) h += "Connection: close\r\n";
    else if (http10_) h += "Connection: keep-alive\r\n";
    return h + "\r\n";
  }

  // A request refused before it reached the handler: the answer, then close.
  void Fail(int status, const std::string& message, const HttpHeaders& headers = {}) {
    parser_.reset();
    keep_alive_ = false;
    phase_ = Phase::kHandling;
    exchange_.reset();
    const auto [type, body] = t_->ErrorBody(status, message);
    out_ = Head(status, type, headers, body.size(), false) + body;
    response_complete_ = true;
    Flush();
  }

  void Queue(std::string bytes, bool complete) {
    out_ += bytes;
    if (complete) response_complete_ = true;
    Flush();
  }

  void Flush() {
    if (writing_ || closed_) return;
    if (out_.empty()) {
      if (response_complete_ && phase_ == Phase::kHandling) ResponseDone();
      return;
    }
    wbuf_ = std::move(out_);
    out_.clear();
    wpos_ = 0;
    writing_ = true;
    WriteSome();
  }

  // A write that makes no progress for write_timeout_s: the client stopped
  // reading (or is gone).
  void WriteSome() {
    ArmIo(Clock::now() + Seconds(t_->opts.write_timeout_s));
    socket_.async_write_some(asio::buffer(wbuf_.data() + wpos_, wbuf_.size() - wpos_),
                             [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWrite(ec, n); });
  }

  void OnWrite(beast::error_code ec, size_t n) {
    if (closed_) return;
    DisarmIo();
    if (ec) return Gone();
    wpos_ += n;
    if (wpos_ < wbuf_.size()) return WriteSome();
    writing_ = false;
    wbuf_.clear();
    Flush();
  }

  void ResponseDone() {
    StopWatch();
    ++app_gen_;
    app_timer_.cancel();
    if (exchange_) {
      exchange_->on_gone_ = nullptr;
      exchange_.reset();
    }
    if (!keep_alive_ || t_->stopping) return CloseGracefully();
    idle_since_ = Clock::now();
    ReadHeader();
  }

  // --- closing ---
  // Shuts the sending side, then reads and drops what the client still
  // sends for a moment: closing a socket with unread data resets the
  // connection, and a reset can destroy the response in the client's buffers.
  void CloseGracefully() {
    phase_ = Phase::kClosing;
    StopWatch();
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    ArmIo(Clock::now() + (refusal_ ? kRefusalLinger : kLinger));
    Discard();
  }

  void Discard() {
    socket_.async_read_some(asio::buffer(t_->discard), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (self->closed_) return;
      self->discarded_ += n;
      if (ec || self->discarded_ > kMaxDiscard) return self->Close();
      self->Discard();
    });
  }

 public:
  void Close() {
    if (closed_) return;
    closed_ = true;
    ++io_gen_;
    ++watch_gen_;
    ++app_gen_;
    io_timer_.cancel();
    watch_timer_.cancel();
    app_timer_.cancel();
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    if (exchange_) {
      exchange_->on_gone_ = nullptr;
      exchange_.reset();
    }
    t_->Forget(this, counted_, client_);
  }

 private:
  // --- timers ---
  void ArmIo(Clock::time_point when) {
    timed_out_ = false;
    const uint64_t gen = ++io_gen_;
    io_timer_.expires_at(when);
    io_timer_.async_wait([self = shared_from_this(), gen](const beast::error_code& ec) {
      if (ec || gen != self->io_gen_ || self->closed_) return;
      self->timed_out_ = true;
      beast::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }

  void DisarmIo() {
    ++io_gen_;
    io_timer_.cancel();
  }

  void StartWatch() {
    const uint64_t gen = ++watch_gen_;
    ArmWatch(gen);
  }

  void ArmWatch(uint64_t gen) {
    watch_timer_.expires_after(kWatchPeriod);
    watch_timer_.async_wait([self = shared_from_this(), gen](const beast::error_code& ec) {
      if (ec || gen != self->watch_gen_ || self->closed_) return;
      if (PeerReset(self->socket_.native_handle())) return self->Gone();
      self->ArmWatch(gen);
    });
  }

  void StopWatch() {
    ++watch_gen_;
    watch_timer_.cancel();
  }

  HttpTransport::Impl* t_;
  std::shared_ptr<HttpPoster> poster_;
  tcp::socket socket_;
  const std::string client_;
  const bool counted_;    // counts against the bounds (a refused connection does not)
  bool refusal_ = false;
  beast::flat_buffer buffer_;  // read, not yet parsed: a partial header, or the next pipelined request
  std::optional<http::request_parser<http::string_body>> parser_;
  asio::steady_timer io_timer_, watch_timer_, app_timer_;
  uint64_t io_gen_ = 0, watch_gen_ = 0, app_gen_ = 0;  // a timer's wake-up counts only for its own generation
  Phase phase_ = Phase::kHeader;
  Clock::time_point idle_since_;  // the header deadline counts from here
  Clock::time_point body_start_;
  bool timed_out_ = false;
  bool closed_ = false;
  bool keep_alive_ = true;
  bool http10_ = false;
  bool head_ = false;
  bool expect_continue_ = false;
  uint64_t seq_ = 0;  // requests dispatched on this connection
  std::shared_ptr<HttpExchange> exchange_;
  bool response_complete_ = false;
  std::string out_;   // response bytes not yet handed to the socket
  std::string wbuf_;  // being written
  size_t wpos_ = 0;
  bool writing_ = false;
  size_t discarded_ = 0;
};

// ---------------------------------------------------------------------------
// HttpExchange
// ---------------------------------------------------------------------------

HttpExchange::HttpExchange(std::shared_ptr<HttpConnection> conn, uint64_t seq, HttpRequest request)
    : conn_(std::move(conn)), seq_(seq), request_(std::move(request)) {}

void HttpExchange::Respond(int status, std::string_view content_type, std::string body, const HttpHeaders& headers) {
  conn_->Respond(seq_, status, content_type, std::move(body), headers);
}

void HttpExchange::StartStream(int status, std::string_view content_type, const HttpHeaders& headers) {
  if (started_) return;
  started_ = true;
  conn_->StartStream(seq_, status, content_type, headers);
}

void HttpExchange::Send(std::string_view data) {
  if (started_) conn_->Send(seq_, data);
}

void HttpExchange::End() {
  if (started_) conn_->End(seq_);
}

bool HttpExchange::done() const { return !conn_->Current(seq_); }

void HttpExchange::OnClientGone(std::function<void()> fn) {
  if (conn_->Current(seq_)) on_gone_ = std::move(fn);
}

void HttpExchange::SetTimer(std::chrono::steady_clock::duration delay, std::function<void()> fn) {
  conn_->SetAppTimer(seq_, delay, std::move(fn));
}

void HttpExchange::Post(std::function<void()> fn) { conn_->poster().Post(std::move(fn)); }

// ---------------------------------------------------------------------------
// HttpTransport
// ---------------------------------------------------------------------------

void HttpTransport::Impl::Accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket s) {
    if (stopping) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec == asio::error::no_buffer_space ||
          ec == asio::error::no_memory) {
        // Out of descriptors: the connection waits in the backlog; try again shortly.
        const auto now = Clock::now();
        if (now - last_accept_error > std::chrono::seconds(5)) {
          last_accept_error = now;
          Log(LogLevel::kWarn, "cannot accept a connection (%s, %d open); retrying", ec.message().c_str(), open);
        }
        accept_backoff.expires_after(std::chrono::milliseconds(50));
        accept_backoff.async_wait([this](const beast::error_code& e) {
          if (!e && !stopping) Accept();
        });
        return;
      }
      return Accept();
    }
    OnAccepted(std::move(s));
    Accept();
  });
}

void HttpTransport::Impl::OnAccepted(tcp::socket s) {
  beast::error_code ec;
  const tcp::endpoint peer = s.remote_endpoint(ec);
  if (ec) return;  // gone already
  s.set_option(tcp::no_delay(true), ec);  // stream events go out as they are written
  std::string client = peer.address().to_string();
  ++accepted;
  const int from_client = per_client.count(client) ? per_client[client] : 0;
  const bool over_total = open >= opts.max_connections;
  const bool over_client = opts.max_connections_per_client > 0 && from_client >= opts.max_connections_per_client;
  if (over_total || over_client) {
    ++refused;
    if (refusing >= kMaxRefusing) return;  // a flood: closed without an answer
    ++refusing;
    auto c = std::make_shared<HttpConnection>(this, std::move(s), client, false);
    conns.insert(c.get());
    c->Refuse(over_total ? "the server has " + std::to_string(open) + " connections open, its limit (--max-connections)"
                         : "this client address has " + std::to_string(from_client) +
                               " connections open, its limit (--max-connections-per-client)");
    return;
  }
  ++per_client[client];
  ++open;
  ++open_now;
  auto c = std::make_shared<HttpConnection>(this, std::move(s), std::move(client), true);
  conns.insert(c.get());
  c->Start();
}

void HttpTransport::Impl::Forget(HttpConnection* c, bool counted, const std::string& client) {
  conns.erase(c);
  if (counted) {
    if (--per_client[client] <= 0) per_client.erase(client);
    --open;
    --open_now;
  } else {
    --refusing;
  }
  if (stopping && conns.empty()) io.stop();
}

void HttpTransport::Impl::BeginStop() {
  if (stopping) return;
  stopping = true;
  beast::error_code ec;
  acceptor.close(ec);
  accept_backoff.cancel();
  std::vector<std::shared_ptr<HttpConnection>> all;
  for (HttpConnection* c : conns) all.push_back(c->shared_from_this());
  for (auto& c : all) c->OnStop();
  if (conns.empty()) return io.stop();
  stop_timer.expires_after(Seconds(opts.stop_drain_s));
  stop_timer.async_wait([this](const beast::error_code& e) {
    if (e) return;
    std::vector<std::shared_ptr<HttpConnection>> left;
    for (HttpConnection* c : conns) left.push_back(c->shared_from_this());
    for (auto& c : left) c->Gone();
    io.stop();
  });
}

HttpTransport::HttpTransport(const HttpTransportOptions& opts, Handler handler)
    : impl_(std::make_shared<Impl>(opts, std::move(handler))) {}

HttpTransport::~HttpTransport() {
  impl_->poster->Close();
  impl_->workers.stop();
  impl_->workers.join();
}

Result<int> HttpTransport::Bind() {
  HttpTransportOptions& o = impl_->opts;
  // Each connection is a descriptor: make room for max_connections.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    const rlim_t want = static_cast<rlim_t>(o.max_connections) + kMaxRefusing + kSpareFds;
    if (rl.rlim_cur < want && rl.rlim_cur != RLIM_INFINITY) {
      rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
      setrlimit(RLIMIT_NOFILE, &rl);
      getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
      const int fit = static_cast<int>(std::max<rlim_t>(1, rl.rlim_cur > kMaxRefusing + kSpareFds ? rl.rlim_cur - kMaxRefusing - kSpareFds : 1));
      Log(LogLevel::kWarn, "--max-connections %d lowered to %d: the open file limit is %llu", o.max_connections, fit,
          static_cast<unsigned long long>(rl.rlim_cur));
      o.max_connections = fit;
    }
  }
  const std::string where = o.host + ":" + std::to_string(o.port);
  beast::error_code ec;
  tcp::resolver resolver(impl_->io);
  auto endpoints = resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) return IoError("cannot listen on " + where + ": " + (ec ? ec.message() : "no such address"));
  const tcp::endpoint ep = endpoints.begin()->endpoint();
  tcp::acceptor& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    a.close(ignored);
    return IoError("cannot listen on " + where + ": " + ec.message() +
                   (ec == asio::error::address_in_use ? " (in use)" : ""));
  }
  const int port = a.local_endpoint(ec).port();
  if (ec) return IoError("cannot listen on " + where + ": " + ec.message());
  return port;
}

void HttpTransport::Run() {
  Impl* t = impl_.get();
  asio::post(t->io, [t] {
    if (!t->stopping) t->Accept();
  });
  t->io.run();
}

void HttpTransport::Stop() {
  Impl* t = impl_.get();
  t->poster->Post([t] { t->BeginStop(); });
}

void HttpTransport::Offload(std::function<void()> work) { asio::post(impl_->workers, std::move(work)); }

HttpTransport::Counts HttpTransport::counts() const {
  Counts c;
  c.open = impl_->open_now.load();
  c.accepted = impl_->accepted.load();
  c.refused = impl_->refused.load();
  c.timed_out = impl_->timed_out.load();
  return c;
}

const HttpTransportOptions& HttpTransport::options() const { return impl_->opts; }

}  // namespace strata
