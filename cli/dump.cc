// `strata dump`: runs one prompt and writes the residual stream after the
// embedding and after every layer, the final norm's output and the logits as
// .npy files, with a manifest naming the rank and host that computed each.
// Rank 0 writes the manifest and the logits; under mpirun every rank writes
// the layers it owns.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/log.h"
#include "common/npy.h"
#include "coordinator/mpi_pipeline.h"

namespace strata {
namespace {

struct DumpFlags {
  CommonFlags common;
  std::string prompt, prompt_file, out_dir, layers;
  std::vector<int32_t> ids;  // --ids: the tokens themselves instead of a prompt
};

// "A-B" or "A" (inclusive); empty: every layer.
Result<LayerRange> ParseLayerRange(const std::string& spec, int n_layers) {
  if (spec.empty()) return LayerRange{0, n_layers - 1};
  int a = -1, b = -1;
  char dash = 0, extra = 0;
  int n = std::sscanf(spec.c_str(), "%d%c%d%c", &a, &dash, &b, &extra);
  if (n == 1) b = a;
  else if (n != 3 || dash != '-') return InvalidArgument("--layers '" + spec + "': expected A-B or A");
  if (a < 0 || b < a || b >= n_layers)
    return InvalidArgument("--layers '" + spec + "': outside the model's " + std::to_string(n_layers) + " layers or reversed");
  return LayerRange{a, b};
}

int RunDump(const DumpFlags& f, Transport* transport) {
  std::string prompt;
  if (f.ids.empty()) {
    auto prompt_text = PromptText(f.prompt, f.prompt_file);
    if (!prompt_text.ok()) return Fail(prompt_text.status(), transport);
    prompt = *prompt_text;
  }
  if (Status st = MakeDirectories(f.out_dir); !st.ok()) return Fail(st, transport);
  auto session = OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  const ModelConfig& cfg = s.model->config();
  auto layers = ParseLayerRange(f.layers, cfg.n_layers);
  if (!layers.ok()) return s.Fail(layers.status());
  // Who computed which layer: the plan (one rank holds everything without MPI).
  s.pipeline->EnableDump(f.out_dir, *layers);
  nlohmann::json plan = nlohmann::json::array();
  nlohmann::json layer_owner = nlohmann::json::object();
  for (const StagePlacement& p : s.pipeline->Placement()) {
    plan.push_back({{"rank", p.rank}, {"host", p.host}, {"first_layer", p.layers.first}, {"last_layer", p.layers.last}});
    for (int l = p.layers.first; l <= p.layers.last; ++l)
      layer_owner[std::to_string(l)] = {{"rank", p.rank}, {"host", p.host}};
  }
  std::vector<int32_t> ids = f.ids.empty() ? s.tokenizer->Encode(prompt, s.tokenizer->add_bos()) : f.ids;
  if (ids.empty()) return s.Fail(InvalidArgument("the prompt is empty"));
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab)
      return s.Fail(InvalidArgument("--ids: token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(cfg.vocab)));
  if (static_cast<int64_t>(ids.size()) > s.n_ctx)
    return s.Fail(InvalidArgument("the prompt has " + std::to_string(ids.size()) + " tokens, more than --ctx " + std::to_string(s.n_ctx)));
  SequenceRequest req;
  req.seq_id = 1;
  req.tokens = ids;
  req.output = SequenceRequest::Output::kLogits;
  req.logits_from = 0;
  auto out = s.pipeline->Forward({req});
  if (!out.ok()) return s.Fail(out.status());
  const int64_t n_tok = static_cast<int64_t>(ids.size());
  if (Status st = WriteNpyF32(f.out_dir + "/logits.npy", {n_tok, cfg.vocab}, (*out)[0].logits.data()); !st.ok())
    return s.Fail(st);
  if (Status st = s.pipeline->Free(1); !st.ok()) return s.Fail(st);
  nlohmann::json files = {{"embeddings", "embeddings.npy"}, {"final_norm", "final_norm.npy"}, {"logits", "logits.npy"}};
  for (int l = layers->first; l <= layers->last; ++l) {
    char name[32];
    std::snprintf(name, sizeof name, "layer_%03d.npy", l);
    files["layer_" + std::to_string(l)] = name;
  }
  nlohmann::json manifest = {
      {"model", f.common.model}, {"model_fingerprint", s.model->Fingerprint()}, {"architecture", cfg.arch},
      {"prompt_ids", ids}, {"n_tokens", n_tok}, {"n_layers", cfg.n_layers}, {"hidden", cfg.hidden}, {"vocab", cfg.vocab},
      {"dumped_layers", {layers->first, layers->last}}, {"plan", plan}, {"layers", layer_owner}, {"files", files},
      {"dtype", "float32"}, {"wire", f.common.wire}};
  std::ofstream m(f.out_dir + "/manifest.json");
  m << manifest.dump(1) << "\n";
  if (!m) return s.Fail(IoError("cannot write '" + f.out_dir + "/manifest.json'"));
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  if (f.common.json) std::cout << nlohmann::json({{"dir", f.out_dir}, {"tokens", n_tok}, {"layers", {layers->first, layers->last}}}).dump() << std::endl;
  else Log(LogLevel::kInfo, "dumped %lld tokens, layers %d-%d, logits into %s", static_cast<long long>(n_tok), layers->first, layers->last, f.out_dir.c_str());
  return 0;
}

}  // namespace

Command AddDumpCommand(CLI::App& app) {
  auto flags = std::make_shared<DumpFlags>();
  DumpFlags& dmp = *flags;
  CLI::App* d = app.add_subcommand("dump", "write the residual stream after the embedding and every layer, and the logits, as .npy");
  AddCommonFlags(d, &dmp.common, false);
  auto* dp = d->add_option("-p,--prompt", dmp.prompt, "prompt text");
  auto* df = d->add_option("-f,--file", dmp.prompt_file, "read the prompt from a file");
  auto* di = d->add_option("--ids", dmp.ids, "the token ids themselves, A,B,C (instead of a prompt)")->delimiter(',');
  dp->excludes(df);
  di->excludes(dp)->excludes(df);
  d->add_option("-o,--out", dmp.out_dir, "output directory (each rank writes the layers it owns)")->required();
  d->add_option("--layers", dmp.layers, "only these layers, A-B (default: all)");

  Command cmd;
  cmd.app = d;
  cmd.common = &dmp.common;
  cmd.run = [flags](Transport* transport) {
    if (flags->prompt.empty() && flags->prompt_file.empty() && flags->ids.empty()) {
      std::fprintf(stderr, "strata dump: give a prompt with -p TEXT or -f FILE, or token ids with --ids\n");
      if (transport != nullptr) MpiPipeline::StopWorkers(*transport, "no prompt");
      return 2;
    }
    return RunDump(*flags, transport);
  };
  // Every rank writes the layers it owns; a bad --layers is reported by rank 0.
  cmd.worker_options = [flags](WorkerOptions* wo) {
    wo->dump_dir = flags->out_dir;
    auto m = ModelFiles::Open(flags->common.model);
    if (m.ok()) {
      auto r = ParseLayerRange(flags->layers, (*m)->config().n_layers);
      if (r.ok()) wo->dump_layers = *r;
    }
  };
  return cmd;
}

}  // namespace strata
