// The strata program (cli/main.cc runs it): MPI start-up, the subcommands'
// registration, parsing, and the rank's part of the parsed command. Every
// rank runs it.
#include "cli/strata_main.h"

#include <cstdio>
#include <memory>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/command.h"
#include "cli/convert.h"
#include "cli/diff.h"
#include "cli/inspect.h"
#include "cli/make_model.h"
#include "common/log.h"
#include "common/trace.h"
#include "worker/stage_server.h"
#include "worker/transport.h"

namespace strata {
namespace {

// A command that only rank 0 runs, from its own file's Add/Run pair.
Command RankZeroCommand(CLI::App* app, std::function<int()> run) {
  Command cmd;
  cmd.app = app;
  cmd.run = [run = std::move(run)](Transport*) { return run(); };
  return cmd;
}

// `transport`: the MPI job when it has more than one rank, else null.
int RunCommand(int argc, char** argv, int rank, Transport* transport) {
  CLI::App app{"strata: run decoder-only language models as a pipeline of MPI ranks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "strata 0.1.0");

  std::vector<Command> commands = {
      AddGenerateCommand(app), AddChatCommand(app),  AddPerplexityCommand(app), AddDumpCommand(app),
      AddBenchCommand(app),    AddServeCommand(app), AddTemplateCommand(app),
      RankZeroCommand(AddInspectCommand(app), RunInspect),
      RankZeroCommand(AddDiffCommand(app), RunDiff),
      RankZeroCommand(AddMakeModelCommand(app), RunMakeModel),
  };
  const ConvertCommands conv = AddConvertCommands(app);
  commands.push_back(RankZeroCommand(conv.convert, [conv] { return RunConvertCommand(conv); }));
  commands.push_back(RankZeroCommand(conv.quantize, [conv] { return RunConvertCommand(conv); }));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same flags; only rank 0 speaks.
    if (rank != 0) return e.get_exit_code() == 0 ? 0 : 2;
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  const Command* cmd = nullptr;
  for (const Command& c : commands)
    if (c.app->parsed()) cmd = &c;
  if (cmd == nullptr) return 2;
  if (const CommonFlags* c = cmd->common) {
    if (!c->trace_file.empty()) Tracer::Get().Enable();
    SetLogLevel(*ParseLogLevel(c->log_level));
  }
  if (transport != nullptr) SetLogRank(rank, transport->host());
  if (cmd->common == nullptr) return rank == 0 ? cmd->run(transport) : 0;  // rank 0 alone answers
  if (transport != nullptr && rank != 0) {
    const CommonFlags& c = *cmd->common;
    WorkerOptions wo{c.model, c.threads, "", {0, -1}, !c.trace_file.empty(), c.no_mmap};
    if (cmd->worker_options) cmd->worker_options(&wo);
    return RunWorker(*transport, wo);
  }
  return cmd->run(transport);
}

}  // namespace

int StrataMain(int argc, char** argv, const TestHooks& hooks) {
  std::unique_ptr<Transport> transport;
  if (LaunchedByMpi()) {
    auto t = InitMpiTransport(&argc, &argv, hooks.between_header_and_payload);
    if (!t.ok()) {
      std::fprintf(stderr, "strata: error: %s\n", t.status().message().c_str());
      return 1;
    }
    transport = std::move(t).value();
    if (hooks.wrap_transport) transport = hooks.wrap_transport(std::move(transport));
    // Trace clocks of all ranks start at this common instant.
    transport->Barrier();
    Tracer::Get().SetOrigin();
  }
  Transport* job = transport && transport->size() > 1 ? transport.get() : nullptr;
  int rc = RunCommand(argc, argv, transport ? transport->rank() : 0, job);
  if (transport) {
    transport->Flush();
    FinalizeMpi();
  }
  return rc;
}

}  // namespace strata
