// Ranks as threads of one process (see in_memory_transport.h).
#include "worker/in_memory_transport.h"

#include <chrono>

namespace strata {

class InMemoryTransport : public Transport {
 public:
  InMemoryTransport(InMemoryNetwork& net, int rank) : net_(net), rank_(rank), host_("memory-" + std::to_string(rank)) {}
  int rank() const override { return rank_; }
  int size() const override { return net_.size(); }
  const std::string& host() const override { return host_; }

  // The same checks as MpiTransport::Send.
  Status Send(int dest, const wire::Envelope& envelope, std::span<const uint8_t> payload) override {
    if (dest < 0 || dest >= size()) return Internal("send to rank " + std::to_string(dest) + " of " + std::to_string(size()));
    if (payload.size() != AnnouncedPayloadBytes(envelope)) return Internal("payload size does not match its header");
    Message m;
    m.source = rank_;
    m.envelope = envelope;
    m.payload.assign(payload.begin(), payload.end());
    InMemoryNetwork::Mailbox& box = *net_.boxes_[dest];
    {
      std::lock_guard<std::mutex> lock(box.mu);
      box.queue.push_back(std::move(m));
    }
    box.cv.notify_all();
    return Status::Ok();
  }

  Result<Message> Receive(int source, double timeout_s) override {
    InMemoryNetwork::Mailbox& box = *net_.boxes_[rank_];
    std::unique_lock<std::mutex> lock(box.mu);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      // The first message from `source` (any rank: the first to arrive).
      for (auto it = box.queue.begin(); it != box.queue.end(); ++it) {
        if (source >= 0 && it->source != source) continue;
        Message m = std::move(*it);
        box.queue.erase(it);
        return m;
      }
      if (timeout_s <= 0) {
        box.cv.wait(lock);
      } else if (box.cv.wait_until(lock, deadline) == std::cv_status::timeout) {
        return DeadlineExceeded("no message " + (source < 0 ? std::string("from any rank") : "from rank " + std::to_string(source)) +
                                " within " + std::to_string(timeout_s) + " s");
      }
    }
  }

  bool MessageWaiting(int source) override {
    InMemoryNetwork::Mailbox& box = *net_.boxes_[rank_];
    std::lock_guard<std::mutex> lock(box.mu);
    for (const Message& m : box.queue)
      if (source < 0 || m.source == source) return true;
    return false;
  }

  void Barrier() override {
    std::unique_lock<std::mutex> lock(net_.barrier_mu_);
    const uint64_t round = net_.rounds_;
    if (++net_.arrived_ == size()) {
      net_.arrived_ = 0;
      ++net_.rounds_;
      net_.barrier_cv_.notify_all();
      return;
    }
    net_.barrier_cv_.wait(lock, [&] { return net_.rounds_ != round; });
  }

 private:
  InMemoryNetwork& net_;
  int rank_;
  std::string host_;
};

InMemoryNetwork::InMemoryNetwork(int size) {
  for (int r = 0; r < size; ++r) boxes_.push_back(std::make_unique<Mailbox>());
}

std::unique_ptr<Transport> InMemoryNetwork::Connect(int rank) { return std::make_unique<InMemoryTransport>(*this, rank); }

}  // namespace strata
