// The strata command line. Every rank runs this binary and parses the same
// flags; rank 0 runs the command, and under mpirun the other ranks serve
// their pipeline stage for the commands that run the model
// (cli/strata_main.cc). Each command lives in a file of its own
// (cli/command.h):
//   generate    text after a prompt (streamed, or one JSON object with --json)   cli/generate.cc
//   chat        an interactive conversation (rank 0 reads stdin)                  cli/chat.cc
//   perplexity  llama-perplexity's measure over a text file                       cli/perplexity.cc
//   dump        every layer's residual stream and the logits as .npy              cli/dump.cc
//   bench       prefill / decode speed, per-stage busy share, memory              cli/bench.cc
//   serve       the OpenAI-compatible HTTP server (rank 0 listens)                cli/serve.cc
//   template    the model's chat template applied to a conversation               cli/template.cc
//   inspect     what a run would load, from the headers alone                     cli/inspect.cc
//   diff        two activation dumps compared entry by entry                      cli/diff.cc
//   make-model  a GGUF of a real architecture with random weights                 cli/make_model.cc
//   convert, quantize  HF checkpoint -> GGUF, GGUF -> GGUF of another type        cli/convert.cc
#include "cli/strata_main.h"

int main(int argc, char** argv) { return strata::StrataMain(argc, argv); }
