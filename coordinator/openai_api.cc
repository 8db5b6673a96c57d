// OpenAI-compatible request parsing and completion text (openai_api.h).
//
// Every field OpenAI's API defines for /v1/chat/completions and
// /v1/completions is type-checked, and then honoured, or refused with a 400
// naming it when strata cannot do what it asks (a client that asked for JSON
// output or a second choice must not get something else in silence). Fields
// OpenAI does not define are ignored, as OpenAI does.
#include "coordinator/openai_api.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "model/untrusted_json.h"

namespace strata {
namespace {

using ojson = nlohmann::ordered_json;

ApiError BadField(const std::string& param, const std::string& message) {
  ApiError e;
  e.param = param;
  e.message = "'" + param + "': " + message;
  return e;
}

ApiError Unsupported(const std::string& param, const std::string& why) { return BadField(param, "not supported: " + why); }

const char* TypeName(const ojson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

ApiError WrongType(const std::string& param, const char* expected, const ojson& v) {
  return BadField(param, std::string("expected ") + expected + ", got " + TypeName(v));
}

// True when `key` is present and not null (OpenAI's API treats null as absent).
bool Given(const ojson& body, const char* key) { return body.contains(key) && !body[key].is_null(); }

// Each getter: nothing when the field is absent, an ApiError when it has the
// wrong type or range.
std::optional<ApiError> GetBool(const ojson& body, const char* key, bool* out, const std::string& param = {}) {
  if (!Given(body, key)) return std::nullopt;
  if (!body[key].is_boolean()) return WrongType(param.empty() ? key : param, "a boolean", body[key]);
  *out = body[key].get<bool>();
  return std::nullopt;
}

std::optional<ApiError> GetString(const ojson& body, const char* key, std::string* out) {
  if (!Given(body, key)) return std::nullopt;
  if (!body[key].is_string()) return WrongType(key, "a string", body[key]);
  *out = body[key].get<std::string>();
  return std::nullopt;
}

std::string NumberText(double x) {
  char b[64];
  // Integral values in full ("18446744073709551616", not "1.84467e+19").
  if (std::isfinite(x) && std::trunc(x) == x && std::fabs(x) < 1e30) std::snprintf(b, sizeof b, "%.0f", x);
  else std::snprintf(b, sizeof b, "%.17g", x);
  return b;
}

std::optional<ApiError> GetNumber(const ojson& body, const char* key, double lo, double hi, bool* given, double* out) {
  if (!Given(body, key)) return std::nullopt;
  const ojson& v = body[key];
  if (!v.is_number()) return WrongType(key, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) return BadField(key, NumberText(x) + " is outside [" + NumberText(lo) + ", " + NumberText(hi) + "]");
  *given = true;
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> GetInteger(const ojson& body, const char* key, int64_t lo, int64_t hi, bool* given, int64_t* out) {
  if (!Given(body, key)) return std::nullopt;
  const ojson& v = body[key];
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v.is_number_float()) {
    // Integers past 64 bits arrive as floating point (2^64 is 1.8e19): they
    // are out of range, not fractional.
    const double x = v.get<double>();
    if (std::isfinite(x) && std::trunc(x) == x) return BadField(key, NumberText(x) + " is outside " + range);
    return BadField(key, "expected an integer, got a fractional number");
  }
  if (!v.is_number_integer()) return WrongType(key, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return BadField(key, std::to_string(v.get<uint64_t>()) + " is outside " + range);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return BadField(key, std::to_string(x) + " is outside " + range);
  *given = true;
  *out = x;
  return std::nullopt;
}

// Chat messages as OpenAI defines them, checked before the template sees
// them (a template drops a role it does not know without a word): role one
// of system, developer, user, assistant, tool; content required except on an
// assistant turn that calls tools; text parts joined into a string. A
// developer message is a system message to the templates.
std::optional<ApiError> CheckAndNormalizeMessages(ojson* messages) {
  static const char* const kRoles[] = {"system", "developer", "user", "assistant", "tool"};
  for (size_t i = 0; i < messages->size(); ++i) {
    ojson& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return WrongType(where, "an object with 'role' and 'content'", m);
    if (!m.contains("role")) return BadField(where + ".role", "required");
    if (!m["role"].is_string()) return WrongType(where + ".role", "a string", m["role"]);
    const std::string role = m["role"].get<std::string>();
    if (role == "function") return Unsupported(where + ".role", "the deprecated role 'function'; use 'tool'");
    if (std::find(std::begin(kRoles), std::end(kRoles), role) == std::end(kRoles))
      return BadField(where + ".role", QuoteForMessage(role) + " is not a role (system, developer, user, assistant or tool)");
    if (Given(m, "name") && !m["name"].is_string()) return WrongType(where + ".name", "a string", m["name"]);
    if (Given(m, "tool_calls") && !m["tool_calls"].is_array()) return WrongType(where + ".tool_calls", "an array", m["tool_calls"]);
    if (Given(m, "tool_call_id") && !m["tool_call_id"].is_string())
      return WrongType(where + ".tool_call_id", "a string", m["tool_call_id"]);
    if (role == "tool" && !Given(m, "tool_call_id"))
      return BadField(where + ".tool_call_id", "required in a tool message (the id of the call it answers)");
    if (!Given(m, "content")) {
      if (role == "assistant" && Given(m, "tool_calls")) {
        // A turn that only calls tools: content "" (clients send null or
        // nothing), since templates test it as a string ('</think>' in
        // message.content fails on null in jinja2 too), as llama-server does.
        m["content"] = "";
        continue;
      }
      return BadField(where + ".content", role == "assistant" ? "required unless the message has tool_calls" : "required");
    }
    ojson& content = m["content"];
    if (content.is_array()) {
      std::string text;
      for (size_t k = 0; k < content.size(); ++k) {
        const ojson& part = content[k];
        const std::string pw = where + ".content[" + std::to_string(k) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          return BadField(pw, "expected an object with a 'type'");
        if (part["type"] != "text")
          return BadField(pw, "content parts of type " + QuoteForMessage(part["type"].get<std::string>()) + " are not supported (text only)");
        if (!part.contains("text") || !part["text"].is_string()) return BadField(pw, "a text part needs a string 'text'");
        text += part["text"].get<std::string>();
      }
      content = text;
    } else if (!content.is_string()) {
      return WrongType(where + ".content", "a string or an array of text parts", content);
    }
    if (role == "developer") m["role"] = "system";
  }
  return std::nullopt;
}

// tools: [{"type": "function", "function": {"name": ..., "description"?, "parameters"?}}].
std::optional<ApiError> CheckTools(const ojson& tools) {
  if (!tools.is_array()) return WrongType("tools", "an array", tools);
  for (size_t i = 0; i < tools.size(); ++i) {
    const ojson& t = tools[i];
    const std::string where = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) return WrongType(where, "an object", t);
    if (!t.contains("type") || t["type"] != "function") return BadField(where + ".type", "expected 'function'");
    if (!t.contains("function") || !t["function"].is_object()) return BadField(where + ".function", "expected an object");
    const ojson& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string()) return BadField(where + ".function.name", "expected a string");
    if (Given(f, "description") && !f["description"].is_string())
      return WrongType(where + ".function.description", "a string", f["description"]);
    if (Given(f, "parameters") && !f["parameters"].is_object())
      return WrongType(where + ".function.parameters", "an object", f["parameters"]);
  }
  return std::nullopt;
}

// logit_bias: {"token id": bias in [-100, 100]}.
std::optional<ApiError> GetLogitBias(const ojson& body, int32_t vocab, std::vector<std::pair<int32_t, float>>* out) {
  if (!Given(body, "logit_bias")) return std::nullopt;
  const ojson& lb = body["logit_bias"];
  if (!lb.is_object()) return WrongType("logit_bias", "an object mapping token ids to biases", lb);
  if (lb.size() > kMaxLogitBias) return BadField("logit_bias", std::to_string(lb.size()) + " entries; at most " + std::to_string(kMaxLogitBias));
  for (const auto& [key, value] : lb.items()) {
    int64_t id = -1;
    if (!key.empty() && key.size() <= 10 && std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; }))
      id = std::stoll(key);
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      return BadField("logit_bias", "key " + QuoteForMessage(key) + " is not a token id");
    if (vocab > 0 && id >= vocab)
      return BadField("logit_bias", "token id " + key + " is outside the vocabulary of " + std::to_string(vocab));
    if (!value.is_number()) return WrongType("logit_bias", "numbers as values", value);
    const double bias = value.get<double>();
    if (!(bias >= -100 && bias <= 100))
      return BadField("logit_bias", "token " + key + ": " + NumberText(bias) + " is outside [-100, 100]");
    out->emplace_back(static_cast<int32_t>(id), static_cast<float>(bias));
  }
  return std::nullopt;
}

// response_format: {"type": "text"} is what strata does; JSON output needs
// constrained decoding, which it does not have.
std::optional<ApiError> CheckResponseFormat(const ojson& body) {
  if (!Given(body, "response_format")) return std::nullopt;
  const ojson& rf = body["response_format"];
  if (!rf.is_object()) return WrongType("response_format", "an object", rf);
  if (!rf.contains("type") || !rf["type"].is_string()) return BadField("response_format.type", "expected a string");
  const std::string type = rf["type"].get<std::string>();
  if (type == "text") return std::nullopt;
  if (type == "json_object" || type == "json_schema")
    return Unsupported("response_format", "type '" + type + "' needs constrained decoding, which this server does not do (only 'text')");
  return BadField("response_format.type", QuoteForMessage(type) + " is not a format (text, json_object or json_schema)");
}

// tool_choice: "auto", "none" (the template is shown no tools and nothing
// is parsed), "required" or {"type": "function", "function": {"name": ...}}
// (a call is forced; the name must be one of `tools`).
std::optional<ApiError> GetToolChoice(const ojson& body, CompletionRequest* r) {
  if (!Given(body, "tool_choice")) return std::nullopt;
  const ojson& tc = body["tool_choice"];
  if (tc.is_string()) {
    const std::string v = tc.get<std::string>();
    if (v == "auto") r->tool_choice = ToolChoice::kAuto;
    else if (v == "none") r->tool_choice = ToolChoice::kNone;
    else if (v == "required") r->tool_choice = ToolChoice::kRequired;
    else return BadField("tool_choice", QuoteForMessage(v) + " is not one of none, auto, required or a function");
  } else if (tc.is_object()) {
    if (!tc.contains("type") || tc["type"] != "function" || !tc.contains("function") || !tc["function"].is_object() ||
        !tc["function"].contains("name") || !tc["function"]["name"].is_string())
      return BadField("tool_choice", "expected {\"type\": \"function\", \"function\": {\"name\": ...}}");
    r->tool_choice = ToolChoice::kNamed;
    r->tool_name = tc["function"]["name"].get<std::string>();
  } else {
    return WrongType("tool_choice", "a string or an object", tc);
  }
  if (r->tool_choice == ToolChoice::kRequired || r->tool_choice == ToolChoice::kNamed) {
    if (!Given(body, "tools") || !body["tools"].is_array() || body["tools"].empty())
      return BadField("tool_choice", "forcing a tool call needs 'tools'");
  }
  if (r->tool_choice == ToolChoice::kNamed) {
    bool found = false;
    for (const ojson& t : body["tools"])
      found |= t.is_object() && t.contains("function") && t["function"].is_object() && t["function"].contains("name") &&
               t["function"]["name"] == r->tool_name;
    if (!found)
      return BadField("tool_choice", "the function " + QuoteForMessage(r->tool_name) + " is not one of 'tools'");
  }
  return std::nullopt;
}

// Chat: logprobs (a boolean) and top_logprobs (0..20, only with logprobs);
// completions: logprobs N (0..20: the token's and the N most likely).
std::optional<ApiError> GetLogprobs(const ojson& j, ApiKind kind, int* top_logprobs) {
  bool given = false;
  int64_t n = 0;
  if (kind == ApiKind::kCompletion) {
    if (Given(j, "logprobs") && j["logprobs"].is_boolean())
      return WrongType("logprobs", "an integer (the most likely tokens to list, 0..20)", j["logprobs"]);
    if (auto e = GetInteger(j, "logprobs", 0, kMaxTopLogprobs, &given, &n)) return e;
    if (given) *top_logprobs = static_cast<int>(n);
    return std::nullopt;
  }
  bool on = false;
  if (auto e = GetBool(j, "logprobs", &on)) return e;
  if (auto e = GetInteger(j, "top_logprobs", 0, kMaxTopLogprobs, &given, &n)) return e;
  if (given && !on) return BadField("top_logprobs", "only allowed with logprobs: true");
  if (on) *top_logprobs = given ? static_cast<int>(n) : 0;
  return std::nullopt;
}

// Fields strata accepts with no effect on the answer, each checked for its
// type: metadata and user (labels for the caller's own records),
// service_tier (one tier here), prediction (a predicted output only makes
// a server faster), parallel_tool_calls (a model writes as many calls as it
// writes; nothing constrains it to one).
std::optional<ApiError> CheckNoEffectFields(const ojson& j, ApiKind kind) {
  std::string s;
  if (auto e = GetString(j, "user", &s)) return e;
  if (Given(j, "metadata")) {
    const ojson& m = j["metadata"];
    if (!m.is_object()) return WrongType("metadata", "an object of strings", m);
    for (const auto& [k, v] : m.items())
      if (!v.is_string()) return WrongType("metadata." + QuoteForMessage(k, 64, false), "a string", v);
  }
  if (kind == ApiKind::kCompletion) return std::nullopt;
  if (auto e = GetString(j, "service_tier", &s)) return e;
  bool b = false;
  if (auto e = GetBool(j, "parallel_tool_calls", &b)) return e;
  if (Given(j, "prediction")) {
    const ojson& p = j["prediction"];
    if (!p.is_object() || !p.contains("type") || p["type"] != "content" || !p.contains("content") ||
        !(p["content"].is_string() || p["content"].is_array()))
      return BadField("prediction", "expected {\"type\": \"content\", \"content\": ...}");
  }
  return std::nullopt;
}

// Fields that ask for something strata does not do: refused when set to
// anything but their "off" value.
std::optional<ApiError> CheckRefusedFields(const ojson& j, ApiKind kind) {
  bool b = false;
  if (auto e = GetBool(j, "store", &b)) return e;
  if (b) return Unsupported("store", "this server keeps no completions");
  if (kind == ApiKind::kChat) {
    if (Given(j, "functions")) return Unsupported("functions", "the deprecated 'functions'; use 'tools'");
    if (Given(j, "function_call")) return Unsupported("function_call", "the deprecated 'function_call'; use 'tool_choice'");
    if (Given(j, "audio")) return Unsupported("audio", "audio output");
    if (Given(j, "web_search_options")) return Unsupported("web_search_options", "web search");
    if (Given(j, "reasoning_effort")) {
      if (!j["reasoning_effort"].is_string()) return WrongType("reasoning_effort", "a string", j["reasoning_effort"]);
      return Unsupported("reasoning_effort", "use chat_template_kwargs.enable_thinking");
    }
    if (Given(j, "modalities")) {
      const ojson& m = j["modalities"];
      if (!m.is_array()) return WrongType("modalities", "an array", m);
      for (const ojson& x : m) {
        if (!x.is_string()) return WrongType("modalities", "an array of strings", x);
        if (x != "text") return Unsupported("modalities", QuoteForMessage(x.get<std::string>()) + " (text only)");
      }
    }
  } else {
    if (auto e = GetBool(j, "echo", &b)) return e;
    if (b) return Unsupported("echo", "echoing the prompt");
    std::string suffix;
    if (auto e = GetString(j, "suffix", &suffix)) return e;
    if (!suffix.empty()) return Unsupported("suffix", "text after the insertion point");
    int64_t iv = 0;
    bool given = false;
    if (auto e = GetInteger(j, "best_of", 1, 1, &given, &iv)) {
      e->message = "'best_of': only 1 is supported";
      return e;
    }
  }
  return std::nullopt;
}

}  // namespace

std::string QuoteForMessage(const std::string& s, size_t max_bytes, bool quotes) {
  std::string out;
  if (s.size() <= max_bytes) {
    out = s;
  } else {
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
    out = s.substr(0, cut) + "... (" + std::to_string(s.size()) + " bytes)";
  }
  return quotes ? "'" + out + "'" : out;
}

nlohmann::json ErrorJson(const ApiError& e) {
  nlohmann::json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return {{"error", err}};
}

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(const std::string& body, ApiKind kind,
                                                                 const ApiLimits& limits) {
  // The checks model files get (valid UTF-8, bounded nesting, no duplicate
  // keys); then an order-keeping parse, as templates see keys in order.
  auto checked = ParseUntrustedJson(body, "the request body");
  if (!checked.ok()) {
    ApiError e;
    e.message = checked.status().message();
    return e;
  }
  ojson j = ojson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ApiError e;
    e.message = "the request body must be a JSON object";
    return e;
  }
  CompletionRequest r;
  r.kind = kind;

  if (Given(j, "model")) {
    if (!j["model"].is_string()) return WrongType("model", "a string", j["model"]);
    const std::string m = j["model"].get<std::string>();
    if (!limits.model_ids.empty() && std::find(limits.model_ids.begin(), limits.model_ids.end(), m) == limits.model_ids.end()) {
      ApiError e = BadField("model", "the model " + QuoteForMessage(m) + " does not exist here; this server has '" + limits.model_ids[0] + "'");
      e.status = 404;
      e.code = "model_not_found";
      return e;
    }
  }

  if (kind == ApiKind::kChat) {
    if (!j.contains("messages")) return BadField("messages", "required");
    ojson messages = j["messages"];
    if (!messages.is_array()) return WrongType("messages", "an array", messages);
    if (messages.empty()) return BadField("messages", "at least one message is needed");
    if (auto e = CheckAndNormalizeMessages(&messages)) return *e;
    r.conversation.messages = std::move(messages);
    if (Given(j, "tools"))
      if (auto e = CheckTools(j["tools"])) return *e;
    if (auto e = GetToolChoice(j, &r)) return *e;
    if (Given(j, "tools") && !j["tools"].empty() && r.tool_choice != ToolChoice::kNone) {
      r.conversation.tools = j["tools"];
      r.has_tools = true;
    }
    if (Given(j, "chat_template_kwargs")) {
      const ojson& k = j["chat_template_kwargs"];
      if (!k.is_object()) return WrongType("chat_template_kwargs", "an object", k);
      for (const auto& [key, value] : k.items())
        if (key != "enable_thinking")
          return Unsupported("chat_template_kwargs." + QuoteForMessage(key, 64, false), "the templates get enable_thinking only");
      bool thinking = false;
      if (Given(k, "enable_thinking")) {
        if (auto e = GetBool(k, "enable_thinking", &thinking, "chat_template_kwargs.enable_thinking")) return *e;
        r.enable_thinking = thinking;
      }
    }
  } else {
    if (!j.contains("prompt")) return BadField("prompt", "required");
    const ojson& p = j["prompt"];
    // A string, one string in a list, token ids, or one list of token ids.
    const ojson* one = &p;
    if (p.is_array() && p.size() == 1 && (p[0].is_string() || p[0].is_array())) one = &p[0];
    if (one->is_string()) {
      r.prompt = one->get<std::string>();
      if (r.prompt.empty()) return BadField("prompt", "the prompt is empty");
    } else if (one->is_array()) {
      if (one->empty()) return BadField("prompt", "the prompt is empty");
      for (const ojson& t : *one) {
        if (!t.is_number_integer()) return BadField("prompt", "a list prompt must hold one string or token ids (integers)");
        const int64_t id = t.is_number_unsigned() && t.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                               ? -1
                               : t.get<int64_t>();
        if (id < 0 || id > std::numeric_limits<int32_t>::max()) return BadField("prompt", "token id " + t.dump() + " is out of range");
        if (limits.vocab > 0 && id >= limits.vocab)
          return BadField("prompt", "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(limits.vocab));
        r.prompt_ids.push_back(static_cast<int32_t>(id));
      }
    } else {
      return BadField("prompt", "expected a string, a list with one string, or a list of token ids; several prompts per request are not supported");
    }
  }

  bool given = false;
  int64_t iv = 0;
  double dv = 0;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    given = false;
    if (auto e = GetInteger(j, key, 1, limits.max_tokens, &given, &iv)) return *e;
    if (given) r.max_tokens = static_cast<int>(iv);
  }
  given = false;
  if (auto e = GetInteger(j, "n", 1, 1, &given, &iv)) {
    e->message = "'n': only one choice per request is supported";
    return *e;
  }
  given = false;
  if (auto e = GetNumber(j, "temperature", 0, 100, &given, &dv)) return *e;
  if (given) r.sampling.temperature = static_cast<float>(dv);
  given = false;
  if (auto e = GetNumber(j, "top_p", 0, 1, &given, &dv)) return *e;
  if (given) r.sampling.top_p = static_cast<float>(dv);  // a top_p that rounds to 0 in float is 0: the top token
  given = false;
  if (auto e = GetInteger(j, "top_k", 0, std::numeric_limits<int32_t>::max(), &given, &iv)) return *e;
  if (given) r.sampling.top_k = static_cast<int32_t>(iv);
  given = false;
  if (auto e = GetNumber(j, "min_p", 0, 1, &given, &dv)) return *e;
  if (given) r.sampling.min_p = static_cast<float>(dv);
  for (const char* key : {"repeat_penalty", "repetition_penalty"}) {
    given = false;
    if (auto e = GetNumber(j, key, 1e-3, 100, &given, &dv)) return *e;
    if (given) r.sampling.repeat_penalty = static_cast<float>(dv);
  }
  given = false;
  if (auto e = GetInteger(j, "repeat_last_n", 0, 1 << 20, &given, &iv)) return *e;
  if (given) r.sampling.repeat_last_n = static_cast<int32_t>(iv);
  given = false;
  if (auto e = GetInteger(j, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &given, &iv)) return *e;
  if (given) {
    r.sampling.seed = static_cast<uint64_t>(iv);
    r.seeded = true;
  }
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    given = false;
    if (auto e = GetNumber(j, key, -2, 2, &given, &dv)) return *e;
    if (given && dv != 0) return BadField(key, "not supported (only 0); use repeat_penalty");
  }
  if (auto e = GetLogitBias(j, limits.vocab, &r.sampling.logit_bias)) return *e;
  if (auto e = CheckResponseFormat(j)) return *e;
  if (auto e = GetBool(j, "cache_prompt", &r.cache_prompt)) return *e;
  if (auto e = GetBool(j, "stream", &r.stream)) return *e;
  if (auto e = GetBool(j, "ignore_eos", &r.ignore_eos)) return *e;
  if (auto e = GetLogprobs(j, kind, &r.top_logprobs)) return *e;
  if (Given(j, "stream_options")) {
    const ojson& so = j["stream_options"];
    if (!so.is_object()) return WrongType("stream_options", "an object", so);
    if (!r.stream) return BadField("stream_options", "only allowed with stream: true");
    if (auto e = GetBool(so, "include_usage", &r.include_usage, "stream_options.include_usage")) return *e;
  }
  if (Given(j, "stop")) {
    const ojson& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const ojson& x : s) {
        if (!x.is_string()) return BadField("stop", "expected a string or an array of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", s);
    }
    if (static_cast<int>(r.stop.size()) > limits.max_stop)
      return BadField("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
    for (const std::string& x : r.stop)
      if (x.empty()) return BadField("stop", "stop strings must not be empty");
  }
  if (auto e = CheckRefusedFields(j, kind)) return *e;
  if (auto e = CheckNoEffectFields(j, kind)) return *e;
  if (!r.seeded) {
    // OpenAI's API is not reproducible without a seed: draw one.
    static std::atomic<uint64_t> counter{0};
    r.sampling.seed = std::random_device{}() ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull) ^
                      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return r;
}

CompletionText::CompletionText(const Tokenizer& tokenizer, std::vector<int32_t> eos_ids, std::vector<std::string> stop,
                               bool split_thinking, bool opens_thinking)
    : decoder_(tokenizer),
      eos_ids_(std::move(eos_ids)),
      stop_(std::move(stop)),
      split_thinking_(split_thinking),
      splitter_(opens_thinking) {}

TextDelta CompletionText::Emit(const std::string& raw) {
  TextDelta d;
  if (raw.empty()) return d;
  if (split_thinking_) splitter_.Push(raw, &d.reasoning, &d.content);
  else d.content = raw;
  return d;
}

TextDelta CompletionText::Push(int32_t id) {
  if (stopped_ || std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end()) return {};
  held_ += decoder_.Push(id);
  if (stop_.empty()) return Emit(std::exchange(held_, {}));
  // The earliest stop string ends the text.
  size_t cut = std::string::npos;
  for (const std::string& s : stop_) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return Emit(out);
  }
  // Hold back the longest tail that begins some stop string.
  size_t keep = 0;
  for (const std::string& s : stop_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return Emit(out);
}

TextDelta CompletionText::Finish() {
  TextDelta d;
  if (!stopped_) {
    held_ += decoder_.Flush();
    d = Emit(std::exchange(held_, {}));
  }
  if (split_thinking_) splitter_.Flush(&d.reasoning, &d.content);
  return d;
}

std::string NewCompletionId(ApiKind kind) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char b[64];
  std::snprintf(b, sizeof b, "%s-%08llx%08llx", kind == ApiKind::kChat ? "chatcmpl" : "cmpl",
                static_cast<unsigned long long>(salt & 0xffffffffu), static_cast<unsigned long long>(counter.fetch_add(1)));
  return b;
}

}  // namespace strata
