// `strata generate`: text after a prompt, streamed (or one JSON object with
// --json); with --chat the prompt is a user turn of the model's chat template
// and the answer and the reasoning are told apart. Rank 0; under mpirun the
// other ranks serve their stages.
#include "cli/generate.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/log.h"
#include "coordinator/chat_template.h"
#include "coordinator/mpi_pipeline.h"

namespace strata {
namespace {

// Reasoning text on a terminal is dimmed (SGR 2) so the answer stands out.
void PrintReasoning(const std::string& text, bool tty) {
  if (text.empty()) return;
  if (tty) std::fputs("\x1b[2m", stdout);
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (tty) std::fputs("\x1b[0m", stdout);
  std::fflush(stdout);
}

int RunGenerate(const GenerateFlags& f, Transport* transport) {
  auto prompt_text = PromptText(f.prompt, f.prompt_file);
  if (!prompt_text.ok()) return Fail(prompt_text.status(), transport);
  const std::string& prompt = *prompt_text;
  auto session = OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  std::vector<int32_t> ids;
  // Chat: the template's prompt, tokenized as apply_chat_template does (the
  // template writes any BOS itself; special tokens are parsed).
  ThinkingSplitter splitter;
  std::string reasoning, answer;
  ChatPrinter printer{f.show_thinking, isatty(STDOUT_FILENO) != 0};
  if (f.chat) {
    auto tmpl = ChatTemplate::ForModel(*s.model, *s.tokenizer);
    if (!tmpl.ok()) return s.Fail(tmpl.status());
    Conversation conv;
    if (!f.system.empty()) conv.messages.push_back({{"role", "system"}, {"content", f.system}});
    conv.messages.push_back({{"role", "user"}, {"content", prompt}});
    ChatOptions co;
    co.enable_thinking = ThinkingOf(f);
    auto text = tmpl->Apply(conv, co);
    if (!text.ok()) return s.Fail(text.status());
    ids = s.tokenizer->Encode(*text, false, true);
    splitter = ThinkingSplitter(PromptOpensThinking(*text));
  } else {
    ids = s.tokenizer->Encode(prompt, s.tokenizer->add_bos());
  }
  if (f.truncate && static_cast<int64_t>(ids.size()) >= s.n_ctx) {
    // Keep the end of the prompt, leaving room for the answer.
    const int64_t keep = std::max<int64_t>(1, s.n_ctx - std::min<int64_t>(f.n_predict, s.n_ctx / 2));
    Log(LogLevel::kWarn, "the prompt has %zu tokens; --truncate keeps its last %lld for --ctx %lld", ids.size(),
        static_cast<long long>(keep), static_cast<long long>(s.n_ctx));
    ids.erase(ids.begin(), ids.end() - keep);
  }
  GenerateOptions opts = GenerateOptionsOf(f);
  std::function<void(const std::string&)> stream;
  if (f.chat) {
    stream = [&](const std::string& piece) {
      std::string r, a;
      splitter.Push(piece, &r, &a);
      reasoning += r;
      answer += a;
      if (!f.common.json) printer.Print(r, a);
    };
  } else if (!f.common.json) {
    stream = [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
  }
  auto res = Generate(*s.pipeline, *s.tokenizer, ids, opts, s.n_ctx, stream);
  if (!res.ok()) return s.Fail(res.status());
  if (f.chat) {
    std::string r, a;
    splitter.Flush(&r, &a);
    reasoning += r;
    answer += a;
    if (!f.common.json) printer.Print(r, a);
  }
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  if (f.common.json) {
    nlohmann::json j;
    j["prompt_ids"] = res->prompt_ids;
    j["ids"] = res->ids;
    j["text"] = f.chat ? answer : res->text;
    if (f.chat) j["reasoning"] = reasoning;
    j["finish_reason"] = res->finish_reason;
    j["timings"] = {
        {"prefill_ms", res->prefill_ms},
        {"prefill_tok_s", res->prefill_ms > 0 ? res->prompt_ids.size() * 1000.0 / res->prefill_ms : 0.0},
        {"decode_ms", res->decode_ms},
        {"decode_tok_s", res->decode_ms > 0 ? res->n_decoded * 1000.0 / res->decode_ms : 0.0},
    };
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << std::endl;
    Log(LogLevel::kInfo, "prompt %zu tokens in %.1f ms, %d tokens decoded in %.1f ms (%.2f tok/s)",
                 res->prompt_ids.size(), res->prefill_ms, res->n_decoded, res->decode_ms,
                 res->decode_ms > 0 ? res->n_decoded * 1000.0 / res->decode_ms : 0.0);
  }
  return 0;
}

}  // namespace

// Sampling and chat flags shared by generate and chat.
void AddGenerateFlags(CLI::App* g, GenerateFlags* f) {
  g->add_option("-n,--n-predict", f->n_predict, "tokens to generate (per answer in chat)")->check(CLI::Range(1, 1 << 24));
  g->add_option("--temp", f->temp, "temperature (0: greedy)")->check(CLI::Range(0.0f, 100.0f));
  g->add_option("--top-k", f->top_k, "top-k (0: off)")->check(CLI::Range(0, 1 << 24));
  g->add_option("--top-p", f->top_p, "top-p (1: off)")->check(CLI::Range(0.0f, 1.0f));
  g->add_option("--min-p", f->min_p, "min-p (0: off)")->check(CLI::Range(0.0f, 1.0f));
  g->add_option("--repeat-penalty", f->repeat_penalty, "repetition penalty (1: off)")->check(CLI::Range(0.0f, 100.0f));
  g->add_option("--repeat-last-n", f->repeat_last_n, "tokens the penalty looks back over")->check(CLI::Range(0, 1 << 20));
  g->add_option("--seed", f->seed, "sampling seed");
  g->add_flag("--ignore-eos", f->ignore_eos, "do not stop at the model's end-of-sequence ids");
  g->add_option("--system", f->system, "chat: a system message before the user's");
  auto* think = g->add_flag("--think", f->think, "chat: enable_thinking=true");
  auto* no_think = g->add_flag("--no-think", f->no_think, "chat: enable_thinking=false (default: the template's own)");
  think->excludes(no_think);
  g->add_flag("--show-thinking", f->show_thinking, "chat: print the reasoning too (dimmed on a terminal)");
}

GenerateOptions GenerateOptionsOf(const GenerateFlags& f) {
  GenerateOptions opts;
  opts.n_predict = f.n_predict;
  opts.ignore_eos = f.ignore_eos;
  opts.sampling.temperature = f.temp;
  opts.sampling.top_k = f.top_k;
  opts.sampling.top_p = f.top_p;
  opts.sampling.min_p = f.min_p;
  opts.sampling.repeat_penalty = f.repeat_penalty;
  opts.sampling.repeat_last_n = f.repeat_last_n;
  opts.sampling.seed = f.seed;
  return opts;
}

std::optional<bool> ThinkingOf(const GenerateFlags& f) {
  if (f.think) return true;
  if (f.no_think) return false;
  return std::nullopt;  // the template's default
}

void ChatPrinter::Print(const std::string& reasoning, const std::string& answer) {
  if (show_thinking && !reasoning.empty()) {
    PrintReasoning(reasoning, tty);
    reasoning_open = true;
  }
  if (!answer.empty()) {
    if (reasoning_open) std::fputs("\n\n", stdout);
    reasoning_open = false;
    std::fwrite(answer.data(), 1, answer.size(), stdout);
    std::fflush(stdout);
  }
}

Command AddGenerateCommand(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  GenerateFlags& gen = *flags;
  CLI::App* g = app.add_subcommand("generate", "generate text after a prompt");
  AddCommonFlags(g, &gen.common, false);
  auto* prompt_opt = g->add_option("-p,--prompt", gen.prompt, "prompt text");
  auto* file_opt = g->add_option("-f,--file", gen.prompt_file, "read the prompt from a file");
  prompt_opt->excludes(file_opt);
  AddGenerateFlags(g, &gen);
  g->add_flag("--truncate", gen.truncate, "keep the end of a prompt longer than --ctx instead of refusing it");
  g->add_flag("--chat", gen.chat, "the prompt is a user turn of the model's chat template (answer and reasoning apart)");

  Command cmd;
  cmd.app = g;
  cmd.common = &gen.common;
  cmd.run = [flags](Transport* transport) {
    const GenerateFlags& f = *flags;
    if (f.prompt.empty() && f.prompt_file.empty()) {
      std::fprintf(stderr, "strata generate: give a prompt with -p TEXT or -f FILE\n");
      if (transport != nullptr) MpiPipeline::StopWorkers(*transport, "no prompt");
      return 2;
    }
    if (!f.chat && (!f.system.empty() || f.think || f.no_think || f.show_thinking)) {
      std::fprintf(stderr, "strata generate: --system, --think, --no-think and --show-thinking need --chat\n");
      if (transport != nullptr) MpiPipeline::StopWorkers(*transport, "bad flags");
      return 2;
    }
    return RunGenerate(f, transport);
  };
  return cmd;
}

}  // namespace strata
