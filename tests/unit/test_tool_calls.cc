// Tests for coordinator/tool_calls: the parse of recorded model outputs in
// each format (a call, several, text around them, malformed, cut by
// max_tokens), the same outputs streamed in pieces of every size (same
// calls, same content), the format detection on the shared templates, and
// the forced prefixes (prefix + a model's completion parses as the call).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "coordinator/tool_calls.h"

namespace strata {
namespace {

using json = nlohmann::json;

struct Case {
  const char* label;
  ToolCallFormat format;
  std::string text;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments (JSON, compared as JSON)
  std::string content;                                      // expected content
};

std::vector<Case> Cases() {
  using F = ToolCallFormat;
  const std::string cut_hermes = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
  return {
      // Qwen3 / Hermes, as Qwen3-0.6B writes it.
      {"hermes one", F::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {"hermes two with text", F::kHermes,
       "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", "
       "\"arguments\": {\"x\": [1, 2, {\"y\": \"}\"}]}}\n</tool_call>",
       {{"a", "{}"}, {"b", R"({"x":[1,2,{"y":"}"}]})"}}, "Let me check.\n\n"},
      {"hermes arguments as a JSON string", F::kHermes, "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"n\\\": 3}\"}</tool_call>",
       {{"f", R"({"n":3})"}}, ""},
      {"hermes unclosed at the end", F::kHermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": 1}}", {{"f", R"({"n":1})"}}, ""},
      {"hermes malformed JSON stays content", F::kHermes, "Sure <tool_call>{name: f}</tool_call> done", {},
       "Sure <tool_call>{name: f}</tool_call> done"},
      {"hermes no name stays content", F::kHermes, "<tool_call>{\"arguments\": {}}</tool_call>", {},
       "<tool_call>{\"arguments\": {}}</tool_call>"},
      {"hermes cut by max_tokens stays content", F::kHermes, cut_hermes, {}, cut_hermes},
      {"hermes good then malformed", F::kHermes,
       "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": [1]}</tool_call>",
       {{"a", "{}"}}, "<tool_call>{\"name\": \"b\", \"arguments\": [1]}</tool_call>"},
      {"hermes plain text", F::kHermes, "No tools needed: 2 + 2 = 4.", {}, "No tools needed: 2 + 2 = 4."},
      // Llama 3.2.
      {"llama3 one", F::kLlama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {"llama3 python tag, two", F::kLlama3, "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"k\": true}}",
       {{"a", "{}"}, {"b", R"({"k":true})"}}, ""},
      {"llama3 text stays content", F::kLlama3, "The weather is {\"sunny\"}.", {}, "The weather is {\"sunny\"}."},
      {"llama3 cut stays content", F::kLlama3, "{\"name\": \"a\", \"parameters\": {\"k\": ", {}, "{\"name\": \"a\", \"parameters\": {\"k\": "},
      {"llama3 JSON that is not a call", F::kLlama3, "{\"answer\": 4}", {}, "{\"answer\": 4}"},
      // Mistral / Ministral 3.
      {"mistral one", F::kMistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}", {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {"mistral two with text", F::kMistral, "Checking.[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[ARGS]{\"n\": 2}",
       {{"a", "{}"}, {"b", R"({"n":2})"}}, "Checking."},
      {"mistral JSON list", F::kMistral, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": \"x\"}}, {\"name\": \"b\", \"arguments\": {}}]",
       {{"a", R"({"q":"x"})"}, {"b", "{}"}}, ""},
      {"mistral cut stays content", F::kMistral, "[TOOL_CALLS]a[ARGS]{\"q\": \"x", {}, "[TOOL_CALLS]a[ARGS]{\"q\": \"x"},
      {"mistral no ARGS stays content", F::kMistral, "[TOOL_CALLS]just words", {}, "[TOOL_CALLS]just words"},
      // LFM2.
      {"lfm2 one", F::kLfm2, "<|tool_call_start|>[get_weather(city=\"Paris\")]<|tool_call_end|>",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {"lfm2 two, every literal", F::kLfm2,
       "Sure.<|tool_call_start|>[a(n=-3, x=2.5, ok=True, no=None, l=[1, 'two'], d={'k': (1, 2)}), b()]<|tool_call_end|>",
       {{"a", R"({"n":-3,"x":2.5,"ok":true,"no":null,"l":[1,"two"],"d":{"k":[1,2]}})"}, {"b", "{}"}}, "Sure."},
      {"lfm2 positional argument stays content", F::kLfm2, "<|tool_call_start|>[f(1)]<|tool_call_end|>", {},
       "<|tool_call_start|>[f(1)]<|tool_call_end|>"},
      {"lfm2 cut stays content", F::kLfm2, "<|tool_call_start|>[f(city=\"Pa", {}, "<|tool_call_start|>[f(city=\"Pa"},
      // No format: nothing is parsed.
      {"none", F::kNone, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>", {},
       "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>"},
  };
}

void ExpectCalls(const Case& c, const std::vector<ToolCall>& calls) {
  ASSERT_EQ(calls.size(), c.calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].name, c.calls[i].first);
    EXPECT_EQ(json::parse(calls[i].arguments), json::parse(c.calls[i].second)) << calls[i].arguments;
    EXPECT_EQ(calls[i].id.rfind("call_", 0), 0u) << calls[i].id;
  }
}

TEST(ToolCalls, ParsesRecordedOutputs) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.label);
    ParsedToolCalls p = ParseToolCalls(c.format, c.text);
    ExpectCalls(c, p.calls);
    EXPECT_EQ(p.content, c.content);
  }
}

// Streamed in pieces of 1, 2, 3, 5, 7 and 1000 bytes: the same calls, and
// the same content (as the concatenation of what was let out).
TEST(ToolCalls, StreamEqualsWholeParse) {
  for (const Case& c : Cases()) {
    for (size_t piece : {1, 2, 3, 5, 7, 1000}) {
      SCOPED_TRACE(std::string(c.label) + ", pieces of " + std::to_string(piece));
      ToolCallStream s(c.format);
      std::string content;
      std::vector<ToolCall> calls;
      for (size_t i = 0; i < c.text.size(); i += piece) {
        ToolCallStream::Out o = s.Push(std::string_view(c.text).substr(i, piece));
        content += o.content;
        for (auto& x : o.calls) calls.push_back(x);
      }
      ToolCallStream::Out o = s.Finish();
      content += o.content;
      for (auto& x : o.calls) calls.push_back(x);
      ExpectCalls(c, calls);
      // The whole parse drops white space between calls when nothing else
      // is content; a stream may have let it out already.
      if (c.content.empty()) EXPECT_TRUE(content.find_first_not_of(" \n") == std::string::npos) << content;
      else EXPECT_EQ(content, c.content);
    }
  }
}

// Plain text goes out at once but for a tail that may open a call.
TEST(ToolCalls, StreamHoldsOnlyWhatMayBeACall) {
  ToolCallStream s(ToolCallFormat::kHermes);
  EXPECT_EQ(s.Push("Hello <tool").content, "Hello ");
  EXPECT_EQ(s.Push("box> there").content, "<toolbox> there");
  ToolCallStream l(ToolCallFormat::kLlama3);
  EXPECT_EQ(l.Push("  ").content, "");
  EXPECT_EQ(l.Push("Hi").content, "  Hi");
  EXPECT_EQ(l.Push(" {\"name\"").content, " {\"name\"");  // only the answer's start can be a call
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ToolCalls, DetectsTheSharedTemplatesFormats) {
  const std::string dir = std::string(STRATA_SHARED_DIR) + "/templates/";
  const std::pair<const char*, ToolCallFormat> want[] = {
      {"Qwen-Qwen3-0.6B.jinja", ToolCallFormat::kHermes},
      {"meta-llama-Llama-3.2-3B-Instruct.jinja", ToolCallFormat::kLlama3},
      {"mistralai-Ministral-3-14B-Reasoning-2512.jinja", ToolCallFormat::kMistral},
      {"LFM2.5-Instruct.jinja", ToolCallFormat::kLfm2},
      {"HuggingFaceTB-SmolLM3-3B.jinja", ToolCallFormat::kNone},  // the shared one defines no tools
  };
  for (const auto& [file, format] : want) {
    const std::string src = ReadFile(dir + file);
    ASSERT_FALSE(src.empty()) << file;
    EXPECT_EQ(DetectToolCallFormat(src), format) << file << ": " << ToolCallFormatName(DetectToolCallFormat(src));
  }
}

// A forced prefix plus what a model writes after it is one call of that name.
TEST(ToolCalls, ForcedPrefixContinuesIntoACall) {
  const std::pair<ToolCallFormat, std::string> rest[] = {
      {ToolCallFormat::kHermes, "\"city\": \"Paris\"}}\n</tool_call>"},
      {ToolCallFormat::kLlama3, "\"city\": \"Paris\"}}"},
      {ToolCallFormat::kMistral, "\"city\": \"Paris\"}"},
      {ToolCallFormat::kLfm2, "city=\"Paris\")]<|tool_call_end|>"},
  };
  for (const auto& [format, tail] : rest) {
    SCOPED_TRACE(ToolCallFormatName(format));
    ParsedToolCalls p = ParseToolCalls(format, ForcedCallPrefix(format, "get_weather") + tail);
    ASSERT_EQ(p.calls.size(), 1u) << p.content;
    EXPECT_EQ(p.calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(p.calls[0].arguments), json::parse(R"({"city":"Paris"})"));
    EXPECT_EQ(p.content, "");
  }
  EXPECT_EQ(ForcedCallPrefix(ToolCallFormat::kNone, "f"), "");
  // A name needing JSON escapes stays a JSON string.
  EXPECT_NE(ForcedCallPrefix(ToolCallFormat::kHermes, "a\"b").find("\"a\\\"b\""), std::string::npos);
}

TEST(ToolCalls, DeepNestingIsContentNotACrash) {
  std::string deep = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": " + std::string(100000, '[') + "}}</tool_call>";
  ParsedToolCalls p = ParseToolCalls(ToolCallFormat::kHermes, deep);
  EXPECT_TRUE(p.calls.empty());
  EXPECT_EQ(p.content, deep);
  std::string deep_py = "<|tool_call_start|>[f(a=" + std::string(100000, '[') + ")]<|tool_call_end|>";
  p = ParseToolCalls(ToolCallFormat::kLfm2, deep_py);
  EXPECT_TRUE(p.calls.empty());
}

}  // namespace
}  // namespace strata
