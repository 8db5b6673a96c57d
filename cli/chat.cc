// `strata chat`: an interactive conversation. Rank 0 reads stdin, renders
// the whole history with the model's chat template each turn and streams the
// answer; under mpirun the other ranks serve their stages.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/generate.h"
#include "coordinator/chat_template.h"

namespace strata {
namespace {

// Set by SIGINT in `strata chat`: stops the answer being generated.
std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) { g_interrupted.store(true); }

// Interactive chat on rank 0: one line a turn, the whole history rendered by
// the model's template each turn (each turn is a fresh sequence).
int RunChat(const GenerateFlags& f, Transport* transport) {
  auto session = OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  auto tmpl = ChatTemplate::ForModel(*s.model, *s.tokenizer);
  if (!tmpl.ok()) return s.Fail(tmpl.status());
  // Ctrl-C stops the answer, not the program; reads restart after it.
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  const bool tty_in = isatty(STDIN_FILENO) != 0, tty_out = isatty(STDOUT_FILENO) != 0;
  std::optional<bool> thinking = ThinkingOf(f);
  Conversation conv;
  auto reset = [&] {
    conv.messages = nlohmann::ordered_json::array();
    if (!f.system.empty()) conv.messages.push_back({{"role", "system"}, {"content", f.system}});
  };
  reset();
  auto note = [&](const std::string& text) {
    std::printf("%s%s%s\n", tty_out ? "\x1b[2m" : "", text.c_str(), tty_out ? "\x1b[0m" : "");
    std::fflush(stdout);
  };
  if (tty_in) note("strata chat: /reset clears the history, /think and /no_think switch reasoning, Ctrl-C stops an answer, Ctrl-D quits");
  uint64_t seq_id = 1;
  std::string line;
  while (true) {
    if (tty_in) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;  // Ctrl-D / end of input
    if (line == "/reset") {
      reset();
      note("(history cleared)");
      continue;
    }
    if (line == "/think" || line == "/no_think") {
      thinking = line == "/think";
      note(*thinking ? "(thinking on)" : "(thinking off)");
      continue;
    }
    if (line.empty()) continue;
    conv.messages.push_back({{"role", "user"}, {"content", line}});
    ChatOptions co;
    co.enable_thinking = thinking;
    auto text = tmpl->Apply(conv, co);
    if (!text.ok()) {
      conv.messages.erase(conv.messages.end() - 1);
      note("error: " + text.status().message());
      continue;
    }
    std::vector<int32_t> ids = s.tokenizer->Encode(*text, false, true);
    if (static_cast<int64_t>(ids.size()) + 1 > s.n_ctx) {
      conv.messages.erase(conv.messages.end() - 1);
      note("error: the conversation has " + std::to_string(ids.size()) + " tokens, more than --ctx " +
           std::to_string(s.n_ctx) + " allows; /reset starts over");
      continue;
    }
    GenerateOptions opts = GenerateOptionsOf(f);
    opts.seq_id = seq_id++;
    g_interrupted.store(false);
    opts.cancel = &g_interrupted;
    ThinkingSplitter splitter(PromptOpensThinking(*text));
    ChatPrinter printer{f.show_thinking, tty_out};
    std::string answer;
    auto stream = [&](const std::string& piece) {
      std::string r, a;
      splitter.Push(piece, &r, &a);
      answer += a;
      printer.Print(r, a);
    };
    auto res = Generate(*s.pipeline, *s.tokenizer, ids, opts, s.n_ctx, stream);
    if (!res.ok()) return s.Fail(res.status());
    std::string r, a;
    splitter.Flush(&r, &a);
    answer += a;
    printer.Print(r, a);
    if (res->finish_reason == "cancelled") std::fputs(tty_out ? " \x1b[2m[stopped]\x1b[0m" : " [stopped]", stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    conv.messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
  if (tty_in) std::fputs("\n", stdout);
  std::fflush(stdout);
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  return 0;
}

}  // namespace

Command AddChatCommand(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  GenerateFlags& cht = *flags;
  cht.n_predict = 512;
  CLI::App* ch = app.add_subcommand("chat", "chat with the model (rank 0 reads stdin): /reset, /think, /no_think, Ctrl-C, Ctrl-D");
  AddCommonFlags(ch, &cht.common, false);
  AddGenerateFlags(ch, &cht);

  Command cmd;
  cmd.app = ch;
  cmd.common = &cht.common;
  cmd.run = [flags](Transport* transport) { return RunChat(*flags, transport); };
  return cmd;
}

}  // namespace strata
