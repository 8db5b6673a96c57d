// Activation encodings and batch <-> protobuf conversion.
#include "worker/wire_codec.h"

#include <cstring>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace strata {

Result<wire::DType> ParseWireDType(const std::string& name) {
  if (name == "f32") return wire::DTYPE_F32;
  if (name == "bf16") return wire::DTYPE_BF16;
  if (name == "f16") return wire::DTYPE_F16;
  if (name == "q8_0") return wire::DTYPE_Q8_0;
  return InvalidArgument("--wire '" + name + "': expected f32, bf16, f16 or q8_0");
}

const char* WireDTypeName(wire::DType d) {
  switch (d) {
    case wire::DTYPE_BF16: return "bf16";
    case wire::DTYPE_F16: return "f16";
    case wire::DTYPE_Q8_0: return "q8_0";
    default: return "f32";
  }
}

Result<uint64_t> WireBytes(wire::DType d, int64_t n_rows, int64_t hidden) {
  if (n_rows < 0 || hidden <= 0 || n_rows > (int64_t{1} << 24) || hidden > (int64_t{1} << 20))
    return InvalidArgument("activation shape " + std::to_string(n_rows) + "x" + std::to_string(hidden) + " is out of range");
  const uint64_t n = static_cast<uint64_t>(n_rows) * static_cast<uint64_t>(hidden);
  switch (d) {
    case wire::DTYPE_F32: return n * 4;
    case wire::DTYPE_BF16:
    case wire::DTYPE_F16: return n * 2;
    case wire::DTYPE_Q8_0: {
      STRATA_ASSIGN_OR_RETURN(uint64_t row, RowBytes(TensorType::kQ8_0, hidden));
      return row * static_cast<uint64_t>(n_rows);
    }
    default: return InvalidArgument("unknown wire dtype " + std::to_string(static_cast<int>(d)));
  }
}

std::vector<uint8_t> EncodeActivations(wire::DType d, const float* x, int64_t n_rows, int64_t hidden) {
  const uint64_t bytes = *WireBytes(d, n_rows, hidden);
  std::vector<uint8_t> out(bytes);
  const int64_t n = n_rows * hidden;
  switch (d) {
    case wire::DTYPE_F32: std::memcpy(out.data(), x, bytes); break;
    case wire::DTYPE_BF16: {
      auto* p = reinterpret_cast<uint16_t*>(out.data());
      for (int64_t i = 0; i < n; ++i) p[i] = F32ToBf16(x[i]);
      break;
    }
    case wire::DTYPE_F16: {
      auto* p = reinterpret_cast<uint16_t*>(out.data());
      for (int64_t i = 0; i < n; ++i) p[i] = F32ToF16(x[i]);
      break;
    }
    case wire::DTYPE_Q8_0: {
      const uint64_t row = bytes / static_cast<uint64_t>(n_rows ? n_rows : 1);
      for (int64_t r = 0; r < n_rows; ++r) QuantizeRow(TensorType::kQ8_0, x + r * hidden, out.data() + r * row, hidden);
      break;
    }
    default: break;
  }
  return out;
}

Status DecodeActivations(wire::DType d, const std::vector<uint8_t>& bytes, int64_t n_rows, int64_t hidden, float* x) {
  STRATA_ASSIGN_OR_RETURN(uint64_t want, WireBytes(d, n_rows, hidden));
  if (bytes.size() != want)
    return DataLoss("activation payload is " + std::to_string(bytes.size()) + " bytes, expected " + std::to_string(want) +
                    " for " + std::to_string(n_rows) + " rows of " + std::to_string(hidden) + " " + WireDTypeName(d));
  const int64_t n = n_rows * hidden;
  switch (d) {
    case wire::DTYPE_F32: std::memcpy(x, bytes.data(), want); break;
    case wire::DTYPE_BF16:
    case wire::DTYPE_F16: {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, bytes.data() + 2 * i, 2);
        x[i] = d == wire::DTYPE_BF16 ? Bf16ToF32(v) : F16ToF32(v);
      }
      break;
    }
    case wire::DTYPE_Q8_0: {
      const uint64_t row = want / static_cast<uint64_t>(n_rows ? n_rows : 1);
      for (int64_t r = 0; r < n_rows; ++r) DequantizeRow(TensorType::kQ8_0, bytes.data() + r * row, x + r * hidden, hidden);
      break;
    }
    default: return DataLoss("unknown wire dtype");
  }
  return Status::Ok();
}

void ToWire(const SequenceRequest& r, wire::SequenceEntry* e) {
  e->set_seq_id(r.seq_id);
  e->set_pos0(r.pos0);
  e->set_n_tok(static_cast<int64_t>(r.tokens.size()));
  e->set_output(r.output == SequenceRequest::Output::kSample   ? wire::SequenceEntry::OUTPUT_SAMPLE
                : r.output == SequenceRequest::Output::kLogits ? wire::SequenceEntry::OUTPUT_LOGITS
                                                               : wire::SequenceEntry::OUTPUT_NONE);
  e->set_logits_from(r.logits_from);
  wire::Sampling* s = e->mutable_sampling();
  s->set_temperature(r.sampling.temperature);
  s->set_top_k(r.sampling.top_k);
  s->set_top_p(r.sampling.top_p);
  s->set_min_p(r.sampling.min_p);
  s->set_repeat_penalty(r.sampling.repeat_penalty);
  s->set_repeat_last_n(r.sampling.repeat_last_n);
  s->set_seed(r.sampling.seed);
  for (const auto& [id, bias] : r.sampling.logit_bias) {
    s->add_bias_ids(id);
    s->add_bias_values(bias);
  }
  e->set_step(r.step);
  e->mutable_recent()->Assign(r.recent.begin(), r.recent.end());
  e->mutable_tokens()->Assign(r.tokens.begin(), r.tokens.end());
  if (r.top_logprobs >= 0) {
    e->set_logprobs(true);
    e->set_top_logprobs(r.top_logprobs);
  }
}

Result<SequenceRequest> FromWire(const wire::SequenceEntry& e) {
  SequenceRequest r;
  r.seq_id = e.seq_id();
  r.pos0 = e.pos0();
  if (e.n_tok() <= 0 || e.n_tok() != e.tokens_size())
    return DataLoss("sequence " + std::to_string(e.seq_id()) + ": n_tok " + std::to_string(e.n_tok()) + " with " +
                    std::to_string(e.tokens_size()) + " token ids");
  if (e.pos0() < 0) return DataLoss("sequence " + std::to_string(e.seq_id()) + ": negative position");
  r.tokens.assign(e.tokens().begin(), e.tokens().end());
  switch (e.output()) {
    case wire::SequenceEntry::OUTPUT_NONE: r.output = SequenceRequest::Output::kNone; break;
    case wire::SequenceEntry::OUTPUT_SAMPLE: r.output = SequenceRequest::Output::kSample; break;
    case wire::SequenceEntry::OUTPUT_LOGITS: r.output = SequenceRequest::Output::kLogits; break;
    default: return DataLoss("sequence " + std::to_string(e.seq_id()) + ": unknown output kind");
  }
  r.logits_from = e.logits_from();
  const wire::Sampling& s = e.sampling();
  r.sampling.temperature = s.temperature();
  r.sampling.top_k = s.top_k();
  r.sampling.top_p = s.top_p();
  r.sampling.min_p = s.min_p();
  r.sampling.repeat_penalty = s.repeat_penalty();
  r.sampling.repeat_last_n = s.repeat_last_n();
  r.sampling.seed = s.seed();
  if (s.bias_ids_size() != s.bias_values_size())
    return DataLoss("sequence " + std::to_string(e.seq_id()) + ": " + std::to_string(s.bias_ids_size()) +
                    " logit bias ids with " + std::to_string(s.bias_values_size()) + " values");
  if (static_cast<size_t>(s.bias_ids_size()) > kMaxLogitBias)
    return DataLoss("sequence " + std::to_string(e.seq_id()) + ": " + std::to_string(s.bias_ids_size()) + " logit biases");
  for (int k = 0; k < s.bias_ids_size(); ++k) r.sampling.logit_bias.emplace_back(s.bias_ids(k), s.bias_values(k));
  if (r.output == SequenceRequest::Output::kSample) {
    Status st = ValidateSamplingParams(r.sampling);
    if (!st.ok()) return DataLoss("sequence " + std::to_string(e.seq_id()) + ": " + st.message());
  }
  r.step = e.step();
  if (e.logprobs()) {
    if (e.top_logprobs() < 0 || e.top_logprobs() > kMaxTopLogprobs)
      return DataLoss("sequence " + std::to_string(e.seq_id()) + ": top_logprobs " + std::to_string(e.top_logprobs()) +
                      " is outside [0, " + std::to_string(kMaxTopLogprobs) + "]");
    r.top_logprobs = e.top_logprobs();
  }
  r.recent.assign(e.recent().begin(), e.recent().end());
  return r;
}

void LogprobsToWire(const TokenLogprobs& lp, wire::SequenceOutput* o) {
  o->set_has_logprobs(true);
  o->set_logprob(lp.logprob);
  for (const auto& [id, logprob] : lp.top) {
    o->add_top_ids(id);
    o->add_top_logprobs(logprob);
  }
}

Result<std::optional<TokenLogprobs>> LogprobsFromWire(const wire::SequenceOutput& o) {
  if (!o.has_logprobs()) return std::optional<TokenLogprobs>();
  if (o.top_ids_size() != o.top_logprobs_size() || o.top_ids_size() > kMaxTopLogprobs)
    return DataLoss("sequence " + std::to_string(o.seq_id()) + ": " + std::to_string(o.top_ids_size()) +
                    " top ids with " + std::to_string(o.top_logprobs_size()) + " log-probabilities");
  TokenLogprobs lp;
  lp.id = o.token();
  lp.logprob = o.logprob();
  for (int k = 0; k < o.top_ids_size(); ++k) lp.top.emplace_back(o.top_ids(k), o.top_logprobs(k));
  return std::optional<TokenLogprobs>(std::move(lp));
}

}  // namespace strata
