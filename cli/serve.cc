// `strata serve`: the OpenAI-compatible HTTP server on rank 0 over the
// pipeline (/v1/chat/completions, /v1/completions, /v1/models, /health);
// under mpirun the other ranks serve their stages.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <thread>

#include "cli/command.h"
#include "cli/supervise.h"
#include "common/log.h"
#include "coordinator/chat_template.h"
#include "coordinator/http_server.h"
#include "coordinator/serving.h"
#include "coordinator/tool_calls.h"

namespace strata {
namespace {

struct ServeFlags {
  CommonFlags common;
  HttpServerOptions http;
  std::string alias;
  int max_queue = 64;
  int cache_seqs = -1;  // the prefix cache's kept sequences; -1: as many as --parallel
  uint64_t cache_mem = uint64_t{1} << 30;
  int inflight = 0;
  int64_t chunk = 0;
  double shutdown_grace = 10;
  SuperviseFlags supervise;  // --supervise (the front) or --front (the job's rank 0)
  std::string chat_template_file;
};

// Set by SIGINT / SIGTERM in `strata serve`: finish, then stop.
std::atomic<int> g_stop_signal{0};
extern "C" void OnStopSignal(int sig) { g_stop_signal.store(sig); }

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The HTTP server on rank 0 over the pipeline. SIGINT / SIGTERM: queued and
// new requests get 503, those running get --shutdown-grace seconds to
// finish, the rest end with an error; then every rank stops.
int RunServe(ServeFlags f, Transport* transport) {
  // The prefix cache's kept sequences: every stage holds room for them on top
  // of --parallel. Not under --supervise yet (its pipeline does not carry
  // KIND_REUSE, and a relaunched job starts with empty caches): off there.
  const bool supervised_mode = f.supervise.enabled || !f.supervise.front.empty();
  f.common.cached_sequences = supervised_mode ? 0 : f.cache_seqs < 0 ? f.common.parallel : f.cache_seqs;
  f.common.cache_bytes = f.cache_mem;
  SupervisedPipeline* supervised = nullptr;  // --supervise: the job runs elsewhere
  auto session = f.supervise.enabled ? OpenFrontSession(f.common, f.supervise, transport, &supervised)
                                     : OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  if (!f.supervise.front.empty()) return RunServeJob(s, f.supervise);
  std::unique_ptr<ChatTemplate> tmpl;
  if (!f.chat_template_file.empty()) {
    auto t = ChatTemplate::FromFile(f.chat_template_file, *s.tokenizer);
    if (!t.ok()) return s.Fail(t.status());
    tmpl = std::make_unique<ChatTemplate>(std::move(*t));
  } else if (auto t = ChatTemplate::ForModel(*s.model, *s.tokenizer); t.ok()) {
    tmpl = std::make_unique<ChatTemplate>(std::move(*t));
  } else if (t.status().kind() == ErrorKind::kNotFound) {
    Log(LogLevel::kWarn, "%s: /v1/chat/completions will answer 400", t.status().message().c_str());
  } else {
    return s.Fail(t.status());
  }
  Metrics metrics;
  ServingOptions so;
  so.metrics = &metrics;
  so.parallel = f.common.parallel;
  so.max_queue = f.max_queue;
  so.scheduler.inflight = f.inflight;
  so.scheduler.chunk = f.chunk;
  so.scheduler.n_ctx = s.n_ctx;
  so.scheduler.eos_ids = s.model->config().eos_ids;
  so.survive_pipeline_failure = supervised != nullptr;
  if (supervised != nullptr) AddSupervisorToHttp(&f.http, supervised);
  {
    auto kv_type = ParseKvType(f.common.kv_type);
    if (!kv_type.ok()) return s.Fail(kv_type.status());
    so.prefix_cache = PrefixCacheOptionsFor(s.model->config(), *kv_type, s.n_ctx, f.common.cached_sequences, f.cache_mem);
  }
  f.http.n_ctx = s.n_ctx;
  f.http.parallel = f.common.parallel;
  f.http.metrics = &metrics;
  if (tmpl) Log(LogLevel::kInfo, "chat template: tool calls in the %s format", ToolCallFormatName(DetectToolCallFormat(tmpl->source())));
  f.http.model_ids = {f.alias.empty() ? BaseName(f.common.model) : f.alias, f.common.model};
  Status failure;
  {
    ServingLoop loop(*s.pipeline, so);
    HttpServer server(loop, *s.tokenizer, tmpl.get(), s.model->config(), f.http);
    auto port = server.Bind();
    if (!port.ok()) {
      (void)loop.Stop(std::chrono::milliseconds(0), "the server did not start");
      return s.Fail(port.status());
    }
    loop.OnFailure([&server](const Status&) { server.Stop(); });
    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::atomic<bool> listening_done{false};
    std::thread watcher([&] {
      while (!listening_done.load()) {
        if (int sig = g_stop_signal.load()) {
          const ServingLoop::Counts c = loop.counts();
          Log(LogLevel::kInfo, "%s: shutting down; %zu running and %zu queued requests get %g s to finish",
              sig == SIGINT ? "SIGINT" : "SIGTERM", c.running, c.queued, f.shutdown_grace);
          if (supervised != nullptr)  // a job being relaunched does not hold the shutdown
            supervised->AbortAfter(std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)));
          (void)loop.Stop(std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)),
                          "the server is shutting down");
          server.Stop();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
    if (so.prefix_cache.max_sequences == 0) {
      Log(LogLevel::kInfo, "prefix cache off (%s)", supervised_mode ? "not under --supervise yet" : "--cache-seqs 0");
    } else if (f.cache_mem == 0) {
      Log(LogLevel::kInfo, "prefix cache: up to %d finished sequence(s) kept", so.prefix_cache.max_sequences);
    } else {
      Log(LogLevel::kInfo, "prefix cache: up to %d finished sequence(s) kept, %.0f MiB", so.prefix_cache.max_sequences,
          static_cast<double>(f.cache_mem) / 1048576.0);
    }
    Log(LogLevel::kInfo, "listening on http://%s:%d (model '%s', %d stage(s), %d sequence(s) at once, queue %d, ctx %lld)",
        f.http.host.c_str(), *port, f.http.model_ids[0].c_str(), s.pipeline->n_stages(), f.common.parallel, f.max_queue,
        static_cast<long long>(s.n_ctx));
    server.Listen();
    listening_done.store(true);
    watcher.join();
    failure = loop.Stop(std::chrono::milliseconds(0), "the server stopped");
    if (so.prefix_cache.max_sequences > 0) {
      const PrefixCacheStats pc = loop.cache_stats();
      Log(LogLevel::kInfo, "prefix cache: %llu of %llu prompts hit, %llu of %llu prompt tokens served from it",
          static_cast<unsigned long long>(pc.hits), static_cast<unsigned long long>(pc.lookups),
          static_cast<unsigned long long>(pc.cached_tokens), static_cast<unsigned long long>(pc.prompt_tokens));
    }
    const HttpServer::Counters c = server.counters();
    Log(LogLevel::kInfo, "served %llu requests: %llu ok, %llu client errors, %llu server errors, %llu disconnected",
        static_cast<unsigned long long>(c.requests), static_cast<unsigned long long>(c.ok),
        static_cast<unsigned long long>(c.client_errors), static_cast<unsigned long long>(c.server_errors),
        static_cast<unsigned long long>(c.disconnects));
  }
  if (!failure.ok()) return s.Fail(failure);
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  return 0;
}

}  // namespace

Command AddServeCommand(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  ServeFlags& srv = *flags;
  CLI::App* sv = app.add_subcommand("serve", "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics, /slots");
  AddCommonFlags(sv, &srv.common, false);
  sv->add_option("--host", srv.http.host, "address to listen on");
  sv->add_option("--port", srv.http.port, "port to listen on (0: any free port, printed at start)")->check(CLI::Range(0, 65535));
  sv->add_option("--parallel", srv.common.parallel, "sequences computed at once (each holds a KV cache on every stage)")
      ->check(CLI::Range(1, 1024));
  sv->add_option("--max-queue", srv.max_queue, "requests waiting for a free sequence; beyond, 503 with Retry-After")
      ->check(CLI::Range(0, 100000));
  sv->add_option("--max-tokens", srv.http.max_tokens, "the most tokens a request may generate (default: the context)")
      ->check(CLI::Range(1, 1 << 30));
  sv->add_option("--max-body", srv.http.max_body_bytes, "largest request body in bytes (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 32));
  sv->add_option("--request-timeout", srv.http.request_timeout_s, "seconds a request may take, queue included (504 beyond)")
      ->check(CLI::Range(0.1, 1e7));
  sv->add_option("--shutdown-grace", srv.shutdown_grace, "on SIGINT / SIGTERM: seconds running requests get to finish")
      ->check(CLI::Range(0.0, 1e6));
  sv->add_option("--max-connections", srv.http.max_connections, "connections open at once; beyond, 503 at once")
      ->check(CLI::Range(1, 1 << 20));
  sv->add_option("--max-connections-per-client", srv.http.max_connections_per_client,
                 "connections open at once from one address (0: no bound); beyond, 503 at once")->check(CLI::Range(0, 1 << 20));
  sv->add_option("--header-timeout", srv.http.header_timeout_s,
                 "seconds a request's line and headers may take, idle keep-alive time included (408 beyond)")->check(CLI::Range(0.1, 3600.0));
  sv->add_option("--chat-template-file", srv.chat_template_file,
                 "a Jinja chat template instead of the model's (its tool-call format is read from it)");
  sv->add_option("--alias", srv.alias, "the model's name in the API (default: the model file's name)");
  sv->add_option("--inflight", srv.inflight, "micro-batches in flight (default: one per stage while decoding, two per stage while prompt chunks wait)")->check(CLI::Range(1, 1024));
  sv->add_option("--cache-seqs", srv.cache_seqs,
                 "finished sequences whose state every stage keeps for later prompts that begin with their tokens (prefix "
                 "cache; default: --parallel; 0: off)")
      ->check(CLI::Range(0, 1 << 16));
  sv->add_option("--cache-mem", srv.cache_mem,
                 "bytes the prefix cache's sequences may hold, all stages together (e.g. 512M, 2G; 0: no byte bound)")
      ->check([](const std::string& v) { return v.find('-') == std::string::npos ? std::string() : "must not be negative"; })
      ->transform(CLI::AsSizeValue(false));
  sv->add_option("--chunk", srv.chunk, "prefill chunk in tokens (default: auto)")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  AddSuperviseFlags(sv, &srv.supervise);

  Command cmd;
  cmd.app = sv;
  cmd.common = &srv.common;
  cmd.run = [flags](Transport* transport) { return RunServe(*flags, transport); };
  return cmd;
}

}  // namespace strata
