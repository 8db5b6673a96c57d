// Parsing JSON that came from a file (config.json, generation_config.json,
// tokenizer.json, tokenizer_config.json, a safetensors header or index).
// Runs wherever those files are read (every rank for configs and headers,
// rank 0 for tokenizer files).
//
// nlohmann::json accepts things a model file must not contain, and fails in
// ways a loader must not: it resolves duplicate keys silently (last wins),
// stops at a NUL byte, takes any bytes inside strings, and its recursive
// dump() overflows the stack on deeply nested input. ParseUntrustedJson checks
// the text first (bounded size, valid UTF-8, no NUL, bounded nesting), rejects
// duplicate keys in every object, requires an object at the top level, and
// turns every parser exception into a DataLoss status naming the source.
//
//   STRATA_ASSIGN_OR_RETURN(nlohmann::json cfg, ReadUntrustedJsonFile(dir + "/config.json", "config"));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace strata {

// Generous for every HF file (tokenizer.json nests 7 deep), small enough that
// nothing recursive over the parsed value can exhaust the stack.
constexpr int kMaxJsonDepth = 64;
// Largest JSON file read whole (Llama-3's tokenizer.json is 9 MB).
constexpr uint64_t kMaxJsonFileBytes = 64ull << 20;

// `what` names the source in messages, e.g. "config '/m/config.json'".
Result<nlohmann::json> ParseUntrustedJson(std::string_view text, const std::string& what,
                                          int max_depth = kMaxJsonDepth);

// Reads `path` whole (at most `max_bytes`; a missing file is NotFound) and
// parses it with ParseUntrustedJson. Messages name the file as
// "<kind> '<path>'" (kind e.g. "config"; empty: just the quoted path).
Result<nlohmann::json> ReadUntrustedJsonFile(const std::string& path, const std::string& kind,
                                             uint64_t max_bytes = kMaxJsonFileBytes);

// Deepest nesting of [ and { outside strings in JSON text (counting stops
// past `limit`): a check before parsing, for callers that cannot use
// ParseUntrustedJson (a top level that is not an object).
int JsonNestingDepth(std::string_view text, int limit);

// True when [p, p+n) is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF); else *bad_at is the offset of the first bad byte.
bool IsValidUtf8(const uint8_t* p, uint64_t n, uint64_t* bad_at);

}  // namespace strata
