// A Transport between threads of one process: every rank of a job is a
// thread, messages are queued in memory. MPI's guarantees are kept (messages
// from one sender arrive in the order sent; a payload travels with its
// header), so the coordinator, the workers and the stage server run over it
// exactly as over MpiTransport: tests run a split pipeline, malformed
// messages and the message validation without mpirun.
//
//   InMemoryNetwork net(3);                        // ranks 0, 1, 2
//   std::thread worker([&] { RunWorker(*net.Connect(1), opts); });
//   std::unique_ptr<Transport> t0 = net.Connect(0);
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "worker/transport.h"

namespace strata {

class InMemoryNetwork {
 public:
  explicit InMemoryNetwork(int size);
  int size() const { return static_cast<int>(boxes_.size()); }
  // Rank `rank`'s end (host "memory-RANK"); the network must outlive it.
  std::unique_ptr<Transport> Connect(int rank);

 private:
  friend class InMemoryTransport;
  struct Mailbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Message> queue;  // in arrival order
  };
  std::vector<std::unique_ptr<Mailbox>> boxes_;
  // The barrier: how many ranks arrived in the current round, and rounds done.
  std::mutex barrier_mu_;
  std::condition_variable barrier_cv_;
  int arrived_ = 0;
  uint64_t rounds_ = 0;
};

}  // namespace strata
