// OpenAI-compatible request parsing and completion text (openai_api.h).
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

const char* TypeName(const ojson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Each getter: nullopt-like "absent" when the field is missing or null (as
// OpenAI's API treats null), an ApiError when it has the wrong type or range.
std::optional<ApiError> GetBool(const ojson& body, const char* key, bool* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_boolean()) return BadField(key, std::string("expected a boolean, got ") + TypeName(body[key]));
  *out = body[key].get<bool>();
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const ojson& body, const char* key, double lo, double hi, bool* given, double* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const ojson& v = body[key];
  if (!v.is_number()) return BadField(key, std::string("expected a number, got ") + TypeName(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    char b[160];
    std::snprintf(b, sizeof b, "%g is outside [%g, %g]", x, lo, hi);
    return BadField(key, b);
  }
  *given = true;
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> GetInteger(const ojson& body, const char* key, int64_t lo, int64_t hi, bool* given, int64_t* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const ojson& v = body[key];
  if (!v.is_number_integer())
    return BadField(key, std::string("expected an integer, got ") + (v.is_number() ? "a fractional number" : TypeName(v)));
  // Values past int64 arrive as unsigned.
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return BadField(key, "the value is too large");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return BadField(key, std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  *given = true;
  *out = x;
  return std::nullopt;
}

// Chat content as the templates expect it: a string (a list of text parts is
// joined), null kept for assistant turns that only call tools.
std::optional<ApiError> NormalizeMessages(ojson* messages) {
  for (size_t i = 0; i < messages->size(); ++i) {
    ojson& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.contains("content") || !m["content"].is_array()) continue;
    std::string text;
    for (size_t k = 0; k < m["content"].size(); ++k) {
      const ojson& part = m["content"][k];
      const std::string pw = where + ".content[" + std::to_string(k) + "]";
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
        return BadField(pw, "expected an object with a 'type'");
      if (part["type"] != "text")
        return BadField(pw, "content parts of type '" + part["type"].get<std::string>() + "' are not supported (text only)");
      if (!part.contains("text") || !part["text"].is_string()) return BadField(pw, "a text part needs a string 'text'");
      text += part["text"].get<std::string>();
    }
    m["content"] = text;
  }
  return std::nullopt;
}

}  // namespace

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

  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string()) return BadField("model", std::string("expected a string, got ") + TypeName(j["model"]));
    const std::string m = j["model"].get<std::string>();
    if (!limits.model_ids.empty() && std::find(limits.model_ids.begin(), limits.model_ids.end(), m) == limits.model_ids.end()) {
      ApiError e = BadField("model", "the model '" + m + "' does not exist here; this server has '" + limits.model_ids[0] + "'");
      e.status = 404;
      e.code = "model_not_found";
      return e;
    }
  }

  if (kind == ApiKind::kChat) {
    if (!j.contains("messages")) return BadField("messages", "required");
    ojson messages = j["messages"];
    if (!messages.is_array()) return BadField("messages", std::string("expected an array, got ") + TypeName(messages));
    if (messages.empty()) return BadField("messages", "at least one message is needed");
    if (Status st = CheckMessages(messages); !st.ok()) {
      ApiError e;
      e.param = "messages";
      e.message = st.message();
      return e;
    }
    if (auto e = NormalizeMessages(&messages)) return *e;
    r.conversation.messages = std::move(messages);
    if (j.contains("tools") && !j["tools"].is_null()) {
      if (!j["tools"].is_array()) return BadField("tools", std::string("expected an array, got ") + TypeName(j["tools"]));
      r.conversation.tools = j["tools"];
    }
    if (j.contains("chat_template_kwargs") && !j["chat_template_kwargs"].is_null()) {
      const ojson& k = j["chat_template_kwargs"];
      if (!k.is_object()) return BadField("chat_template_kwargs", "expected an object");
      bool thinking = false;
      if (k.contains("enable_thinking") && !k["enable_thinking"].is_null()) {
        if (auto e = GetBool(k, "enable_thinking", &thinking)) return BadField("chat_template_kwargs.enable_thinking", "expected a boolean");
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
        const int64_t id = t.get<int64_t>();
        if (id < 0 || id > std::numeric_limits<int32_t>::max()) return BadField("prompt", "token id " + std::to_string(id) + " is out of range");
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
  if (given) {
    if (dv <= 0) return BadField("top_p", "must be greater than 0");
    r.sampling.top_p = static_cast<float>(dv);
  }
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
  if (auto e = GetBool(j, "stream", &r.stream)) return *e;
  if (auto e = GetBool(j, "ignore_eos", &r.ignore_eos)) return *e;
  bool logprobs = false;
  if (auto e = GetBool(j, "logprobs", &logprobs)) {
    if (!(j["logprobs"].is_number_integer() && kind == ApiKind::kCompletion)) return *e;
    logprobs = j["logprobs"].get<int64_t>() > 0;
  }
  if (logprobs) return BadField("logprobs", "not supported");
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const ojson& so = j["stream_options"];
    if (!so.is_object()) return BadField("stream_options", "expected an object");
    if (!r.stream) return BadField("stream_options", "only allowed with stream: true");
    if (auto e = GetBool(so, "include_usage", &r.include_usage)) return BadField("stream_options.include_usage", "expected a boolean");
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const ojson& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const ojson& x : s) {
        if (!x.is_string()) return BadField("stop", "expected a string or an array of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      return BadField("stop", std::string("expected a string or an array of strings, got ") + TypeName(s));
    }
    if (static_cast<int>(r.stop.size()) > limits.max_stop)
      return BadField("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
    for (const std::string& x : r.stop)
      if (x.empty()) return BadField("stop", "stop strings must not be empty");
  }
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
