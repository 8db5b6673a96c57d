// Generation and perplexity drivers (rank 0).
#include "coordinator/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace strata {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<int32_t> Tail(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t n) {
  std::vector<int32_t> all(a);
  all.insert(all.end(), b.begin(), b.end());
  if (all.size() > n) all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(n));
  return all;
}

}  // namespace

Result<GenerateResult> Generate(Pipeline& pipeline, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt_ids,
                                const GenerateOptions& opts, int64_t n_ctx,
                                const std::function<void(const std::string&)>& on_text) {
  STRATA_RETURN_IF_ERROR(ValidateSamplingParams(opts.sampling));
  if (prompt_ids.empty()) return InvalidArgument("the prompt is empty (no tokens to start from)");
  if (static_cast<int64_t>(prompt_ids.size()) >= n_ctx)
    return InvalidArgument("the prompt has " + std::to_string(prompt_ids.size()) + " tokens, which does not fit the context of " +
                           std::to_string(n_ctx) + " (raise --ctx)");
  const ModelConfig& cfg = pipeline.config();
  GenerateResult res;
  res.prompt_ids = prompt_ids;
  res.finish_reason = "length";
  Tokenizer::StreamDecoder stream(tokenizer);
  const size_t recent_n = static_cast<size_t>(std::max(0, opts.sampling.repeat_last_n));

  SequenceRequest req;
  req.seq_id = opts.seq_id;
  req.pos0 = 0;
  req.tokens = prompt_ids;
  req.output = SequenceRequest::Output::kSample;
  req.sampling = opts.sampling;
  auto t0 = std::chrono::steady_clock::now();
  auto t_decode = t0;
  Status status;
  for (int step = 0; step < opts.n_predict; ++step) {
    req.step = static_cast<uint64_t>(step);
    req.recent = recent_n ? Tail(prompt_ids, res.ids, recent_n) : std::vector<int32_t>{};
    auto out = pipeline.Forward({req});
    if (!out.ok()) {
      status = out.status();
      break;
    }
    const int32_t token = (*out)[0].token;
    if (step == 0) {
      res.prefill_ms = MsSince(t0);
      t_decode = std::chrono::steady_clock::now();
    } else {
      ++res.n_decoded;
    }
    res.ids.push_back(token);
    if (!opts.ignore_eos && std::find(cfg.eos_ids.begin(), cfg.eos_ids.end(), token) != cfg.eos_ids.end()) {
      res.finish_reason = "stop";
      break;
    }
    std::string piece = stream.Push(token);
    res.text += piece;
    if (on_text && !piece.empty()) on_text(piece);
    req.pos0 += static_cast<int64_t>(req.tokens.size());
    if (req.pos0 + 1 > n_ctx) break;  // the context is full
    req.tokens = {token};
  }
  std::string rest = stream.Flush();
  res.text += rest;
  if (on_text && !rest.empty()) on_text(rest);
  if (res.n_decoded > 0) res.decode_ms = MsSince(t_decode);
  Status freed = pipeline.Free(opts.seq_id);
  if (!status.ok()) return status;
  if (!freed.ok()) return freed;
  return res;
}

Result<PerplexityResult> Perplexity(Pipeline& pipeline, const std::vector<int32_t>& tokens, int64_t ctx, int32_t bos_id,
                                    bool add_bos, const std::function<void(int, int, double)>& progress) {
  if (ctx < 4) return InvalidArgument("--ctx " + std::to_string(ctx) + " is too small for perplexity (at least 4)");
  const int64_t n_chunks = static_cast<int64_t>(tokens.size()) / ctx;
  if (n_chunks < 1)
    return InvalidArgument("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one chunk of --ctx " +
                           std::to_string(ctx));
  const int32_t vocab = pipeline.config().vocab;
  const int64_t first = ctx / 2;
  PerplexityResult res;
  res.tokens_total = static_cast<int64_t>(tokens.size());
  double nll_sum = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    SequenceRequest req;
    req.seq_id = static_cast<uint64_t>(c + 1);
    req.pos0 = 0;
    req.tokens.assign(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
    if (add_bos && bos_id >= 0) req.tokens[0] = bos_id;
    req.output = SequenceRequest::Output::kLogits;
    req.logits_from = first;
    auto out = pipeline.Forward({req});
    Status freed = pipeline.Free(req.seq_id);
    if (!out.ok()) return out.status();
    if (!freed.ok()) return freed;
    const std::vector<float>& logits = (*out)[0].logits;
    // Row i holds the logits at position first + i; it predicts token first + i + 1.
    for (int64_t i = 0; first + i + 1 < ctx; ++i) {
      const float* row = logits.data() + i * vocab;
      const int32_t target = tokens[c * ctx + first + i + 1];
      float max_v = row[0];
      for (int32_t v = 1; v < vocab; ++v) max_v = std::max(max_v, row[v]);
      double sum = 0;
      for (int32_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max_v);
      nll_sum += -(static_cast<double>(row[target]) - max_v - std::log(sum));
      ++res.tokens_scored;
    }
    res.chunks = static_cast<int>(c + 1);
    if (progress) progress(res.chunks, static_cast<int>(n_chunks), std::exp(nll_sum / res.tokens_scored));
  }
  res.nll_mean = nll_sum / res.tokens_scored;
  res.ppl = std::exp(res.nll_mean);
  return res;
}

}  // namespace strata
