// One strata subcommand as cli/main.cc drives it. Every command lives in a
// file of its own (cli/generate.cc, cli/serve.cc, ...) holding its flags, the
// parser registration and the code rank 0 runs; main.cc only registers them,
// parses, and picks the parsed one. Every rank parses the same flags.
//
// Two kinds:
//   - commands that run the model over the pipeline (`common` set): rank 0
//     runs `run`; under mpirun the other ranks serve their stage (RunWorker)
//     with options taken from the common flags (and `worker_options`);
//   - the others (template, inspect, diff, make-model, convert, quantize):
//     rank 0 alone runs `run`, the other ranks exit 0 at once.
//
// Adding a flag to a command touches only that command's file.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "cli/session.h"
#include "worker/stage_server.h"
#include "worker/transport.h"

namespace strata {

struct Command {
  CLI::App* app = nullptr;
  // Rank 0 (the only process without mpirun); returns the exit status.
  // `transport`: the MPI job when it has more than one rank, else null.
  std::function<int(Transport* transport)> run;
  // The common flags of a command that runs the model; null for the others.
  const CommonFlags* common = nullptr;
  // Under mpirun, what the worker ranks need beyond the common flags.
  std::function<void(WorkerOptions*)> worker_options;
};

// The model-running commands.
Command AddGenerateCommand(CLI::App& app);
Command AddChatCommand(CLI::App& app);
Command AddPerplexityCommand(CLI::App& app);
Command AddDumpCommand(CLI::App& app);
Command AddBenchCommand(CLI::App& app);
Command AddServeCommand(CLI::App& app);
// Rank 0 alone.
Command AddTemplateCommand(CLI::App& app);

}  // namespace strata
