// `--wire auto`: at start-up each stage's rank measures its link to the next
// stage's rank (latency, and the bandwidth of a stream of activation-sized
// messages sent the way activations travel: header, then raw payload), and
// rank 0 picks each link's activation type from the figures and the stages'
// decode step.
//
//   // the measuring rank:
//   STRATA_ASSIGN_OR_RETURN(LinkMeasure m, MeasureLink(t, next_rank, 30));
//   // its peer, on a ProbeData:
//   STRATA_RETURN_IF_ERROR(AnswerProbe(t, message));
//   // rank 0:
//   WireChoice c = ChooseWire(m, plan.decode_tokens, cfg.hidden, step_s);
//
// The rule (docs/cluster.md, "Links and wire types"): a decode step waits for
// the previous stage's message, so its time on the wire adds to the step. On
// the harness, f32 decode lost 28 % at 100 Mbit/s, where that time is 3.7 %
// of a step, and nothing measurable at 1 Gbit/s (0.4 %): the loss is several
// times the bytes' share (TCP and the token bucket), so f32 is kept while a
// decode micro-batch's f32 bytes take at most kWireShareOfStep of a stage's
// step, and q8_0 (a quarter of the bytes, +0.001 % perplexity) is sent
// otherwise (bf16 when the hidden size is not a multiple of 32) - unless
// those bytes take less time than the link's latency: every type pays the
// latency alike, and a message that mostly waits for it gains little from
// fewer bytes (a small model's step is short, and its cost model's prediction
// leaves out fixed costs that make it longer).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "proto/strata.pb.h"
#include "worker/transport.h"

namespace strata {

struct LinkMeasure {
  double latency_s = 0;    // one way: half the fastest round trip of an empty message
  double bytes_per_s = 0;  // sustained
};

// Sends probes to `peer` and times its answers (about 0.1 s, at most 16 MiB;
// longer on links slower than ~10 Mbit/s). The peer must be answering
// (AnswerProbe) and no other traffic be running between the two.
Result<LinkMeasure> MeasureLink(Transport& t, int peer, double timeout_s);

// The peer's side: answers a ProbeData that asks for a reply.
Status AnswerProbe(Transport& t, const Message& m);

constexpr double kWireShareOfStep = 0.01;

struct WireChoice {
  wire::DType dtype = wire::DTYPE_F32;
  double f32_bytes_s = 0;  // a decode micro-batch's f32 bytes on this link
  double share = 0;        // f32_bytes_s / step_s
};

// step_s: the decode micro-batch time of the pipeline's slowest stage.
WireChoice ChooseWire(const LinkMeasure& link, int64_t decode_tokens, int64_t hidden, double step_s);

// One line for the log: "rank 0 (h1) -> rank 1 (h2): 11.9 MB/s, latency 0.2 ms;
// 4 decode token(s) of f32 take 2.75 ms, 3.8 % of a 73 ms step (f32 up to 1 %): q8_0".
std::string DescribeWireChoice(const std::string& from, const std::string& to, const LinkMeasure& link,
                               int64_t decode_tokens, double step_s, const WireChoice& choice);

}  // namespace strata
