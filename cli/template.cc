// `strata template`: prints a conversation exactly as the model's chat
// template (or a template file) renders it; no weights are loaded. Rank 0
// alone.
#include <cstdio>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "coordinator/chat_template.h"
#include "model/model_files.h"
#include "model/tokenizer.h"

namespace strata {
namespace {

struct TemplateFlags {
  std::string model, template_file, messages_file, bos_token, eos_token;
  bool think = false, no_think = false, no_generation_prompt = false;
  bool has_bos = false, has_eos = false;
};

// Prints the prompt exactly as rendered (no newline added).
int RunTemplate(const TemplateFlags& f, Transport* transport) {
  auto text = ReadFile(f.messages_file);
  if (!text.ok()) return Fail(text.status(), transport);
  auto conv = ParseConversation(*text);
  if (!conv.ok()) return Fail(conv.status().WithContext("'" + f.messages_file + "'"), transport);
  Result<ChatTemplate> tmpl = NotFound("no template");
  if (!f.template_file.empty()) {
    auto src = ReadFile(f.template_file);
    if (!src.ok()) return Fail(src.status(), transport);
    tmpl = ChatTemplate::Create(*src, f.has_bos ? std::optional<std::string>(f.bos_token) : std::nullopt,
                                f.has_eos ? std::optional<std::string>(f.eos_token) : std::nullopt);
    if (!tmpl.ok()) return Fail(tmpl.status().WithContext("'" + f.template_file + "'"), transport);
  } else {
    auto model = ModelFiles::Open(f.model);
    if (!model.ok()) return Fail(model.status(), transport);
    auto vocab = (*model)->LoadVocab();
    if (!vocab.ok()) return Fail(vocab.status(), transport);
    auto tok = Tokenizer::Create(std::move(vocab).value());
    if (!tok.ok()) return Fail(tok.status(), transport);
    tmpl = ChatTemplate::ForModel(**model, *tok);
    if (!tmpl.ok()) return Fail(tmpl.status(), transport);
  }
  ChatOptions opts;
  opts.add_generation_prompt = !f.no_generation_prompt;
  if (f.think) opts.enable_thinking = true;
  if (f.no_think) opts.enable_thinking = false;
  auto prompt = tmpl->Apply(*conv, opts);
  if (!prompt.ok()) return Fail(prompt.status(), transport);
  std::fwrite(prompt->data(), 1, prompt->size(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

Command AddTemplateCommand(CLI::App& app) {
  auto flags = std::make_shared<TemplateFlags>();
  TemplateFlags& tpl = *flags;
  CLI::App* tp = app.add_subcommand("template", "print the chat template applied to a conversation (the prompt, exactly)");
  auto* tm = tp->add_option("-m,--model", tpl.model, "model whose chat template to use: a .gguf file or an HF model directory");
  auto* tt = tp->add_option("--template", tpl.template_file, "a Jinja chat template file instead of the model's");
  tm->excludes(tt);
  tp->add_option("--messages", tpl.messages_file,
                 "JSON file: an OpenAI-style list of messages, or {\"messages\": [...], \"tools\": [...]}")->required();
  auto* tthink = tp->add_flag("--think", tpl.think, "enable_thinking=true");
  auto* tnothink = tp->add_flag("--no-think", tpl.no_think, "enable_thinking=false (default: the template's own)");
  tthink->excludes(tnothink);
  tp->add_flag("--no-generation-prompt", tpl.no_generation_prompt, "add_generation_prompt=false");
  auto* tbos = tp->add_option("--bos-token", tpl.bos_token, "with --template: the bos_token text");
  auto* teos = tp->add_option("--eos-token", tpl.eos_token, "with --template: the eos_token text");

  Command cmd;
  cmd.app = tp;
  cmd.run = [flags, tbos, teos](Transport* transport) {
    TemplateFlags& f = *flags;
    if (f.model.empty() && f.template_file.empty()) {
      std::fprintf(stderr, "strata template: give a model with -m MODEL or a template with --template FILE\n");
      return 2;
    }
    f.has_bos = tbos->count() > 0;
    f.has_eos = teos->count() > 0;
    return RunTemplate(f, transport);
  };
  return cmd;
}

}  // namespace strata
