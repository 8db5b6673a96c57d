// Text generation and perplexity on rank 0, over any Pipeline.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/pipeline.h"
#include "worker/sampler.h"
#include "model/tokenizer.h"

namespace strata {

struct GenerateOptions {
  int n_predict = 128;
  bool ignore_eos = false;
  SamplingParams sampling;
  uint64_t seq_id = 1;
  int64_t prefill_chunk = 0;  // 0: auto (coordinator/scheduler.h)
  const std::atomic<bool>* cancel = nullptr;  // set: stop at the next token ("cancelled")
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;
  std::string text;
  std::string finish_reason;  // "stop" (an EOS id), "length" or "cancelled"
  double prefill_ms = 0, decode_ms = 0;
  int n_decoded = 0;  // tokens produced by decode steps (all but the first)
};

// Generates after `prompt_ids`; `on_text` (may be empty) receives the text
// as it forms, never a broken UTF-8 sequence.
Result<GenerateResult> Generate(Pipeline& pipeline, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt_ids,
                                const GenerateOptions& opts, int64_t n_ctx,
                                const std::function<void(const std::string&)>& on_text);

struct PerplexityResult {
  double ppl = 0;
  int chunks = 0;
  int64_t tokens_scored = 0;
  int64_t tokens_total = 0;
  double nll_mean = 0;
};

// llama-perplexity's method: the text's tokens cut into floor(n / ctx) chunks,
// each evaluated from an empty cache (its first token replaced by BOS when the
// model adds BOS); the second half of each chunk is scored: tokens
// ctx/2+1 .. ctx-1 from the logits of the position before.
// `progress(chunk, n_chunks, ppl_so_far)` is called after every chunk.
Result<PerplexityResult> Perplexity(Pipeline& pipeline, const std::vector<int32_t>& tokens, int64_t ctx, int32_t bos_id,
                                    bool add_bos, const std::function<void(int, int, double)>& progress);

}  // namespace strata
