// Test-only faults around a transport (see fault_injection.h). Any rank, in
// the strata_faults test binary only.
#include "worker/fault_injection.h"

#include <signal.h>

#include <cstring>
#include <utility>
#include <vector>

namespace strata {
namespace {

class FaultInjectingTransport : public Transport {
 public:
  FaultInjectingTransport(std::unique_ptr<Transport> inner, FaultSpec spec)
      : inner_(std::move(inner)), spec_(spec), armed_(inner_->rank() == spec.rank) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& host() const override { return inner_->host(); }
  void Barrier() override { inner_->Barrier(); }
  void Flush() override { inner_->Flush(); }
  bool MessageWaiting(int source) override { return inner_->MessageWaiting(source); }

  Status Send(int dest, const wire::Envelope& envelope, std::span<const uint8_t> payload) override {
    if (!armed_ || !envelope.has_forward() || spec_.kind == FaultSpec::Kind::kPerturbInput ||
        spec_.kind == FaultSpec::Kind::kStopAfterHeader)
      return inner_->Send(dest, envelope, payload);
    armed_ = false;  // the first forward batch only
    wire::Envelope e = envelope;
    std::vector<uint8_t> bytes(payload.begin(), payload.end());
    wire::ForwardBatch* fb = e.mutable_forward();
    switch (spec_.kind) {
      case FaultSpec::Kind::kCorruptHidden: fb->set_hidden(fb->hidden() - 1); break;
      case FaultSpec::Kind::kCorruptNTok:
        if (fb->entries_size() > 0) fb->mutable_entries(0)->set_n_tok(fb->entries(0).n_tok() + 1);
        break;
      case FaultSpec::Kind::kCorruptPayload:
        if (bytes.size() >= 4) {
          bytes.resize(bytes.size() - 4);
          fb->set_payload_bytes(bytes.size());
        }
        break;
      case FaultSpec::Kind::kCorruptDType: fb->set_dtype(static_cast<wire::DType>(77)); break;
      default: break;
    }
    return inner_->Send(dest, e, bytes);
  }

  Result<Message> Receive(int source, double timeout_s) override {
    STRATA_ASSIGN_OR_RETURN(Message m, inner_->Receive(source, timeout_s));
    if (armed_ && spec_.kind == FaultSpec::Kind::kPerturbInput && m.envelope.has_forward() &&
        m.envelope.forward().dtype() == wire::DTYPE_F32) {
      for (size_t i = 0; i + sizeof(float) <= m.payload.size(); i += sizeof(float)) {
        float v;
        std::memcpy(&v, m.payload.data() + i, sizeof v);
        v += 0.05f;
        std::memcpy(m.payload.data() + i, &v, sizeof v);
      }
    }
    return m;
  }

 private:
  std::unique_ptr<Transport> inner_;
  FaultSpec spec_;
  bool armed_;
};

}  // namespace

Result<FaultSpec> ParseFaultSpec(const std::string& spec) {
  static const std::pair<const char*, FaultSpec::Kind> kKinds[] = {
      {"corrupt-hidden", FaultSpec::Kind::kCorruptHidden}, {"corrupt-n_tok", FaultSpec::Kind::kCorruptNTok},
      {"corrupt-payload", FaultSpec::Kind::kCorruptPayload}, {"corrupt-dtype", FaultSpec::Kind::kCorruptDType},
      {"perturb-input", FaultSpec::Kind::kPerturbInput},   {"stop-after-header", FaultSpec::Kind::kStopAfterHeader},
  };
  const size_t at = spec.find('@');
  const std::string kind = spec.substr(0, at);
  FaultSpec f;
  bool known = false;
  for (const auto& [name, k] : kKinds) {
    if (kind == name) {
      f.kind = k;
      known = true;
    }
  }
  if (!known) return InvalidArgument("fault '" + spec + "': unknown kind '" + kind + "'");
  if (at == std::string::npos) return InvalidArgument("fault '" + spec + "': expected KIND@RANK");
  const std::string rank = spec.substr(at + 1);
  if (rank.empty() || rank.size() > 6 || rank.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("fault '" + spec + "': '" + rank + "' is not a rank");
  f.rank = std::stoi(rank);
  return f;
}

std::unique_ptr<Transport> InjectFaults(std::unique_ptr<Transport> inner, const FaultSpec& spec) {
  return std::make_unique<FaultInjectingTransport>(std::move(inner), spec);
}

BetweenHeaderAndPayloadHook FaultHook(const FaultSpec& spec) {
  if (spec.kind != FaultSpec::Kind::kStopAfterHeader) return nullptr;
  return [rank = spec.rank, stopped = false](const Transport& self, int, const wire::Envelope&) mutable {
    if (self.rank() != rank || stopped) return;
    stopped = true;
    raise(SIGSTOP);
  };
}

}  // namespace strata
