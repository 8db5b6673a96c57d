// How ranks talk: one Envelope per message, optionally followed by a raw
// payload (activations, logits). MpiTransport (mpi_transport.cc) is the only
// code that calls MPI; tests substitute their own Transport.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/strata.pb.h"

namespace strata {

struct Message {
  int source = -1;
  wire::Envelope envelope;
  std::vector<uint8_t> payload;  // empty unless the envelope announces payload_bytes
};

// The payload bytes an envelope announces (forward activations, result
// logits); every transport sends exactly these after it.
inline uint64_t AnnouncedPayloadBytes(const wire::Envelope& e) {
  if (e.has_forward()) return e.forward().payload_bytes();
  if (e.has_result()) return e.result().payload_bytes();
  if (e.has_probe_data()) return e.probe_data().payload_bytes();
  return 0;
}

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& host() const = 0;
  // Sends the envelope, then the payload when non-empty.
  virtual Status Send(int dest, const wire::Envelope& envelope, std::span<const uint8_t> payload = {}) = 0;
  // Blocks until a message arrives from `source` (-1: any rank), or fails
  // with DeadlineExceeded after `timeout_s` seconds (0: no limit) without a
  // header, or as long again after a header without its payload. Waiting
  // yields the core (no busy spinning), so a waiting stage leaves the CPU to
  // the stages that compute.
  virtual Result<Message> Receive(int source = -1, double timeout_s = 0) = 0;
  // Whether a message from `source` (-1: any rank) has arrived and waits to
  // be received, without receiving it. A transport that cannot tell says no.
  virtual bool MessageWaiting(int source = -1) { (void)source; return false; }
  // Every rank waits here until all arrive (aligns trace clocks).
  virtual void Barrier() = 0;
  // Returns when every message sent so far has left this process (sends may
  // complete after Send() returns). Called before MPI is finalized.
  virtual void Flush() {}
};

// Test-only: called by the MPI transport on the sending rank after a
// message's header has left and before its payload is sent (messages with a
// payload only). Fault tests use it to stop a rank between the two
// (worker/fault_injection.h); the strata binary never sets it.
using BetweenHeaderAndPayloadHook = std::function<void(const Transport& self, int dest, const wire::Envelope& header)>;

// The MPI transport. Init() is called once per process, before anything
// else; Finalize() at the end. Only when the process was started by mpirun
// (or another MPI launcher) is MPI used at all.
bool LaunchedByMpi();
Result<std::unique_ptr<Transport>> InitMpiTransport(int* argc, char*** argv,
                                                    BetweenHeaderAndPayloadHook test_hook = nullptr);
void FinalizeMpi();
// Ends every rank of the job at once (used when a rank is unresponsive).
[[noreturn]] void AbortMpi(int code);

}  // namespace strata
