// Tool-call formats, their parse and its streaming form (tool_calls.h).
// Rank 0.
#include "coordinator/tool_calls.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "model/untrusted_json.h"

namespace strata {
namespace {

using json = nlohmann::ordered_json;

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kMistralOpen = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";
constexpr std::string_view kLfm2Open = "<|tool_call_start|>";
constexpr std::string_view kLfm2Close = "<|tool_call_end|>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
// Calls nest no deeper than this (a model's arguments are shallow; the bound
// keeps the recursive parsers' stacks small whatever the text).
constexpr int kMaxDepth = 64;

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view Opener(ToolCallFormat f) {
  switch (f) {
    case ToolCallFormat::kHermes: return kHermesOpen;
    case ToolCallFormat::kMistral: return kMistralOpen;
    case ToolCallFormat::kLfm2: return kLfm2Open;
    default: return {};
  }
}

std::string_view Closer(ToolCallFormat f) {
  switch (f) {
    case ToolCallFormat::kHermes: return kHermesClose;
    case ToolCallFormat::kLfm2: return kLfm2Close;
    default: return {};
  }
}

// The end (one past) of the JSON object or array that starts at s[at], by
// bracket matching outside strings; npos when it does not close (cut) or
// nests deeper than kMaxDepth. The text in between is checked by the JSON
// parser afterwards.
size_t JsonValueEnd(std::string_view s, size_t at) {
  if (at >= s.size() || (s[at] != '{' && s[at] != '[')) return std::string_view::npos;
  int depth = 0;
  bool in_string = false;
  for (size_t i = at; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return std::string_view::npos;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

std::optional<json> ParseJson(std::string_view text) {
  if (JsonNestingDepth(text, kMaxDepth) > kMaxDepth) return std::nullopt;
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// {"name": "f", "arguments" | "parameters": {...} or its JSON text} -> a call.
std::optional<ToolCall> CallFromObject(const json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  ToolCall c;
  c.name = j["name"].get<std::string>();
  if (c.name.empty()) return std::nullopt;
  const char* key = j.contains("arguments") ? "arguments" : j.contains("parameters") ? "parameters" : nullptr;
  json args = json::object();
  if (key != nullptr) {
    args = j[key];
    if (args.is_string()) {  // some models write the arguments as JSON text
      auto parsed = ParseJson(args.get<std::string>());
      if (!parsed) return std::nullopt;
      args = std::move(*parsed);
    }
  }
  if (!args.is_object()) return std::nullopt;
  c.arguments = args.dump(-1, ' ', false, json::error_handler_t::replace);
  if (j.contains("id") && j["id"].is_string() && !j["id"].get<std::string>().empty()) c.id = j["id"].get<std::string>();
  return c;
}

// ---------------------------------------------------------------------------
// Python call lists (LFM2): [f(a=1, b="x"), g()]
// ---------------------------------------------------------------------------

class PythonCalls {
 public:
  explicit PythonCalls(std::string_view s) : s_(s) {}

  // The whole text as a list of calls (or one bare call); nullopt otherwise.
  std::optional<std::vector<ToolCall>> Parse() {
    std::vector<ToolCall> calls;
    Skip();
    const bool list = Eat('[');
    for (;;) {
      Skip();
      if (list && Eat(']')) break;
      auto call = Call();
      if (!call) return std::nullopt;
      calls.push_back(std::move(*call));
      Skip();
      if (!list) break;
      if (Eat(',')) continue;
      if (Eat(']')) break;
      return std::nullopt;
    }
    Skip();
    if (i_ != s_.size() || calls.empty()) return std::nullopt;
    return calls;
  }

 private:
  void Skip() {
    while (i_ < s_.size() && IsSpace(s_[i_])) ++i_;
  }
  bool Eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  std::string Name() {
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_' || s_[i_] == '.' ||
                              (s_[i_] == '-' && i_ > start)))
      ++i_;
    if (i_ > start && std::isdigit(static_cast<unsigned char>(s_[start]))) return {};
    return std::string(s_.substr(start, i_ - start));
  }
  std::optional<ToolCall> Call() {
    ToolCall c;
    c.name = Name();
    if (c.name.empty()) return std::nullopt;
    Skip();
    if (!Eat('(')) return std::nullopt;
    json args = json::object();
    for (bool first = true;; first = false) {
      Skip();
      if (Eat(')')) break;
      if (!first && !Eat(',')) return std::nullopt;
      Skip();
      if (Eat(')')) break;  // a trailing comma
      const std::string key = Name();
      if (key.empty()) return std::nullopt;
      Skip();
      if (!Eat('=')) return std::nullopt;
      auto v = Value(0);
      if (!v) return std::nullopt;
      args[key] = std::move(*v);
    }
    c.arguments = args.dump(-1, ' ', false, json::error_handler_t::replace);
    return c;
  }
  std::optional<json> Value(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    Skip();
    if (i_ >= s_.size()) return std::nullopt;
    const char c = s_[i_];
    if (c == '"' || c == '\'') return String();
    if (c == '[' || c == '(') {
      const char close = c == '[' ? ']' : ')';
      ++i_;
      json a = json::array();
      for (bool first = true;; first = false) {
        Skip();
        if (Eat(close)) return a;
        if (!first && !Eat(',')) return std::nullopt;
        Skip();
        if (Eat(close)) return a;
        auto v = Value(depth + 1);
        if (!v) return std::nullopt;
        a.push_back(std::move(*v));
      }
    }
    if (c == '{') {
      ++i_;
      json o = json::object();
      for (bool first = true;; first = false) {
        Skip();
        if (Eat('}')) return o;
        if (!first && !Eat(',')) return std::nullopt;
        Skip();
        if (Eat('}')) return o;
        auto k = String();
        if (!k) return std::nullopt;
        Skip();
        if (!Eat(':')) return std::nullopt;
        auto v = Value(depth + 1);
        if (!v) return std::nullopt;
        o[k->get<std::string>()] = std::move(*v);
      }
    }
    for (const auto& [word, value] : {std::pair<std::string_view, json>{"True", true}, {"False", false}, {"None", nullptr},
                                      {"true", true}, {"false", false}, {"null", nullptr}}) {
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return value;
      }
    }
    return Number();
  }
  std::optional<json> Number() {
    const size_t start = i_;
    if (i_ < s_.size() && (s_[i_] == '-' || s_[i_] == '+')) ++i_;
    bool is_float = false;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' || s_[i_] == 'e' ||
                              s_[i_] == 'E' || ((s_[i_] == '-' || s_[i_] == '+') && (s_[i_ - 1] == 'e' || s_[i_ - 1] == 'E')))) {
      is_float |= !std::isdigit(static_cast<unsigned char>(s_[i_]));
      ++i_;
    }
    const std::string text(s_.substr(start, i_ - start));
    if (text.empty() || text == "-" || text == "+") return std::nullopt;
    char* end = nullptr;
    if (!is_float) {
      errno = 0;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == 0 && end == text.c_str() + text.size()) return json(static_cast<int64_t>(v));
    }
    const double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) return std::nullopt;
    return json(d);
  }
  std::optional<json> String() {
    if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) return std::nullopt;
    const char quote = s_[i_++];
    std::string out;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == quote) return json(out);
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) return std::nullopt;
      const char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        default: out += '\\'; out += e; break;  // kept as written
      }
    }
    return std::nullopt;  // not closed
  }

  std::string_view s_;
  size_t i_ = 0;
};

// ---------------------------------------------------------------------------
// One call block per format (the text between the markers)
// ---------------------------------------------------------------------------

// Hermes: one JSON object.
std::optional<std::vector<ToolCall>> HermesBody(std::string_view body) {
  auto j = ParseJson(TrimView(body));
  if (!j) return std::nullopt;
  auto c = CallFromObject(*j);
  if (!c) return std::nullopt;
  return std::vector<ToolCall>{std::move(*c)};
}

// Mistral, after [TOOL_CALLS]: f[ARGS]{...}, f[CALL_ID]id[ARGS]{...}, or a JSON list of call objects.
std::optional<std::vector<ToolCall>> MistralBody(std::string_view body) {
  body = TrimView(body);
  std::vector<ToolCall> calls;
  if (!body.empty() && body.front() == '[') {
    auto j = ParseJson(body);
    if (!j || !j->is_array() || j->empty()) return std::nullopt;
    for (const json& x : *j) {
      auto c = CallFromObject(x);
      if (!c) return std::nullopt;
      calls.push_back(std::move(*c));
    }
    return calls;
  }
  const size_t args = body.find(kMistralArgs);
  if (args == std::string_view::npos) return std::nullopt;
  ToolCall c;
  std::string_view head = body.substr(0, args);
  if (const size_t id = head.find(kMistralCallId); id != std::string_view::npos) {
    c.id = std::string(TrimView(head.substr(id + kMistralCallId.size())));
    head = head.substr(0, id);
  }
  c.name = std::string(TrimView(head));
  if (c.name.empty()) return std::nullopt;
  for (char ch : c.name)
    if (IsSpace(ch) || ch == '{' || ch == '[' || ch == '"') return std::nullopt;
  std::string_view rest = TrimView(body.substr(args + kMistralArgs.size()));
  const size_t end = JsonValueEnd(rest, 0);
  if (end != rest.size()) return std::nullopt;  // cut, or text after the arguments
  auto j = ParseJson(rest);
  if (!j || !j->is_object()) return std::nullopt;
  c.arguments = j->dump(-1, ' ', false, json::error_handler_t::replace);
  calls.push_back(std::move(c));
  return calls;
}

// Llama 3: the whole answer is one or more call objects, ';'-separated.
std::optional<std::vector<ToolCall>> Llama3Body(std::string_view text) {
  text = TrimView(text);
  if (text.substr(0, kPythonTag.size()) == kPythonTag) text = TrimView(text.substr(kPythonTag.size()));
  std::vector<ToolCall> calls;
  size_t i = 0;
  while (i < text.size()) {
    const size_t end = JsonValueEnd(text, i);
    if (end == std::string_view::npos || text[i] != '{') return std::nullopt;
    auto j = ParseJson(text.substr(i, end - i));
    if (!j) return std::nullopt;
    auto c = CallFromObject(*j);
    if (!c) return std::nullopt;
    calls.push_back(std::move(*c));
    i = end;
    while (i < text.size() && (IsSpace(text[i]) || text[i] == ';')) ++i;
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

void AddCalls(std::vector<ToolCall>* calls, std::vector<ToolCall> more) {
  for (ToolCall& c : more) {
    if (c.id.empty()) c.id = NewToolCallId();
    calls->push_back(std::move(c));
  }
}

// The longest tail of `s` that is a proper prefix of `marker`.
size_t PartialMarkerTail(std::string_view s, std::string_view marker) {
  for (size_t n = std::min(s.size(), marker.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == marker.substr(0, n)) return n;
  return 0;
}

}  // namespace

const char* ToolCallFormatName(ToolCallFormat f) {
  switch (f) {
    case ToolCallFormat::kHermes: return "hermes";
    case ToolCallFormat::kLlama3: return "llama3";
    case ToolCallFormat::kMistral: return "mistral";
    case ToolCallFormat::kLfm2: return "lfm2";
    default: return "none";
  }
}

ToolCallFormat DetectToolCallFormat(std::string_view src) {
  if (src.find(kHermesOpen) != std::string_view::npos) return ToolCallFormat::kHermes;
  if (src.find(kMistralOpen) != std::string_view::npos) return ToolCallFormat::kMistral;
  if (src.find(kLfm2Open) != std::string_view::npos || src.find("List of tools: [") != std::string_view::npos)
    return ToolCallFormat::kLfm2;
  if (src.find("<|start_header_id|>") != std::string_view::npos && src.find("\"parameters\": ") != std::string_view::npos)
    return ToolCallFormat::kLlama3;
  return ToolCallFormat::kNone;
}

std::string NewToolCallId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char b[48];
  std::snprintf(b, sizeof b, "call_%08llx%08llx", static_cast<unsigned long long>(salt & 0xffffffffu),
                static_cast<unsigned long long>(counter.fetch_add(1)));
  return b;
}

ParsedToolCalls ParseToolCalls(ToolCallFormat f, std::string_view text) {
  ParsedToolCalls out;
  if (f == ToolCallFormat::kNone) {
    out.content = std::string(text);
    return out;
  }
  if (f == ToolCallFormat::kLlama3) {
    auto calls = Llama3Body(text);
    if (calls) AddCalls(&out.calls, std::move(*calls));
    else out.content = std::string(text);
    return out;
  }
  const std::string_view open = Opener(f), close = Closer(f);
  size_t i = 0;
  while (i < text.size()) {
    const size_t at = text.find(open, i);
    if (at == std::string_view::npos) {
      out.content.append(text.substr(i));
      break;
    }
    out.content.append(text.substr(i, at - i));
    const size_t body = at + open.size();
    // The block ends at its closer, the next opener (Mistral), or the end.
    size_t end = close.empty() ? text.find(open, body) : text.find(close, body);
    size_t next = end;
    if (end == std::string_view::npos) end = next = text.size();
    else if (!close.empty()) next = end + close.size();
    const std::string_view inner = text.substr(body, end - body);
    std::optional<std::vector<ToolCall>> calls;
    if (f == ToolCallFormat::kHermes) calls = HermesBody(inner);
    else if (f == ToolCallFormat::kMistral) calls = MistralBody(inner);
    else calls = PythonCalls(inner).Parse();
    if (calls) AddCalls(&out.calls, std::move(*calls));
    else out.content.append(text.substr(at, next - at));  // not a call: the text stays, whole
    i = next;
  }
  // Around calls, the white space between blocks is layout, not an answer.
  if (!out.calls.empty() && TrimView(out.content).empty()) out.content.clear();
  return out;
}

std::string ForcedCallPrefix(ToolCallFormat f, const std::string& name) {
  const std::string quoted = json(name).dump();
  switch (f) {
    case ToolCallFormat::kHermes: return name.empty() ? "<tool_call>\n" : "<tool_call>\n{\"name\": " + quoted + ", \"arguments\": {";
    case ToolCallFormat::kLlama3: return name.empty() ? "{\"name\": \"" : "{\"name\": " + quoted + ", \"parameters\": {";
    case ToolCallFormat::kMistral: return name.empty() ? "[TOOL_CALLS]" : "[TOOL_CALLS]" + name + "[ARGS]{";
    case ToolCallFormat::kLfm2: return name.empty() ? "<|tool_call_start|>[" : "<|tool_call_start|>[" + name + "(";
    default: return {};
  }
}

ToolCallStream::Out ToolCallStream::Push(std::string_view text) {
  Out out;
  held_.append(text);
  if (format_ == ToolCallFormat::kNone) {
    out.content = std::exchange(held_, {});
    return out;
  }
  if (format_ == ToolCallFormat::kLlama3) {
    if (!decided_) {
      const std::string_view t = TrimView(held_);
      if (t.empty()) return out;  // only white space so far
      if (t.front() == '{' || t.substr(0, kPythonTag.size()) == kPythonTag) {
        decided_ = llama_call_ = true;
      } else if (kPythonTag.substr(0, t.size()) == t) {
        return out;  // may still become <|python_tag|>
      } else {
        decided_ = true;
      }
    }
    if (!llama_call_) out.content = std::exchange(held_, {});
    return out;  // a possible call: held to the end
  }
  const std::string_view open = Opener(format_), close = Closer(format_);
  for (;;) {
    const size_t at = held_.find(open);
    if (at == std::string::npos) {
      const size_t keep = PartialMarkerTail(held_, open);
      out.content.append(held_, 0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    out.content.append(held_, 0, at);
    held_.erase(0, at);
    if (close.empty()) return out;  // Mistral: calls run to the end
    const size_t end = held_.find(close, open.size());
    if (end == std::string::npos) return out;  // the call is still being written
    ParsedToolCalls p = ParseToolCalls(format_, std::string_view(held_).substr(0, end + close.size()));
    out.content.append(p.content);
    for (ToolCall& c : p.calls) out.calls.push_back(std::move(c));
    held_.erase(0, end + close.size());
  }
}

ToolCallStream::Out ToolCallStream::Finish() {
  Out out;
  ParsedToolCalls p = ParseToolCalls(format_, held_);
  held_.clear();
  out.content = std::move(p.content);
  out.calls = std::move(p.calls);
  return out;
}

}  // namespace strata
