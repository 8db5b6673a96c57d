// `strata make-model`: writes a GGUF with a real architecture's shapes and
// seeded random weights, for full-size benchmarks where no trained model can
// be downloaded. The tokenizer comes from a real vocabulary GGUF (default:
// ../shared/tokenizer/ggml-vocab-llama-bpe.gguf, the Llama-3 vocabulary that
// SmolLM3 uses), so prompts tokenize as they would on the real model, and
// llama.cpp loads the file too. Quantization is strata's own (kernels/quant.h).
// Runs in one process (rank 0; no MPI).
//
//   strata make-model --preset smollm3-3b --type q4_k_m -o /tmp/smollm3-3b-q4_k_m.gguf
//   strata make-model --preset smollm3-tiny --type q8_0 -o /tmp/tiny.gguf --seed 7
//
// Wiring in cli/main.cc:
//   CLI::App* mk = AddMakeModelCommand(app);   // before app.parse()
//   if (mk->parsed()) return RunMakeModel();   // after it
#pragma once

#include <CLI/CLI.hpp>

namespace strata {

CLI::App* AddMakeModelCommand(CLI::App& app);

// 0 on success; 1 with one "strata: error: ..." line on failure.
int RunMakeModel();

}  // namespace strata
