// The fuzz targets' bodies, shared by the libFuzzer binaries (STRATA_FUZZ=ON,
// fuzz/fuzz_*.cc) and by strata_fuzz_replay, which runs the inputs kept in
// fuzz/regressions/ through exactly the same code in the normal build (ctest
// `fuzz_regressions`). Each entry feeds bytes to a loader the way a model file
// reaches it and checks what must hold whatever the bytes are: the loader
// returns (never crashes), an error names its file, and whatever loads is
// consistent (tensor bytes inside the mapping, text round-trips through the
// tokenizer). A broken invariant aborts through STRATA_CHECK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace strata::fuzz {

// A .gguf file: GgufFile::Open, every metadata getter, then ModelFiles::Open
// (architecture config, tensor table) and the GGUF vocabulary + tokenizer.
int GgufEntry(const uint8_t* data, size_t size);
// A .safetensors file: SafetensorsModel::OpenFile (header length, JSON,
// dtypes, offsets, tiling of the data region).
int SafetensorsEntry(const uint8_t* data, size_t size);
// Arbitrary bytes (any UTF-8 validity) as text for the Llama-3 tokenizer:
// Encode must decode back to the same bytes; the stream decoder must emit
// valid UTF-8.
int TokenizerEntry(const uint8_t* data, size_t size);
// The JSON files of an HF directory. The first byte picks the file the rest
// becomes (0: config.json, 1: generation_config.json, 2: tokenizer_config.json,
// 3: tokenizer.json); the others are small valid ones.
int JsonConfigEntry(const uint8_t* data, size_t size);
// A chat template and a conversation, split at the first NUL byte: the
// template's Jinja source before it, the conversation's JSON (a message list
// or {"messages", "tools"}) after it; with no NUL, the whole input is the
// template and the conversation a small fixed one. ChatTemplate::Create, then
// Apply with the generation prompt on and off and enable_thinking unset /
// true / false: every failure is a Status (a template error names its line),
// and rendering stays within the renderer's bounds on time, memory, output
// size and recursion (coordinator/jinja/value.h), whatever the template does.
int ChatTemplateEntry(const uint8_t* data, size_t size);

// Small valid inputs built in code (seeds for the corpus): a tiny smollm3
// GGUF with a byte-level vocabulary, a tiny safetensors file, the JSON files
// JsonConfigEntry completes a directory with (kind byte first), and a chat
// template using most of the Jinja subset with a conversation.
struct Seed {
  std::string target, name;
  std::vector<uint8_t> bytes;
};
std::vector<Seed> Seeds();

struct Target {
  const char* name;  // the fuzz/regressions/ and fuzz/corpus/ subfolder
  int (*entry)(const uint8_t*, size_t);
};
const std::vector<Target>& Targets();

}  // namespace strata::fuzz
