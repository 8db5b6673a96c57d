// Chat templates and the reasoning / answer split (rank 0).
#include "coordinator/chat_template.h"

#include <fstream>
#include <sstream>

#include "model/untrusted_json.h"

namespace strata {

Status CheckMessages(const nlohmann::ordered_json& messages) {
  if (!messages.is_array()) return InvalidArgument("messages: expected a list of message objects");
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return InvalidArgument(where + ": expected an object with 'role' and 'content'");
    if (!m.contains("role") || !m["role"].is_string()) return InvalidArgument(where + ": 'role' must be a string");
    if (m.contains("content") && !(m["content"].is_string() || m["content"].is_null() || m["content"].is_array()))
      return InvalidArgument(where + ": 'content' must be a string, null or a list of parts");
  }
  return Status::Ok();
}

Result<Conversation> ParseConversation(const std::string& text) {
  // As for requests (openai_api.cc): nlohmann copies and dumps recursively.
  if (JsonNestingDepth(text, kMaxJsonDepth) > kMaxJsonDepth)
    return InvalidArgument("the conversation nests JSON deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument("the conversation is not valid JSON");
  Conversation c;
  if (j.is_array()) {
    c.messages = std::move(j);
  } else if (j.is_object() && j.contains("messages")) {
    c.messages = j["messages"];
    if (j.contains("tools")) {
      c.tools = j["tools"];
      if (!c.tools.is_array() && !c.tools.is_null()) return InvalidArgument("tools: expected a list");
    }
  } else {
    return InvalidArgument("the conversation must be a list of messages or an object with 'messages'");
  }
  STRATA_RETURN_IF_ERROR(CheckMessages(c.messages));
  return c;
}

Result<ChatTemplate> ChatTemplate::Create(const std::string& source, std::optional<std::string> bos_token,
                                          std::optional<std::string> eos_token) {
  ChatTemplate t;
  STRATA_ASSIGN_OR_RETURN(t.tmpl_, jinja::Template::Parse(source));
  t.source_ = source;
  t.bos_ = std::move(bos_token);
  t.eos_ = std::move(eos_token);
  return t;
}

Result<ChatTemplate> ChatTemplate::ForModel(const ModelFiles& model, const Tokenizer& tokenizer) {
  std::optional<std::string> source = model.ChatTemplate();
  if (!source)
    return NotFound("model '" + model.path() + "' has no chat template (tokenizer.chat_template, chat_template.jinja or "
                    "tokenizer_config.json's chat_template)");
  std::optional<std::string> bos, eos;
  if (tokenizer.bos_id() >= 0) bos = tokenizer.TokenBytes(tokenizer.bos_id());
  if (tokenizer.eos_id() >= 0) eos = tokenizer.TokenBytes(tokenizer.eos_id());
  auto t = Create(*source, bos, eos);
  if (!t.ok()) return t.status().WithContext("model '" + model.path() + "'");
  return t;
}

Result<ChatTemplate> ChatTemplate::FromFile(const std::string& path, const Tokenizer& tokenizer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("chat template file '" + path + "': cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss("chat template file '" + path + "': read error");
  std::optional<std::string> bos, eos;
  if (tokenizer.bos_id() >= 0) bos = tokenizer.TokenBytes(tokenizer.bos_id());
  if (tokenizer.eos_id() >= 0) eos = tokenizer.TokenBytes(tokenizer.eos_id());
  auto t = Create(ss.str(), bos, eos);
  if (!t.ok()) return t.status().WithContext("chat template file '" + path + "'");
  return t;
}

Result<std::string> ChatTemplate::Apply(const Conversation& conv, const ChatOptions& opts) const {
  // The variables transformers' render_jinja_template passes.
  nlohmann::ordered_json ctx;
  ctx["messages"] = conv.messages;
  ctx["tools"] = conv.tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = opts.add_generation_prompt;
  if (bos_) ctx["bos_token"] = *bos_;
  if (eos_) ctx["eos_token"] = *eos_;
  if (opts.enable_thinking) ctx["enable_thinking"] = *opts.enable_thinking;
  return tmpl_.Render(ctx);
}

bool PromptOpensThinking(const std::string& prompt) {
  const size_t open = prompt.rfind("<think>");
  if (open == std::string::npos) return false;
  const size_t close = prompt.rfind("</think>");
  return close == std::string::npos || close < open;
}

namespace {
constexpr std::string_view kOpen = "<think>", kClose = "</think>";

// Length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t PartialTag(const std::string& s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.compare(s.size() - n, n, tag.substr(0, n)) == 0) return n;
  return 0;
}
}  // namespace

void ThinkingSplitter::Push(const std::string& text, std::string* reasoning, std::string* answer) {
  buf_ += text;
  while (true) {
    if (strip_leading_) {
      size_t n = buf_.find_first_not_of('\n');
      buf_.erase(0, n == std::string::npos ? buf_.size() : n);
      if (buf_.empty()) return;
      strip_leading_ = false;
    }
    if (state_ == kStart) {
      const size_t ws = buf_.find_first_not_of(" \t\r\n");
      if (ws == std::string::npos) return;  // only whitespace so far
      const std::string_view rest = std::string_view(buf_).substr(ws);
      if (rest.substr(0, kOpen.size()) == kOpen) {
        buf_.erase(0, ws + kOpen.size());
        state_ = kReasoning;
        strip_leading_ = true;
        continue;
      }
      if (rest.size() < kOpen.size() && kOpen.substr(0, rest.size()) == rest) return;  // maybe "<thi"
      state_ = kAnswer;
      continue;
    }
    if (state_ == kReasoning) {
      const size_t close = buf_.find(kClose);
      if (close != std::string::npos) {
        size_t end = close;
        while (end > 0 && buf_[end - 1] == '\n') --end;
        *reasoning += buf_.substr(0, end);
        buf_.erase(0, close + kClose.size());
        state_ = kAnswer;
        strip_leading_ = true;
        continue;
      }
      size_t end = buf_.size() - PartialTag(buf_, kClose);
      while (end > 0 && buf_[end - 1] == '\n') --end;  // may be the newlines before </think>
      *reasoning += buf_.substr(0, end);
      buf_.erase(0, end);
      return;
    }
    *answer += buf_;
    buf_.clear();
    return;
  }
}

void ThinkingSplitter::Flush(std::string* reasoning, std::string* answer) {
  if (state_ == kStart) {
    if (!strip_leading_) *answer += buf_;
  } else if (state_ == kReasoning) {
    size_t end = buf_.size();
    while (end > 0 && buf_[end - 1] == '\n') --end;
    *reasoning += buf_.substr(0, end);  // reasoning that never closed
  } else {
    *answer += buf_;
  }
  buf_.clear();
}

}  // namespace strata
