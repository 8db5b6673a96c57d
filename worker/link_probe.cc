#include "worker/link_probe.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "worker/wire_codec.h"

namespace strata {
namespace {

constexpr uint64_t kProbeMessageBytes = 64 * 1024;  // a few decode tokens' activations
constexpr uint64_t kProbeMaxBytes = 16u << 20;
constexpr double kProbeMinSeconds = 0.05;  // a stream this long shows the sustained rate
constexpr int kLatencyRounds = 9;

// Sends `messages` probes of `payload` to `peer`, the last asking for an
// answer, and returns the seconds until the answer came.
Result<double> TimeProbes(Transport& t, int peer, const std::vector<uint8_t>& payload, int messages, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < messages; ++i) {
    wire::Envelope e;
    e.mutable_probe_data()->set_payload_bytes(payload.size());
    e.mutable_probe_data()->set_reply(i + 1 == messages);
    STRATA_RETURN_IF_ERROR(t.Send(peer, e, payload));
  }
  STRATA_ASSIGN_OR_RETURN(Message m, t.Receive(peer, timeout_s));
  if (!m.envelope.has_probe_data())
    return DataLoss("rank " + std::to_string(peer) + " answered a link probe with another message");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Result<LinkMeasure> MeasureLink(Transport& t, int peer, double timeout_s) {
  LinkMeasure out;
  std::vector<double> trips;
  for (int i = 0; i < kLatencyRounds; ++i) {
    STRATA_ASSIGN_OR_RETURN(double s, TimeProbes(t, peer, {}, 1, timeout_s));
    trips.push_back(s);
  }
  // The fastest round trip: the link's own latency. Waits for a busy
  // peer or this machine's scheduler only add to the others (a loaded CI
  // machine doubled the median, which then hid a 100 Mbit/s link's cost).
  const double round_trip = *std::min_element(trips.begin(), trips.end());
  out.latency_s = round_trip / 2;

  const std::vector<uint8_t> payload(kProbeMessageBytes, 0x5a);
  int messages = 4;
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(double s, TimeProbes(t, peer, payload, messages, timeout_s));
    const double bytes = static_cast<double>(messages) * kProbeMessageBytes;
    if (s >= kProbeMinSeconds || bytes >= kProbeMaxBytes) {
      // The answer's own round trip is not transfer time; a stream much
      // shorter than it (a very fast link) keeps half its time.
      out.bytes_per_s = bytes / std::max(s - round_trip, s / 2);
      return out;
    }
    messages *= 2;
  }
}

Status AnswerProbe(Transport& t, const Message& m) {
  if (!m.envelope.probe_data().reply()) return Status::Ok();
  wire::Envelope e;
  e.mutable_probe_data();
  return t.Send(m.source, e);
}

WireChoice ChooseWire(const LinkMeasure& link, int64_t decode_tokens, int64_t hidden, double step_s) {
  WireChoice c;
  if (link.bytes_per_s <= 0 || step_s <= 0) return c;
  const Result<uint64_t> f32_bytes = WireBytes(wire::DTYPE_F32, decode_tokens, hidden);
  if (!f32_bytes.ok()) return c;
  c.f32_bytes_s = static_cast<double>(*f32_bytes) / link.bytes_per_s;
  c.share = c.f32_bytes_s / step_s;
  if (c.share > kWireShareOfStep && c.f32_bytes_s > link.latency_s)
    c.dtype = WireBytes(wire::DTYPE_Q8_0, decode_tokens, hidden).ok() ? wire::DTYPE_Q8_0 : wire::DTYPE_BF16;
  return c;
}

std::string DescribeWireChoice(const std::string& from, const std::string& to, const LinkMeasure& link,
                               int64_t decode_tokens, double step_s, const WireChoice& choice) {
  char line[320];
  std::snprintf(line, sizeof line,
                "%s -> %s: %.1f MB/s, latency %.3g ms; %lld decode token(s) of f32 take %.3g ms, %.2g %% of a %.3g ms "
                "step (f32 up to %.0f %%): %s",
                from.c_str(), to.c_str(), link.bytes_per_s / 1e6, link.latency_s * 1e3, static_cast<long long>(decode_tokens),
                choice.f32_bytes_s * 1e3, choice.share * 100.0, step_s * 1e3, kWireShareOfStep * 100.0, WireDTypeName(choice.dtype));
  return line;
}

}  // namespace strata
