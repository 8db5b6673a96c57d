// `strata serve --supervise` on the command line: the front's flags, its
// session (the model's config and tokenizer, a SupervisedPipeline instead of
// stages), the job's command line, and `serve --front HOST:PORT`, which the
// job's rank 0 runs (coordinator/supervisor.h, coordinator/job_link.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/session.h"
#include "coordinator/http_server.h"
#include "coordinator/supervisor.h"

namespace strata {

struct SuperviseFlags {
  bool enabled = false;        // --supervise: this process is the front
  SuperviseOptions opts;
  std::string mpirun_args;     // split on white space
  std::string front;           // the job's rank 0: the front's HOST:PORT
  uint64_t front_launch = 0;
};

void AddSuperviseFlags(CLI::App* serve, SuperviseFlags* f);

// The front: no stage of its own; `*supervised` is the session's pipeline.
Result<Session> OpenFrontSession(const CommonFlags& c, SuperviseFlags& f, Transport* transport,
                                 SupervisedPipeline** supervised);

// The strata arguments of the job's ranks (serve, the model and every flag
// that shapes the stages); `--front` is added by the pipeline.
std::vector<std::string> JobArgs(const CommonFlags& c, int64_t n_ctx);

// /health reports the job's state; streams get keep-alive comments.
void AddSupervisorToHttp(HttpServerOptions* http, SupervisedPipeline* supervised);

// The job's rank 0: serves the front until it says stop or goes away.
int RunServeJob(Session& s, const SuperviseFlags& f);

}  // namespace strata
