// Untrusted JSON: pre-checks of the text, duplicate-key detection during the
// parse, exceptions turned into statuses. See untrusted_json.h.
#include "model/untrusted_json.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

namespace strata {

int JsonNestingDepth(std::string_view s, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') { max_depth = std::max(max_depth, ++depth); if (max_depth > limit) return max_depth; }
    else if (c == ']' || c == '}') --depth;
  }
  return max_depth;
}

bool IsValidUtf8(const uint8_t* p, uint64_t n, uint64_t* bad_at) {
  uint64_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else { *bad_at = i; return false; }
    if (n - i < static_cast<uint64_t>(len)) { *bad_at = i; return false; }
    for (int k = 1; k < len; ++k) {
      uint8_t cc = p[i + k];
      if ((cc & 0xC0) != 0x80) { *bad_at = i; return false; }
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { *bad_at = i; return false; }
    i += len;
  }
  return true;
}

Result<nlohmann::json> ParseUntrustedJson(std::string_view text, const std::string& what, int max_depth) {
  uint64_t bad_at = 0;
  if (!IsValidUtf8(reinterpret_cast<const uint8_t*>(text.data()), text.size(), &bad_at))
    return DataLoss(what + " is not valid UTF-8 (bad byte at offset " + std::to_string(bad_at) + ")");
  // nlohmann's lexer ends the input at a NUL byte, which would let anything
  // follow it; raw NULs are never valid JSON (strings must escape them).
  if (size_t nul = text.find('\0'); nul != std::string_view::npos)
    return DataLoss(what + " contains a NUL byte at offset " + std::to_string(nul));
  if (JsonNestingDepth(text, max_depth) > max_depth)
    return DataLoss(what + " nests JSON deeper than " + std::to_string(max_depth) + " levels");
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool has_duplicate = false;
  auto on_event = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) -> bool {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty() && parsed.is_string()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && !has_duplicate) {
        has_duplicate = true;
        duplicate = k;
      }
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/true);
  } catch (const std::exception& e) {
    return DataLoss(what + " is not valid JSON: " + e.what());
  } catch (...) {
    return DataLoss(what + " is not valid JSON");
  }
  if (has_duplicate) return DataLoss(what + ": duplicate key " + QuoteUntrusted(duplicate));
  if (!j.is_object()) return DataLoss(what + " is not a JSON object (its top level is " + j.type_name() + ")");
  return j;
}

Result<nlohmann::json> ReadUntrustedJsonFile(const std::string& path, const std::string& kind, uint64_t max_bytes) {
  const std::string what = (kind.empty() ? "" : kind + " ") + "'" + path + "'";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(what + " does not exist");
    return IoError("cannot stat " + what + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return DataLoss(what + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return DataLoss(what + " is " + std::to_string(st.st_size) + " bytes, more than the limit of " + std::to_string(max_bytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot open " + what);
  std::string text(static_cast<size_t>(st.st_size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.gcount() != static_cast<std::streamsize>(text.size())) return IoError("cannot read " + what);
  return ParseUntrustedJson(text, what);
}

}  // namespace strata
