// Google Benchmark of what rank 0 spends per token outside the model:
// sampling one token from SmolLM3's 128256 logits (the filter chains a
// request can ask for, with a repetition penalty over 64 tokens of history),
// and tokenizing Shakespeare with the shared tokenizers (bytes per second).
// These were timing checks in the unit tests; speed is measured here, not
// asserted.
//   strata_rank0_bench --benchmark_min_time=0.3
#include <benchmark/benchmark.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "worker/sampler.h"

namespace strata {
namespace {

const std::string kShared = STRATA_SHARED_DIR;
constexpr int32_t kVocab = 128256;  // SmolLM3 / Llama-3

// top_k, top_p, min_p of each chain (temperature 0.8, penalty 1.1 on all).
struct Chain {
  int32_t top_k;
  float top_p, min_p;
};
constexpr Chain kChains[] = {{40, 0.95f, 0.05f}, {0, 0.95f, 0.05f}, {0, 0.95f, 0.0f}};

void BM_SampleToken(benchmark::State& state) {
  const Chain& c = kChains[state.range(0)];
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = dist(rng);
  std::vector<int32_t> history(64);
  for (int32_t i = 0; i < 64; ++i) history[i] = i * 997;
  SamplingParams p;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.repeat_penalty = 1.1f;
  uint64_t step = 0;
  for (auto _ : state) benchmark::DoNotOptimize(SampleToken(logits.data(), kVocab, p, history, step++));
  state.SetLabel(c.top_k > 0 ? "top-k 40, top-p, min-p (defaults)" : c.min_p > 0 ? "top-p, min-p" : "top-p only");
}
BENCHMARK(BM_SampleToken)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

std::string ReadText() {
  std::ifstream in(kShared + "/text/shakespeare-val.txt", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// arg 0: smol-shakespeare's tokenizer.json; 1: the Llama-3 vocabulary GGUF.
void BM_Encode(benchmark::State& state) {
  Result<VocabSpec> spec = NotFound("no vocabulary");
  if (state.range(0) == 0) {
    spec = LoadVocabFromTokenizerJson(kShared + "/models/smol-shakespeare");
  } else {
    auto gguf = GgufFile::Open(kShared + "/tokenizer/ggml-vocab-llama-bpe.gguf");
    if (gguf.ok()) spec = LoadVocabFromGguf(**gguf);
  }
  auto tok = spec.ok() ? Tokenizer::Create(std::move(spec).value()) : Result<Tokenizer>(spec.status());
  const std::string text = ReadText();
  if (!tok.ok() || text.empty()) {
    state.SkipWithError(tok.ok() ? "no ../shared/text/shakespeare-val.txt" : tok.status().message().c_str());
    return;
  }
  size_t tokens = 0;
  for (auto _ : state) tokens = tok->Encode(text, false).size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.SetLabel(state.range(0) == 0 ? "smol-shakespeare tokenizer.json" : "Llama-3 vocab GGUF");
}
BENCHMARK(BM_Encode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace strata
