// The command-line side of `strata serve --supervise` (see supervise.h): the
// front process (never a rank) and the job's rank 0 (`serve --front`).
#include "cli/supervise.h"

#include <unistd.h>

#include <climits>
#include <sstream>

#include "common/log.h"

namespace strata {

void AddSuperviseFlags(CLI::App* sv, SuperviseFlags* f) {
  sv->add_flag("--supervise", f->enabled,
               "run as the front of a job that it starts with mpirun (this process is not a rank): a failed job is "
               "started again and every answer in progress resumes (docs/reliability.md)");
  sv->add_option("--np", f->opts.np, "with --supervise: ranks of the job (default: every slot of --hostfile)")
      ->check(CLI::Range(1, 4096));
  sv->add_option("--hostfile", f->opts.hostfile, "with --supervise: mpirun's hostfile; hosts that keep failing are left out");
  sv->add_option("--mpirun-args", f->mpirun_args,
                 "with --supervise: mpirun's own options, one string (e.g. --mpirun-args='--oversubscribe --bind-to none')");
  sv->add_option("--front-address", f->opts.front_address,
                 "with --supervise: the IPv4 address the job's rank 0 connects back to (default 127.0.0.1)");
  sv->add_option("--max-host-failures", f->opts.max_host_failures,
                 "with --supervise: failures of one host within --failure-window that exclude it")
      ->check(CLI::Range(1, 1000));
  sv->add_option("--failure-window", f->opts.failure_window_s, "with --supervise: seconds (default 300)")
      ->check(CLI::Range(1.0, 1e7));
  sv->add_option("--job-start-timeout", f->opts.job_start_timeout_s,
                 "with --supervise: seconds a job may take from its launch to serving (default 300)")
      ->check(CLI::Range(1.0, 1e6));
  sv->add_option("--front", f->front, "internal: the job's rank 0 serves the supervising front at HOST:PORT");
  sv->add_option("--front-launch", f->front_launch, "internal: the launch number, said back to the front");
}

std::vector<std::string> JobArgs(const CommonFlags& c, int64_t n_ctx) {
  std::vector<std::string> a = {"serve", "-m", c.model, "--ctx", std::to_string(n_ctx), "--parallel", std::to_string(c.parallel),
                                "--split", c.split, "--wire", c.wire, "--log-level", c.log_level, "--kv-type", c.kv_type};
  std::ostringstream timeout;
  timeout << c.stage_timeout;
  a.insert(a.end(), {"--stage-timeout", timeout.str()});
  if (c.threads > 0) a.insert(a.end(), {"-t", std::to_string(c.threads)});
  if (c.force_ctx) a.push_back("--force-ctx");
  if (c.no_mmap) a.push_back("--no-mmap");
  if (c.coordinator_only) a.push_back("--coordinator-only");
  if (!c.rope.scaling.empty()) a.insert(a.end(), {"--rope-scaling", c.rope.scaling});
  if (c.rope.factor > 0) a.insert(a.end(), {"--rope-scale", std::to_string(c.rope.factor)});
  if (c.rope.original_ctx > 0) a.insert(a.end(), {"--yarn-orig-ctx", std::to_string(c.rope.original_ctx)});
  return a;
}

Result<Session> OpenFrontSession(const CommonFlags& c, SuperviseFlags& f, Transport* transport,
                                 SupervisedPipeline** supervised) {
  if (transport != nullptr) return InvalidArgument("--supervise: run the front without mpirun; it starts the job itself");
  if (!f.front.empty()) return InvalidArgument("--supervise and --front: a front is not a job's rank");
  if (!c.trace_file.empty()) return InvalidArgument("--supervise: --trace is not supported (the job is started again)");
  Session s;
  STRATA_ASSIGN_OR_RETURN(s.model, ModelFiles::Open(c.model));
  STRATA_RETURN_IF_ERROR(s.model->ApplyRopeOverride(c.rope));
  const ModelConfig& cfg = s.model->config();
  if (c.ctx <= 0) {
    s.n_ctx = cfg.n_ctx_train > 0 ? std::min<int64_t>(cfg.n_ctx_train, kDefaultCtx) : kDefaultCtx;
  } else {
    s.n_ctx = c.ctx;  // the job checks it against the training context (--force-ctx)
  }
  STRATA_ASSIGN_OR_RETURN(VocabSpec vocab, s.model->LoadVocab());
  STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Create(std::move(vocab)));
  s.tokenizer = std::make_unique<Tokenizer>(std::move(tok));
  SuperviseOptions o = f.opts;
  std::istringstream words(f.mpirun_args);
  for (std::string w; words >> w;) o.mpirun_args.push_back(w);
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return IoError("cannot find this program's path (/proc/self/exe)");
  o.binary.assign(exe, static_cast<size_t>(n));
  o.job_args = JobArgs(c, s.n_ctx);
  // The job's own deadline (--stage-timeout) finds a stopped worker; no
  // reply for longer than that means rank 0 itself is stuck.
  o.reply_timeout_s = c.stage_timeout + 10;
  STRATA_ASSIGN_OR_RETURN(auto p, SupervisedPipeline::Create(cfg, o));
  *supervised = p.get();
  s.pipeline = std::move(p);
  return s;
}

void AddSupervisorToHttp(HttpServerOptions* http, SupervisedPipeline* supervised) {
  http->sse_keepalive_s = 1;
  http->health = [supervised](nlohmann::json* j) {
    const SupervisorState s = supervised->state();
    nlohmann::json sup = {{"state", s.state}, {"launches", s.launches}, {"recoveries", s.recoveries},
                          {"hosts", s.hosts}, {"excluded_hosts", s.excluded_hosts}};
    if (!s.last_failure.empty()) sup["last_failure"] = s.last_failure;
    if (s.recoveries > 0)
      sup["last_recovery"] = {{"teardown_s", s.last_detect_s}, {"relaunch_s", s.last_relaunch_s},
                              {"reprefill_s", s.last_reprefill_s}, {"sequences", s.last_sequences}, {"tokens", s.last_tokens}};
    if (s.state == "down") sup["retry_in_s"] = s.retry_in_s;
    (*j)["supervisor"] = sup;
    if ((*j)["status"] == "ok" && (s.state == "down" || s.state == "recovering" || s.state == "starting" || s.state == "lost"))
      (*j)["status"] = s.state == "down" ? "unavailable" : "recovering";
  };
}

int RunServeJob(Session& s, const SuperviseFlags& f) {
  const Status st = ServeFront(*s.pipeline, f.front, f.front_launch, s.n_ctx);
  if (!st.ok()) return s.Fail(st);
  s.pipeline->Shutdown("");
  return 0;
}

}  // namespace strata
