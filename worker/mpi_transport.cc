// The only file that talks to MPI. Messages are MPI_BYTE sends on two tags:
// the serialized Envelope, then (when announced) the raw payload. Sends are
// non-blocking (MPI_Isend of a buffer the transport owns until MPI is done
// with it): a blocking send of a large message waits until the next stage
// posts its receive, i.e. until it has finished its current batch, which
// would stall this stage instead of letting it start the next one. Receives
// poll with MPI_Iprobe and back off with short sleeps, because Open MPI's
// blocking receive spins a core at 100%, which on a small machine steals the
// core a computing stage needs (WaitFor: how often).
//
// A progress thread keeps sends moving while the stage computes: MPI moves a
// message's bytes only inside MPI calls, and a large one over TCP (past the
// eager limit, e.g. a prefill chunk's activations) would otherwise wait for
// this rank's next call, i.e. the end of its next batch, while the next stage
// idles. The thread tests the pending sends every 200 us while there are any
// (MPI_THREAD_SERIALIZED: one mutex around every MPI call) and sleeps
// otherwise.
#include <mpi.h>
#include <sys/prctl.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/trace.h"
#include "worker/transport.h"

namespace strata {
namespace {

constexpr int kTagEnvelope = 1;
constexpr int kTagPayload = 2;

class MpiTransport;
MpiTransport* g_live = nullptr;  // for FinalizeMpi: stop the progress thread first

class MpiTransport : public Transport {
 public:
  MpiTransport(int rank, int size, std::string host, BetweenHeaderAndPayloadHook test_hook, bool progress_thread)
      : rank_(rank), size_(size), host_(std::move(host)), test_hook_(std::move(test_hook)) {
    if (progress_thread) progress_ = std::thread([this] { ProgressLoop(); });
    g_live = this;
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& host() const override { return host_; }

  ~MpiTransport() override {
    Stop();
    if (g_live == this) g_live = nullptr;
  }

  // Takes the MPI lock for good, for MPI_Abort.
  void HoldForAbort() { mu_.lock(); }

  // Ends the progress thread and waits for every send; before MPI_Finalize.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    if (progress_.joinable()) progress_.join();
    Flush();
  }

  Status Send(int dest, const wire::Envelope& e, std::span<const uint8_t> payload) override {
    if (dest < 0 || dest >= size_) return Internal("send to rank " + std::to_string(dest) + " of " + std::to_string(size_));
    if (payload.size() != AnnouncedPayloadBytes(e)) return Internal("payload size does not match its header");
    TraceSpan span("send to rank " + std::to_string(dest), "send");
    auto send = std::make_unique<PendingSend>();
    if (!e.SerializeToString(&send->header)) return Internal("cannot serialize a message");
    if (send->header.size() > INT32_MAX || payload.size() > INT32_MAX) return Internal("message too large for one MPI send");
    send->payload.assign(payload.begin(), payload.end());
    std::unique_lock<std::mutex> lock(mu_);
    if (MPI_Isend(send->header.data(), static_cast<int>(send->header.size()), MPI_BYTE, dest, kTagEnvelope, MPI_COMM_WORLD,
                  &send->requests[send->n_requests++]) != MPI_SUCCESS)
      return IoError("MPI_Isend to rank " + std::to_string(dest) + " failed");
    if (test_hook_ && !send->payload.empty()) {
      MPI_Wait(&send->requests[0], MPI_STATUS_IGNORE);  // the header has left
      test_hook_(*this, dest, e);
    }
    if (!send->payload.empty() &&
        MPI_Isend(send->payload.data(), static_cast<int>(send->payload.size()), MPI_BYTE, dest, kTagPayload, MPI_COMM_WORLD,
                  &send->requests[send->n_requests++]) != MPI_SUCCESS)
      return IoError("MPI_Isend of a payload to rank " + std::to_string(dest) + " failed");
    pending_.push_back(std::move(send));
    ReapSends();
    // Bound the memory held by sends the receivers have not taken yet.
    while (pending_.size() > kMaxPendingSends) {
      MPI_Waitall(pending_.front()->n_requests, pending_.front()->requests, MPI_STATUSES_IGNORE);
      pending_.pop_front();
    }
    const bool wake = !pending_.empty();
    lock.unlock();
    if (wake) wake_.notify_one();
    return Status::Ok();
  }

  void Flush() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : pending_) MPI_Waitall(p->n_requests, p->requests, MPI_STATUSES_IGNORE);
    pending_.clear();
  }

  void Barrier() override {
    std::lock_guard<std::mutex> lock(mu_);
    MPI_Barrier(MPI_COMM_WORLD);
  }

  Result<Message> Receive(int source, double timeout_s) override {
    MPI_Status st;
    {
      TraceSpan wait("wait", "wait");
      if (!WaitFor(source < 0 ? MPI_ANY_SOURCE : source, kTagEnvelope, &st, timeout_s))
        return DeadlineExceeded("no message " + (source < 0 ? std::string("from any rank") : "from rank " + std::to_string(source)) +
                                " within " + std::to_string(timeout_s) + " s");
    }
    TraceSpan span("receive from rank " + std::to_string(st.MPI_SOURCE), "recv");
    std::string bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ReapSends();
      int count = 0;
      MPI_Get_count(&st, MPI_BYTE, &count);
      bytes.assign(static_cast<size_t>(count), '\0');
      MPI_Recv(bytes.data(), count, MPI_BYTE, st.MPI_SOURCE, kTagEnvelope, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    Message m;
    m.source = st.MPI_SOURCE;
    if (!m.envelope.ParseFromString(bytes))
      return DataLoss("malformed message from rank " + std::to_string(m.source) + " (" + std::to_string(bytes.size()) + " bytes)");
    const uint64_t want = AnnouncedPayloadBytes(m.envelope);
    if (want > 0) {
      if (want > (uint64_t{1} << 31)) return DataLoss("message from rank " + std::to_string(m.source) + " announces a payload of " + std::to_string(want) + " bytes");
      // The payload follows its header at once; a sender that stops (or
      // whose link goes down) between the two is found by the same deadline.
      MPI_Status pst;
      if (!WaitFor(m.source, kTagPayload, &pst, timeout_s))
        return DeadlineExceeded("rank " + std::to_string(m.source) + " sent a header announcing " + std::to_string(want) +
                                " payload bytes, but no payload within " + std::to_string(timeout_s) + " s");
      std::lock_guard<std::mutex> lock(mu_);
      int pcount = 0;
      MPI_Get_count(&pst, MPI_BYTE, &pcount);
      if (static_cast<uint64_t>(pcount) != want)
        return DataLoss("payload from rank " + std::to_string(m.source) + " is " + std::to_string(pcount) + " bytes, its header said " + std::to_string(want));
      m.payload.resize(want);
      MPI_Recv(m.payload.data(), pcount, MPI_BYTE, m.source, kTagPayload, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    return m;
  }

  bool MessageWaiting(int source) override {
    // An MPI_Iprobe that finds nothing matched drives progress after it
    // looked (Open MPI's ob1), so a message that arrived since the last MPI
    // call shows only to the second probe: without it the last stage saw its
    // next batch one group of lm_head rows late (traces: 0.4 ms per step).
    MPI_Status st;
    const int from = source < 0 ? MPI_ANY_SOURCE : source;
    return Probe(from, kTagEnvelope, &st) || Probe(from, kTagEnvelope, &st);
  }

 private:
  // A message MPI may still be reading: its buffers live here until then.
  struct PendingSend {
    std::string header;
    std::vector<uint8_t> payload;
    MPI_Request requests[2];
    int n_requests = 0;
  };
  static constexpr size_t kMaxPendingSends = 256;

  // Waits for a message matching (source, tag) without spinning for long;
  // false when `timeout_s` (> 0) passes first. Inside a busy pipeline the
  // next hand-off comes within a step (tens of ms), so for the first 100 ms
  // it polls every ~40 us (sleeps of 20 us, with the thread's timer slack cut
  // from Linux's 50 us to 1 us); only a longer wait (an idle server, a slow
  // peer) backs off to 500 us. Backing off from the start made each hand-off
  // 0.3-0.8 ms late in SmolLM3-3B decode traces, 1 % of a step.
  bool WaitFor(int source, int tag, MPI_Status* status, double timeout_s = 0) {
    thread_local const bool slack_cut = prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0) == 0;
    (void)slack_cut;
    auto sleep = std::chrono::microseconds(20);
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_s);
    for (int spins = 0;; ++spins) {
      if (Probe(source, tag, status)) return true;
      if (spins < 200) continue;  // a short spin keeps hand-offs fast
      const auto now = std::chrono::steady_clock::now();
      if (timeout_s > 0 && now > deadline) return false;
      if (now - start > std::chrono::milliseconds(100))
        sleep = std::min(std::chrono::microseconds(500), sleep + std::chrono::microseconds(20));
      std::this_thread::sleep_for(sleep);
    }
  }

  // One MPI_Iprobe (source may be MPI_ANY_SOURCE).
  bool Probe(int source, int tag, MPI_Status* status) {
    int flag = 0;
    std::lock_guard<std::mutex> lock(mu_);
    MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, status);
    return flag != 0;
  }

  // Drops the sends MPI has finished with, oldest first. Holds mu_.
  void ReapSends() {
    while (!pending_.empty()) {
      int done = 0;
      MPI_Testall(pending_.front()->n_requests, pending_.front()->requests, &done, MPI_STATUSES_IGNORE);
      if (!done) return;
      pending_.pop_front();
    }
  }

  void ProgressLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (pending_.empty()) {
        wake_.wait(lock, [this] { return stop_ || !pending_.empty(); });
        continue;
      }
      ReapSends();
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      lock.lock();
    }
  }

  int rank_, size_;
  std::string host_;
  BetweenHeaderAndPayloadHook test_hook_;
  std::mutex mu_;  // every MPI call, and pending_
  std::condition_variable wake_;
  bool stop_ = false;
  std::deque<std::unique_ptr<PendingSend>> pending_;
  std::thread progress_;
};

}  // namespace

bool LaunchedByMpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

Result<std::unique_ptr<Transport>> InitMpiTransport(int* argc, char*** argv, BetweenHeaderAndPayloadHook test_hook) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) return IoError("MPI_Init failed");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // STRATA_NO_PROGRESS_THREAD=1 turns the progress thread off (to measure what it does).
  const bool progress = provided >= MPI_THREAD_SERIALIZED && size > 1 && std::getenv("STRATA_NO_PROGRESS_THREAD") == nullptr;
  return std::unique_ptr<Transport>(new MpiTransport(rank, size, HostName(), std::move(test_hook), progress));
}

void FinalizeMpi() {
  if (g_live != nullptr) g_live->Stop();
  MPI_Finalize();
}

void AbortMpi(int code) {
  // MPI_Abort asks mpirun to end the job, which may wait on a host it can no
  // longer reach; this process ends regardless (launch/strata-mpirun ends mpirun).
  std::thread([code] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    std::_Exit(code);
  }).detach();
  // MPI_THREAD_SERIALIZED: no MPI call of the progress thread beside this
  // one. The lock is never released (the process ends); should a call hold
  // it forever, the watchdog above ends the process.
  if (g_live != nullptr) g_live->HoldForAbort();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace strata
