// The model-running commands' shared flags and session (see session.h).
// Rank 0.
#include "cli/session.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/trace.h"
#include "coordinator/mpi_pipeline.h"
#include "coordinator/plan.h"
#include "worker/wire_codec.h"

namespace strata {

void AddRopeFlags(CLI::App* cmd, RopeOverride* rope) {
  cmd->add_option("--rope-scaling", rope->scaling, "rotary scaling instead of the model's own: none or yarn")
      ->check(CLI::IsMember({"none", "yarn"}));
  cmd->add_option("--rope-scale", rope->factor, "with --rope-scaling yarn: the factor the context grows by")
      ->check(CLI::Range(1e-6, 1e4));
  cmd->add_option("--yarn-orig-ctx", rope->original_ctx, "with --rope-scaling yarn: the context the model was trained at "
                                                         "(default: its context_length)")
      ->check(CLI::Range(1, 1 << 30));
}

void AddCommonFlags(CLI::App* cmd, CommonFlags* f, bool ctx_required) {
  cmd->add_option("-m,--model", f->model, "model: a .gguf file or an HF model directory")->required();
  cmd->add_option("-t,--threads", f->threads, "compute threads (default: the cores this rank may use)")
      ->check(CLI::Range(1, 1024));
  auto* ctx = cmd->add_option("--ctx", f->ctx,
                              ctx_required ? "context size in tokens"
                                           : "context size in tokens (default: the model's training context, at most 4096)")
                  ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  if (ctx_required) ctx->required();
  cmd->add_flag("--force-ctx", f->force_ctx,
                "run a --ctx beyond the model's training context (its rotary scaling included); quality is not "
                "what the model was trained for");
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->add_option("--split", f->split,
                  "layer plan under mpirun: auto (balances the time the cost model predicts), measure (every rank times "
                  "its layers at start-up; for uneven hosts), ranges such as 0-8,9-17,18-26,27-35, or a plan file (configs/*.json)");
  cmd->add_option("--wire", f->wire,
                  "activation type between ranks: f32 (bit-identical), bf16, f16, q8_0, or auto (each link measured at "
                  "start-up: f32 where it keeps up with decode, q8_0 where it does not)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "q8_0", "auto"}));
  cmd->add_option("--log-level", f->log_level, "error, warn, info or debug (lines are prefixed [rank R host] under mpirun)")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  cmd->add_option("--trace", f->trace_file,
                  "write a Chrome trace-event JSON of every rank (compute per layer, send, receive, waiting) to FILE");
  cmd->add_option("--stage-timeout", f->stage_timeout,
                  "under mpirun: seconds rank 0 waits for a batch before it declares a stage stuck and aborts the job")
      ->check(CLI::Range(0.1, 1e6));
  cmd->add_flag("--no-mmap", f->no_mmap,
                "copy every matrix of each rank's slice into huge-page memory instead of reading the mapped file; "
                "Q4_K / Q6_K / Q8_0 matrices are rebuilt there in the kernels' interleaved layout in any case, so this "
                "moves only the others");
  cmd->add_option("--kv-type", f->kv_type, "KV cache storage type: f32, f16, bf16 or q8_0 (q8_0 needs head_dim % 32 == 0)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  AddRopeFlags(cmd, &f->rope);
  cmd->add_flag("--coordinator-only", f->coordinator_only, "under mpirun: rank 0 only coordinates; stages run on ranks 1..N-1");
  cmd->add_option("--share-lm-head", f->share_lm_head,
                  "under mpirun: rank 0 (the first stage) also computes part of the lm_head, so that decode keeps the first "
                  "and last stage equally busy; auto (rank 0 holds half of the rows and computes those the last stage has not "
                  "reached when its next batch arrives; when decode can fill the pipeline), off, or a fixed fraction of the "
                  "vocabulary (0 to 1); tokens are the same in every case");
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<std::string> PromptText(const std::string& prompt, const std::string& prompt_file) {
  if (prompt_file.empty()) return prompt;
  return ReadFile(prompt_file);
}

Result<int64_t> ResolveContext(const CommonFlags& f, const ModelConfig& c) {
  if (f.ctx <= 0) return c.n_ctx_train > 0 ? std::min<int64_t>(c.n_ctx_train, kDefaultCtx) : kDefaultCtx;
  if (c.n_ctx_train > 0 && f.ctx > c.n_ctx_train) {
    const std::string scaling = c.rope.scaling == RopeScaling::kYarn ? " with its YaRN scaling" : "";
    const std::string msg = "--ctx " + std::to_string(f.ctx) + " is beyond the " + std::to_string(c.n_ctx_train) +
                            " tokens model '" + f.model + "' was trained for" + scaling;
    if (!f.force_ctx)
      return InvalidArgument(msg + ": positions past it are untrained (pass --force-ctx to run anyway" +
                             (c.rope.scaling == RopeScaling::kYarn ? "" : ", or extend it with --rope-scaling yarn --rope-scale F") +
                             ")");
    Log(LogLevel::kWarn, "%s; running anyway (--force-ctx)", msg.c_str());
  }
  return f.ctx;
}

Result<Session> OpenSession(const CommonFlags& f, Transport* transport) {
  Session s;
  s.transport = transport;
  STRATA_ASSIGN_OR_RETURN(s.model, ModelFiles::Open(f.model));
  STRATA_RETURN_IF_ERROR(s.model->ApplyRopeOverride(f.rope));
  STRATA_ASSIGN_OR_RETURN(s.n_ctx, ResolveContext(f, s.model->config()));
  STRATA_ASSIGN_OR_RETURN(VocabSpec vocab, s.model->LoadVocab());
  STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Create(std::move(vocab)));
  s.tokenizer = std::make_unique<Tokenizer>(std::move(tok));
  if (s.tokenizer->vocab_size() > s.model->config().vocab)
    return DataLoss("model '" + f.model + "': the tokenizer has " + std::to_string(s.tokenizer->vocab_size()) +
                    " tokens but the embedding only " + std::to_string(s.model->config().vocab) + " rows");
  s.pool = std::make_unique<ThreadPool>(f.threads > 0 ? f.threads : ThreadPool::AvailableCores());
  if (transport != nullptr) {
    MpiPipelineOptions opts;
    opts.split = f.split;
    opts.n_ctx = s.n_ctx;
    opts.wire_auto = f.wire == "auto";
    if (!opts.wire_auto) {
      STRATA_ASSIGN_OR_RETURN(opts.wire_dtype, ParseWireDType(f.wire));
    }
    opts.coordinator_only = f.coordinator_only;
    STRATA_ASSIGN_OR_RETURN(opts.share_lm_head, ParseLmHeadShare(f.share_lm_head));
    opts.stage_timeout_s = f.stage_timeout;
    opts.max_sequences = f.parallel;
    opts.cached_sequences = f.cached_sequences;
    opts.cache_bytes = f.cache_bytes;
    opts.copy_weights = f.no_mmap;
    STRATA_ASSIGN_OR_RETURN(opts.kv_type, ParseKvType(f.kv_type));
    opts.rope = f.rope;
    STRATA_ASSIGN_OR_RETURN(auto mpi, MpiPipeline::Start(*transport, *s.model, opts, s.pool.get()));
    s.pipeline = std::move(mpi);
  } else {
    if (f.split != "auto" || f.coordinator_only) {
      // One process is one stage: a plan must still be valid for it.
      STRATA_ASSIGN_OR_RETURN(auto plan, MakeLayerPlan(f.split, 1, CostsOf(*s.model)));
      (void)plan;
      if (f.coordinator_only) return InvalidArgument("--coordinator-only needs mpirun with at least 2 ranks");
    }
    StageOptions so;
    so.n_ctx = s.n_ctx;
    so.max_sequences = f.parallel;
    so.cached_sequences = f.cached_sequences;
    so.cache_bytes = f.cache_bytes;
    so.copy_weights = f.no_mmap;
    STRATA_ASSIGN_OR_RETURN(so.kv_type, ParseKvType(f.kv_type));
    STRATA_ASSIGN_OR_RETURN(auto local, LocalPipeline::Create(*s.model, so, s.pool.get()));
    s.pipeline = std::move(local);
  }
  return s;
}

Status FinishTrace(const std::string& path, Pipeline* pipeline) {
  if (path.empty()) return Status::Ok();
  const std::string host = HostName();
  std::vector<TraceEvent> own = Tracer::Get().Take();
  std::string body;
  AppendTraceJson(own, 0, host, &body);
  std::string summary = "trace: rank 0 (" + host + "): " + TraceSummary(own) + "\n";
  if (pipeline != nullptr) {
    pipeline->Shutdown("");
    for (const RankTrace& t : pipeline->TakeTraces()) {
      if (!t.events_json.empty()) body += ",\n" + t.events_json;
      summary += "trace: rank " + std::to_string(t.rank) + " (" + t.host + "): " + t.summary + "\n";
    }
  }
  std::ofstream out(path);
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" << body << "\n]}\n";
  if (!out) return IoError("cannot write the trace to '" + path + "'");
  summary += "trace: written to " + path + " (open in https://ui.perfetto.dev or chrome://tracing)";
  Log(LogLevel::kInfo, "%s", summary.c_str());
  return Status::Ok();
}

int Fail(const Status& st, Transport* transport, Pipeline* pipeline) {
  std::fflush(stdout);
  std::fprintf(stderr, "strata: error: %s\n", st.message().c_str());
  std::fflush(stderr);
  if (st.kind() == ErrorKind::kDeadlineExceeded && transport != nullptr) AbortMpi(1);
  if (pipeline != nullptr) {
    pipeline->Shutdown(st.message());
  } else if (transport != nullptr) {
    MpiPipeline::StopWorkers(*transport, st.message());
  }
  return 1;
}

}  // namespace strata
