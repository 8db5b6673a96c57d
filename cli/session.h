// What the commands that run a model (generate, chat, perplexity, dump,
// bench, serve) share: their common flags, opening the model with its
// tokenizer and a pipeline (over MPI under mpirun with more than one rank,
// else in this process), one way to fail, and the --trace file. Rank 0 only:
// the other ranks serve their stage (cli/main.cc).
//
//   auto session = OpenSession(f.common, transport);
//   if (!session.ok()) return Fail(session.status(), transport);
//   auto res = Generate(*session->pipeline, ...);
//   if (!res.ok()) return session->Fail(res.status());
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "common/status.h"
#include "common/thread_pool.h"
#include "coordinator/pipeline.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "worker/transport.h"

namespace strata {

// --ctx when not given: the model's training context, capped here (a 64k
// model should not allocate 64k of cache unasked).
constexpr int64_t kDefaultCtx = 4096;

struct CommonFlags {
  std::string model;
  int threads = 0;  // 0: the cores this process may use
  int64_t ctx = 0;  // 0: the model's training context, at most kDefaultCtx
  bool force_ctx = false;  // --force-ctx: a --ctx beyond the training context runs anyway
  bool json = false;
  std::string split = "auto";
  std::string wire = "f32";
  bool coordinator_only = false;
  std::string share_lm_head = "auto";  // --share-lm-head (coordinator/lm_head_share.h)
  std::string trace_file;
  std::string log_level = "info";
  double stage_timeout = 300;
  int parallel = 1;  // sequences alive at once (bench, serve)
  bool no_mmap = false;
  std::string kv_type = "f32";  // the KV cache's storage type
  RopeOverride rope;             // --rope-scaling, --rope-scale, --yarn-orig-ctx
  // serve's prefix cache: sequences every stage keeps on top of --parallel,
  // and the bytes they may hold (the stages' memory check counts them).
  int cached_sequences = 0;
  uint64_t cache_bytes = 0;
};

// Registers --rope-scaling, --rope-scale and --yarn-orig-ctx.
void AddRopeFlags(CLI::App* cmd, RopeOverride* rope);

// Registers the common flags on `cmd` (--parallel is the command's own).
void AddCommonFlags(CLI::App* cmd, CommonFlags* f, bool ctx_required);

Result<std::string> ReadFile(const std::string& path);
// The prompt of -p TEXT, or of -f FILE when given.
Result<std::string> PromptText(const std::string& prompt, const std::string& prompt_file);

// Prints the error once (rank 0) and ends the job on every rank: with a
// pipeline, through it; without one, workers still waiting for a plan are
// told to stop. A stage past its deadline cannot be stopped by a message:
// then every rank is ended at once. Returns the exit status, 1.
// `transport`: the MPI job, null without one.
int Fail(const Status& st, Transport* transport, Pipeline* pipeline = nullptr);

// With --trace (`path` non-empty): ends the job, merges rank 0's events with
// the other ranks' into one trace-event JSON file and logs a summary per rank.
Status FinishTrace(const std::string& path, Pipeline* pipeline);

// What every command that runs the model needs.
struct Session {
  Transport* transport = nullptr;  // null without mpirun
  std::unique_ptr<ModelFiles> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Pipeline> pipeline;
  int64_t n_ctx = 0;  // the context every stage was sized for (--ctx or the default)

  int Fail(const Status& st) { return strata::Fail(st, transport, pipeline.get()); }
};

// Opens the model (with --rope-scaling applied), its tokenizer and the
// pipeline. The context is --ctx, or the model's training context up to
// kDefaultCtx; a --ctx beyond what the model (and its rotary scaling) was
// trained for is refused unless --force-ctx.
Result<Session> OpenSession(const CommonFlags& f, Transport* transport);

// The context a session runs at (see OpenSession); errors name --ctx.
Result<int64_t> ResolveContext(const CommonFlags& f, const ModelConfig& c);

}  // namespace strata
