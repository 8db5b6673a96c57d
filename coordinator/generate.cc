// Generation and perplexity drivers (rank 0).
#include "coordinator/generate.h"

#include <algorithm>
#include <cmath>

#include "coordinator/scheduler.h"

namespace strata {

Result<GenerateResult> Generate(Pipeline& pipeline, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt_ids,
                                const GenerateOptions& opts, int64_t n_ctx,
                                const std::function<void(const std::string&)>& on_text) {
  if (prompt_ids.empty()) return InvalidArgument("the prompt is empty (no tokens to start from)");
  const ModelConfig& cfg = pipeline.config();
  std::vector<SequenceJob> jobs(1);
  SequenceJob& job = jobs[0];
  job.seq_id = opts.seq_id;
  job.prompt = prompt_ids;
  job.n_predict = opts.n_predict;
  job.ignore_eos = opts.ignore_eos;
  job.sampling = opts.sampling;
  job.cancel = opts.cancel;
  SchedulerOptions so;
  so.chunk = opts.prefill_chunk;
  so.n_ctx = n_ctx;
  so.eos_ids = cfg.eos_ids;
  GenerateResult res;
  res.prompt_ids = prompt_ids;
  Tokenizer::StreamDecoder stream(tokenizer);
  auto on_token = [&](size_t, int32_t token) {
    if (!opts.ignore_eos && std::find(cfg.eos_ids.begin(), cfg.eos_ids.end(), token) != cfg.eos_ids.end()) return;
    std::string piece = stream.Push(token);
    res.text += piece;
    if (on_text && !piece.empty()) on_text(piece);
  };
  Status st = RunSequences(pipeline, jobs, so, on_token);
  std::string rest = stream.Flush();
  res.text += rest;
  if (on_text && !rest.empty()) on_text(rest);
  if (!st.ok()) return st;
  res.ids = job.ids;
  res.finish_reason = job.finish_reason;
  res.prefill_ms = job.first_token_ms;
  res.n_decoded = std::max(0, static_cast<int>(job.ids.size()) - 1);
  if (res.n_decoded > 0) res.decode_ms = job.done_ms - job.first_token_ms;
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
