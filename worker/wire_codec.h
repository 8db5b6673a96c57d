// Activations on the wire: float32 (bit-identical, the default) or a smaller
// encoding (bf16, f16, q8_0) that trades accuracy for traffic. Plus the
// conversions between the in-process batch description and its protobuf form.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/strata.pb.h"
#include "worker/batch.h"

namespace strata {

Result<wire::DType> ParseWireDType(const std::string& name);  // f32, bf16, f16, q8_0
const char* WireDTypeName(wire::DType d);
// Bytes of n_rows rows of `hidden` values in dtype d (q8_0 needs hidden % 32 == 0).
Result<uint64_t> WireBytes(wire::DType d, int64_t n_rows, int64_t hidden);
std::vector<uint8_t> EncodeActivations(wire::DType d, const float* x, int64_t n_rows, int64_t hidden);
// Checks the size against the header before decoding.
Status DecodeActivations(wire::DType d, const std::vector<uint8_t>& bytes, int64_t n_rows, int64_t hidden, float* x);

void ToWire(const SequenceRequest& r, wire::SequenceEntry* e);
// Validates what a peer sent (counts, ranges) before trusting it.
Result<SequenceRequest> FromWire(const wire::SequenceEntry& e);

// A sampled token's log-probabilities in a result (the last stage's and the
// supervised job's replies), and back, checked against kMaxTopLogprobs.
void LogprobsToWire(const TokenLogprobs& lp, wire::SequenceOutput* o);
// Empty when the output carries none.
Result<std::optional<TokenLogprobs>> LogprobsFromWire(const wire::SequenceOutput& o);

}  // namespace strata
