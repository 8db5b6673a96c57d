// The link between `strata serve --supervise`'s front process (outside the
// MPI job) and the job's rank 0: one TCP connection carrying length-prefixed
// JobFrame messages (proto/strata.proto): a 4-byte little-endian length, then
// the serialized frame.
//
//   front                                   job rank 0 (ServeFront)
//     listen 127.0.0.1:P, start the job  ->   connect, load the pipeline
//                                       <-   JobHello (stages, hosts)
//     JobRequest SUBMIT (batch, id)     ->   Pipeline::Submit
//     JobRequest FREE (seq)             ->   Pipeline::Free
//                                       <-   JobReply (results, in order)
//                                       <-   JobReply{error}: the job failed and ends
//     JobRequest SHUTDOWN / close       ->   the job ends cleanly
//
// The front holds every sequence's state; the job only computes batches, so
// a job that dies loses nothing the front cannot send again
// (coordinator/supervisor.h). Both sides run here: FrameReader and WriteFrame
// on either, ServeFront on the job's rank 0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/pipeline.h"
#include "proto/strata.pb.h"

namespace strata {

// A frame larger than this is refused (a batch of 4096 tokens with their
// recent ids is a few hundred KiB; logits of a long prompt are bigger).
constexpr uint32_t kMaxJobFrameBytes = 256u << 20;

// "HOST:PORT" -> (host, port), checked.
Result<std::pair<std::string, int>> ParseHostPort(const std::string& s);

// Writes one frame (blocking; no SIGPIPE). IoError when the peer is gone.
Status WriteFrame(int fd, const wire::JobFrame& frame);

// Reads frames from a socket, `timeout_ms` at a time.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  // The next frame; nullopt when none came within timeout_ms (-1: wait);
  // IoError when the peer closed or the connection broke; DataLoss for a
  // frame that is too large or does not parse.
  Result<std::optional<wire::JobFrame>> Read(int timeout_ms);

 private:
  std::optional<wire::JobFrame> TakeBuffered(Status* error);
  int fd_;
  std::vector<uint8_t> buf_;
};

// Connects to HOST:PORT over TCP (retrying for `timeout_s`, the front may be
// slow to accept); returns the socket.
Result<int> ConnectTcp(const std::string& host, int port, double timeout_s);

// The job's rank 0 under a supervising front: says hello, then runs every
// batch the front sends on `pipeline` and answers with the results, until the
// front says SHUTDOWN or goes away (OK: the job ends cleanly). A pipeline
// failure is sent to the front (its text names the failed rank and host when
// the pipeline knows them) and returned.
Status ServeFront(Pipeline& pipeline, const std::string& front, uint64_t launch, int64_t n_ctx);

}  // namespace strata
