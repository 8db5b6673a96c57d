// `strata perplexity`: llama-perplexity's measure over a text file (chunks
// of --ctx tokens, the second half of each scored). Rank 0; under mpirun the
// other ranks serve their stages.
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "coordinator/generate.h"

namespace strata {
namespace {

struct PerplexityFlags {
  CommonFlags common;
  std::string text_file;
};

int RunPerplexity(const PerplexityFlags& f, Transport* transport) {
  auto text = ReadFile(f.text_file);
  if (!text.ok()) return Fail(text.status(), transport);
  auto session = OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  std::vector<int32_t> tokens = s.tokenizer->Encode(*text, s.tokenizer->add_bos());
  auto progress = [](int chunk, int n, double ppl) {
    std::fprintf(stderr, "\rperplexity: chunk %d/%d, ppl %.4f", chunk, n, ppl);
    if (chunk == n) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
  auto res = Perplexity(*s.pipeline, tokens, s.n_ctx, s.tokenizer->bos_id(), s.tokenizer->add_bos(), progress);
  if (!res.ok()) return s.Fail(res.status());
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  if (f.common.json) {
    nlohmann::json j = {{"ppl", res->ppl}, {"chunks", res->chunks}, {"tokens_scored", res->tokens_scored},
                        {"tokens", res->tokens_total}, {"ctx", s.n_ctx}};
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("perplexity %.4f over %d chunks of %lld tokens (%lld tokens scored)\n", res->ppl, res->chunks,
                static_cast<long long>(s.n_ctx), static_cast<long long>(res->tokens_scored));
  }
  return 0;
}

}  // namespace

Command AddPerplexityCommand(CLI::App& app) {
  auto flags = std::make_shared<PerplexityFlags>();
  PerplexityFlags& ppl = *flags;
  CLI::App* p = app.add_subcommand("perplexity", "perplexity of a text file (llama-perplexity's method)");
  AddCommonFlags(p, &ppl.common, true);
  p->add_option("-f,--file", ppl.text_file, "text file")->required();

  Command cmd;
  cmd.app = p;
  cmd.common = &ppl.common;
  cmd.run = [flags](Transport* transport) { return RunPerplexity(*flags, transport); };
  return cmd;
}

}  // namespace strata
