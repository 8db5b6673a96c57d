// Chat on rank 0: a model's chat template applied to a conversation (as
// transformers' apply_chat_template does), and the split of generated text
// into reasoning (<think>...</think>) and the answer.
//
//   STRATA_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::ForModel(model, tokenizer));
//   STRATA_ASSIGN_OR_RETURN(Conversation c, ParseConversation(json_text));
//   STRATA_ASSIGN_OR_RETURN(std::string prompt, t.Apply(c, {.enable_thinking = false}));
//   ThinkingSplitter split(PromptOpensThinking(prompt));
//   split.Push(piece, &reasoning, &answer);   // as the text streams in
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "coordinator/jinja.h"
#include "model/model_files.h"
#include "model/tokenizer.h"

namespace strata {

// An OpenAI-style conversation: messages (role, content, optional
// tool_calls / name / reasoning_content ...) and optional tools.
struct Conversation {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null when none
};

// `text`: a JSON list of messages, or an object {"messages": [...],
// "tools": [...]}. Every message must be an object with a string role.
Result<Conversation> ParseConversation(const std::string& text);
// Checks an already parsed message list (the server's requests).
Status CheckMessages(const nlohmann::ordered_json& messages);

struct ChatOptions {
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;  // unset: the template's default
};

class ChatTemplate {
 public:
  // `source`: the Jinja text; bos/eos: the tokens' text (unset: undefined in
  // the template, as when the tokenizer has none).
  static Result<ChatTemplate> Create(const std::string& source, std::optional<std::string> bos_token,
                                     std::optional<std::string> eos_token);
  // The model's own template (NotFound when it ships none).
  static Result<ChatTemplate> ForModel(const ModelFiles& model, const Tokenizer& tokenizer);

  // A template file instead of the model's (`strata serve --chat-template-file`),
  // with the model's bos / eos text.
  static Result<ChatTemplate> FromFile(const std::string& path, const Tokenizer& tokenizer);

  Result<std::string> Apply(const Conversation& conv, const ChatOptions& opts) const;
  // The Jinja text (what it teaches, e.g. its tool-call format, is read from it).
  const std::string& source() const { return source_; }

 private:
  jinja::Template tmpl_;
  std::string source_;
  std::optional<std::string> bos_, eos_;
};

// True when the prompt ends inside an open <think> block (the template
// started the reasoning), so generated text is reasoning from the start.
bool PromptOpensThinking(const std::string& prompt);

// Splits streamed text into reasoning and answer: a leading <think> ...
// </think> block is reasoning (newlines trimmed at both ends, as Qwen3's
// template does), the rest the answer (leading newlines dropped). Tags cut
// across pieces are handled; text that cannot start a tag is emitted at once.
class ThinkingSplitter {
 public:
  explicit ThinkingSplitter(bool in_reasoning = false) : state_(in_reasoning ? kReasoning : kStart) {
    strip_leading_ = in_reasoning;
  }
  void Push(const std::string& text, std::string* reasoning, std::string* answer);
  void Flush(std::string* reasoning, std::string* answer);

 private:
  enum State { kStart, kReasoning, kAnswer };
  State state_;
  std::string buf_;        // held back: a possible tag prefix, or newlines that may end the reasoning
  bool strip_leading_ = false;  // drop newlines at the start of the current part
};

}  // namespace strata
