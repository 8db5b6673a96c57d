// Tool calls in a model's answer (rank 0, the server's threads): which
// format a chat template teaches, the parse of generated text into OpenAI's
// `tool_calls`, and the same parse as the text streams in.
//
// Formats (what each template family teaches its model to write):
//   kHermes   <tool_call>{"name": "f", "arguments": {...}}</tool_call>, one
//             block per call (Qwen3, SmolLM3, Hermes); the closing tag may be
//             missing at the very end of the answer (a model that stopped
//             right after the JSON), as vLLM's hermes parser allows.
//   kLlama3   the whole answer is {"name": "f", "parameters": {...}} (or
//             several, separated by ';'), optionally after <|python_tag|>.
//   kMistral  [TOOL_CALLS]f[ARGS]{...} per call (Ministral 3, Mistral's
//             newer templates), or [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...].
//   kLfm2     <|tool_call_start|>[f(a=1, b="x"), g()]<|tool_call_end|>: a
//             Python list of calls with keyword arguments (LFM2).
// Text that looks like a call but does not parse (bad JSON, a call cut by
// max_tokens, a name that is not a string) stays in the content, whole:
// nothing the model wrote is dropped.
//
//   ToolCallFormat f = DetectToolCallFormat(template_source);
//   ParsedToolCalls p = ParseToolCalls(f, answer_text);   // p.content, p.calls
//
//   ToolCallStream s(f);                  // streaming: text that may be a call is held back
//   ToolCallStream::Out o = s.Push(piece);   // o.content to send now, o.calls complete calls
//   o = s.Finish();                          // at the end of the answer
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace strata {

enum class ToolCallFormat { kNone, kHermes, kLlama3, kMistral, kLfm2 };

const char* ToolCallFormatName(ToolCallFormat f);

// The format a chat template's source teaches, by the markers it writes:
// "<tool_call>" -> kHermes, "[TOOL_CALLS]" -> kMistral, "<|tool_call_start|>"
// or LFM2's "List of tools: [" -> kLfm2, Llama 3's '"parameters": ' with
// "<|start_header_id|>" -> kLlama3; otherwise kNone (answers are not parsed).
ToolCallFormat DetectToolCallFormat(std::string_view template_source);

struct ToolCall {
  std::string id;         // "call_..." (NewToolCallId), or the model's own id when it wrote one
  std::string name;
  std::string arguments;  // a JSON object, as text (OpenAI's function.arguments)
};

struct ParsedToolCalls {
  std::string content;  // the text outside the calls (and any that did not parse)
  std::vector<ToolCall> calls;
};

ParsedToolCalls ParseToolCalls(ToolCallFormat f, std::string_view text);

// The text the server writes at the start of the answer (after the
// template's generation prompt) when tool_choice forces a call: the format's
// opener, and with `name` the call's head up to its arguments' opening
// brace, so that the model continues inside the call (as llama-server and
// vLLM constrain the output; strata has no grammar, so the rest is the
// model's). Empty for kNone.
std::string ForcedCallPrefix(ToolCallFormat f, const std::string& name);

std::string NewToolCallId();

// The parse as the answer streams in. Plain text goes out at once, but for
// a tail that may begin a call marker; from a marker on, text is held until
// the call is complete (its closing marker, or the end), then comes out as
// a call or, when it does not parse, as content.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolCallFormat f) : format_(f) {}
  struct Out {
    std::string content;
    std::vector<ToolCall> calls;
  };
  Out Push(std::string_view text);
  Out Finish();

 private:
  ToolCallFormat format_;
  std::string held_;          // text not yet emitted
  bool decided_ = false;      // kLlama3: whether the answer is a call is known
  bool llama_call_ = false;   // kLlama3: it may be (it began with '{' or <|python_tag|>)
};

}  // namespace strata
