// The front <-> job rank 0 link of job_link.h: framing over a TCP socket
// (either side) and ServeFront (the job's rank 0).
#include "coordinator/job_link.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>

#include "common/log.h"
#include "worker/stage_server.h"
#include "worker/wire_codec.h"

namespace strata {

Result<std::pair<std::string, int>> ParseHostPort(const std::string& s) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    return InvalidArgument("'" + s + "' is not HOST:PORT");
  const std::string port = s.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("'" + s + "': the port is not a number");
  const int p = std::stoi(port);
  if (p < 1 || p > 65535) return InvalidArgument("'" + s + "': the port is not in 1..65535");
  return std::make_pair(s.substr(0, colon), p);
}

Status WriteFrame(int fd, const wire::JobFrame& frame) {
  const size_t n = frame.ByteSizeLong();
  if (n > kMaxJobFrameBytes) return Internal("a job frame of " + std::to_string(n) + " bytes is too large");
  std::string bytes(4 + n, '\0');
  for (int k = 0; k < 4; ++k) bytes[k] = static_cast<char>((n >> (8 * k)) & 0xff);
  if (!frame.SerializeToArray(bytes.data() + 4, static_cast<int>(n))) return Internal("cannot serialize a job frame");
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t w = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return IoError(std::string("the link to the job is broken: ") + std::strerror(errno));
    sent += static_cast<size_t>(w);
  }
  return Status::Ok();
}

std::optional<wire::JobFrame> FrameReader::TakeBuffered(Status* error) {
  if (buf_.size() < 4) return std::nullopt;
  const uint32_t n = static_cast<uint32_t>(buf_[0]) | static_cast<uint32_t>(buf_[1]) << 8 |
                     static_cast<uint32_t>(buf_[2]) << 16 | static_cast<uint32_t>(buf_[3]) << 24;
  if (n > kMaxJobFrameBytes) {
    *error = DataLoss("a job frame announces " + std::to_string(n) + " bytes (at most " +
                      std::to_string(kMaxJobFrameBytes) + ")");
    return std::nullopt;
  }
  if (buf_.size() < 4 + static_cast<size_t>(n)) return std::nullopt;
  wire::JobFrame f;
  if (!f.ParseFromArray(buf_.data() + 4, static_cast<int>(n))) {
    *error = DataLoss("a job frame of " + std::to_string(n) + " bytes does not parse");
    return std::nullopt;
  }
  buf_.erase(buf_.begin(), buf_.begin() + 4 + n);
  return f;
}

Result<std::optional<wire::JobFrame>> FrameReader::Read(int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
  for (;;) {
    Status error;
    if (auto f = TakeBuffered(&error)) return f;
    if (!error.ok()) return error;
    int wait = -1;
    if (timeout_ms >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      wait = static_cast<int>(std::max<int64_t>(0, left));
    }
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return IoError(std::string("poll on the job link: ") + std::strerror(errno));
    if (r == 0) return std::optional<wire::JobFrame>();
    uint8_t chunk[65536];
    const ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got == 0) return IoError("the link closed");
    if (got < 0) return IoError(std::string("the link broke: ") + std::strerror(errno));
    buf_.insert(buf_.end(), chunk, chunk + got);
  }
}

Result<int> ConnectTcp(const std::string& host, int port, double timeout_s) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string ps = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), ps.c_str(), &hints, &res); rc != 0)
    return InvalidArgument("cannot resolve the front's address '" + host + "': " + gai_strerror(rc));
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string last = "no address";
  for (;;) {
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::freeaddrinfo(res);
        return fd;
      }
      last = std::strerror(errno);
      ::close(fd);
    }
    if (std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::freeaddrinfo(res);
  return IoError("cannot connect to the front at " + host + ":" + ps + ": " + last);
}

namespace {

wire::JobFrame ReplyFrame(uint64_t batch_id, const BatchOutput* out, const std::string& error) {
  wire::JobFrame f;
  wire::JobReply* r = f.mutable_reply();
  r->set_batch_id(batch_id);
  r->set_error(error);
  if (out != nullptr) {
    for (const SequenceResult& s : out->results) {
      wire::SequenceOutput* o = r->add_outputs();
      o->set_seq_id(s.seq_id);
      o->set_token(s.token);
      if (s.logprobs) LogprobsToWire(*s.logprobs, o);
      o->set_logit_rows(0);
      if (!s.logits.empty()) {
        o->set_logit_rows(s.logits.size());
        r->mutable_logits()->Add(s.logits.begin(), s.logits.end());
      }
    }
  }
  return f;
}

}  // namespace

Status ServeFront(Pipeline& pipeline, const std::string& front, uint64_t launch, int64_t n_ctx) {
  STRATA_ASSIGN_OR_RETURN(auto addr, ParseHostPort(front));
  STRATA_ASSIGN_OR_RETURN(int fd, ConnectTcp(addr.first, addr.second, 30));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  {
    wire::JobFrame f;
    wire::JobHello* h = f.mutable_hello();
    h->set_protocol_version(wire::PROTOCOL_VERSION);
    h->set_launch(launch);
    h->set_n_stages(pipeline.n_stages());
    h->set_n_ctx(n_ctx);
    for (const StagePlacement& p : pipeline.Placement()) {
      h->add_stage_hosts(p.host);
      h->add_stage_ranks(p.rank);
    }
    STRATA_RETURN_IF_ERROR(WriteFrame(fd, f));
  }
  Log(LogLevel::kInfo, "serving the front at %s (launch %llu)", front.c_str(), static_cast<unsigned long long>(launch));
  FrameReader reader(fd);
  std::deque<uint64_t> ids;  // the front's ids of the batches in flight, oldest first
  // A failure: told to the front (best effort), then returned.
  auto fail = [&](const Status& st) {
    (void)WriteFrame(fd, ReplyFrame(ids.empty() ? 0 : ids.front(), nullptr, st.message()));
    return st;
  };
  for (;;) {
    // Take every request already here; block only when nothing computes.
    auto got = reader.Read(pipeline.in_flight() > 0 ? 0 : -1);
    if (!got.ok()) {
      if (got.status().kind() == ErrorKind::kIo) {
        Log(LogLevel::kInfo, "the front closed the link: the job ends");
        return Status::Ok();
      }
      return got.status();
    }
    if (got->has_value()) {
      const wire::JobFrame& f = **got;
      if (!f.has_request()) return DataLoss("the front sent a frame that is not a request");
      const wire::JobRequest& q = f.request();
      switch (q.kind()) {
        case wire::JobRequest::KIND_SUBMIT: {
          std::vector<SequenceRequest> batch;
          batch.reserve(q.entries_size());
          for (const wire::SequenceEntry& e : q.entries()) {
            auto r = FromWire(e);
            if (!r.ok()) return fail(r.status());
            batch.push_back(std::move(*r));
          }
          if (batch.empty()) return fail(DataLoss("the front sent an empty batch"));
          if (auto id = pipeline.Submit(batch); !id.ok()) return fail(id.status());
          ids.push_back(q.batch_id());
          break;
        }
        case wire::JobRequest::KIND_FREE:
          if (Status st = pipeline.Free(q.seq_id()); !st.ok()) return fail(st);
          break;
        case wire::JobRequest::KIND_STATS: {
          // The front asks with nothing of its own in flight: finish ours first.
          while (!ids.empty()) {
            auto out = pipeline.Wait();
            if (!out.ok()) return fail(out.status());
            STRATA_RETURN_IF_ERROR(WriteFrame(fd, ReplyFrame(ids.front(), &*out, "")));
            ids.pop_front();
          }
          auto stats = pipeline.Stats();
          if (!stats.ok()) return fail(stats.status());
          wire::JobFrame reply = ReplyFrame(0, nullptr, "");
          for (const StageStats& st : *stats) *reply.mutable_reply()->add_stats() = StatsToWire(st);
          STRATA_RETURN_IF_ERROR(WriteFrame(fd, reply));
          break;
        }
        case wire::JobRequest::KIND_SHUTDOWN:
          Log(LogLevel::kInfo, "the front asked the job to end");
          return Status::Ok();
        default:
          return fail(DataLoss("the front sent a request of unknown kind " + std::to_string(q.kind())));
      }
      continue;
    }
    auto out = pipeline.Wait();
    if (!out.ok()) return fail(out.status());
    const uint64_t id = ids.front();
    ids.pop_front();
    STRATA_RETURN_IF_ERROR(WriteFrame(fd, ReplyFrame(id, &*out, "")));
  }
}

}  // namespace strata
