// `strata inspect MODEL`: a dry run that reads only a model's headers (GGUF
// metadata and tensor infos, or config.json + safetensors headers +
// tokenizer files) and never its tensor data, then prints what a run would
// use: format, hyper-parameters, tokenizer summary, the tensor table, bytes
// per layer, and the layer plan for N ranks with each rank's weight and KV
// cache bytes. Runs on one process (rank 0 only; no MPI).
//
//   strata inspect models/smol.gguf --ranks 4 --ctx 8192 --parallel 2
//   strata inspect ../shared/models/smol-shakespeare --split 0-17,18-35 --json
//
// Wiring in cli/main.cc:
//   CLI::App* ins = AddInspectCommand(app);   // before app.parse()
//   if (ins->parsed()) return RunInspect();   // after it
#pragma once

#include <CLI/CLI.hpp>

namespace strata {

// Adds the "inspect" subcommand to `app`; its flags live in inspect.cc.
CLI::App* AddInspectCommand(CLI::App& app);

// Runs the parsed inspect command: 0 on success, 1 (one line on stderr,
// "strata: error: ...") when the model or the plan is bad.
int RunInspect();

}  // namespace strata
