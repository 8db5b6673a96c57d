// What `strata generate` and `strata chat` share: their flags (sampling,
// chat template options), the options Generate() takes from them, and the
// printer that streams answer and reasoning apart. Rank 0.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/session.h"
#include "coordinator/generate.h"

namespace strata {

struct GenerateFlags {
  CommonFlags common;
  std::string prompt, prompt_file;
  int n_predict = 128;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f, repeat_penalty = 1.0f;
  int top_k = 40, repeat_last_n = 64;
  uint64_t seed = 0;
  bool ignore_eos = false;
  bool truncate = false;
  // Chat: the prompt is a user turn of the model's chat template.
  bool chat = false;
  std::string system;
  bool think = false, no_think = false, show_thinking = false;
};

// Sampling and chat flags shared by generate and chat.
void AddGenerateFlags(CLI::App* g, GenerateFlags* f);
GenerateOptions GenerateOptionsOf(const GenerateFlags& f);
// --think / --no-think; nullopt: the template's default.
std::optional<bool> ThinkingOf(const GenerateFlags& f);

// Streams answer text, and reasoning when shown (dimmed on a terminal); a
// blank line separates the two.
struct ChatPrinter {
  bool show_thinking = false;
  bool tty = false;
  bool reasoning_open = false;
  void Print(const std::string& reasoning, const std::string& answer);
};

}  // namespace strata
