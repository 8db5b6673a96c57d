// `strata convert` (HF checkpoint -> GGUF) and `strata quantize` (GGUF ->
// GGUF of another type); the work is model/gguf_convert.h. One process (rank
// 0; no MPI).
//
//   strata convert ../shared/models/smol-shakespeare -o smol-q4_k_m.gguf --type q4_k_m
//   strata quantize smol-bf16.gguf smol-q8_0.gguf --type q8_0
//
// Wiring in cli/main.cc:
//   ConvertCommands conv = AddConvertCommands(app);   // before app.parse()
//   if (conv.convert->parsed() || conv.quantize->parsed()) return RunConvertCommand(conv);
#pragma once

#include <CLI/CLI.hpp>

namespace strata {

struct ConvertCommands {
  CLI::App* convert;
  CLI::App* quantize;
};

ConvertCommands AddConvertCommands(CLI::App& app);

// 0 on success; 1 with one "strata: error: ..." line on failure.
int RunConvertCommand(const ConvertCommands& cmds);

}  // namespace strata
