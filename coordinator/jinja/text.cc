// Python's str operations (see text.h). Rank 0.
#include "coordinator/jinja/text.h"

#include <cctype>
#include <cstdlib>
#include <functional>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/unicode.h"

namespace strata::jinja {


std::u32string Decode(std::string_view s) {
  Charge(static_cast<int64_t>(s.size()) * 4);  // writes four bytes per code point
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    Utf8Seq q = ClassifyUtf8(s.data() + i, s.size() - i);
    out.push_back(q.kind == Utf8Seq::kValid ? q.cp : U'\uFFFD');
    i += q.kind == Utf8Seq::kIncomplete ? s.size() - i : q.len;
  }
  return out;
}

std::string Encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) AppendUtf8(out, c);
  return out;
}

size_t CodePoints(std::string_view s) {
  Charge(static_cast<int64_t>(s.size()));
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string Strip(const std::string& s, const std::u32string* chars, bool left, bool right) {
  std::u32string u = Decode(s);
  auto strip = [&](char32_t c) { return chars ? chars->find(c) != std::u32string::npos : IsSpace(c); };
  size_t a = 0, b = u.size();
  if (left) while (a < b && strip(u[a])) ++a;
  if (right) while (b > a && strip(u[b - 1])) --b;
  return Encode(std::u32string_view(u).substr(a, b - a));
}

bool IsAscii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

namespace {

std::string AsciiCase(const std::string& s, int line, const char* what, const std::function<char(char, bool)>& f) {
  if (!IsAscii(s)) Fail(line, std::string(what) + "() of non-ASCII text is not supported", ErrorKind::kUnimplemented);
  std::string out = s;
  bool prev_alpha = false;
  for (char& c : out) {
    bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0;
    c = f(c, prev_alpha);
    prev_alpha = alpha;
  }
  return out;
}

}  // namespace

std::string Lower(const std::string& s, int line) {
  return AsciiCase(s, line, "lower", [](char c, bool) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
}
std::string Upper(const std::string& s, int line) {
  return AsciiCase(s, line, "upper", [](char c, bool) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
}
std::string Title(const std::string& s, int line) {
  return AsciiCase(s, line, "title", [](char c, bool prev_alpha) {
    unsigned char u = static_cast<unsigned char>(c);
    return static_cast<char>(prev_alpha ? std::tolower(u) : std::toupper(u));
  });
}
std::string Capitalize(const std::string& s, int line) {
  std::string out = Lower(s, line);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::u32string CharsArg(const Value& v, int line) {
  if (v.undefined() || v.none()) return U"";
  if (!v.is_string()) Fail(line, "strip() argument must be a string or None");
  return Decode(v.s);
}

Array Split(const std::string& s, const Value& sep, int64_t maxsplit, bool right, int line) {
  Charge(static_cast<int64_t>(s.size()));
  Array out;
  if (sep.undefined() || sep.none()) {
    std::u32string u = Decode(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t k = 0;
    while (k < u.size()) {
      while (k < u.size() && IsSpace(u[k])) ++k;
      if (k >= u.size()) break;
      size_t e = k;
      while (e < u.size() && !IsSpace(u[e])) ++e;
      words.emplace_back(k, e);
      k = e;
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
      if (!right) {
        words[maxsplit].second = u.size();
        size_t e = u.size();
        while (e > words[maxsplit].first && IsSpace(u[e - 1])) --e;
        words[maxsplit].second = e;
        words.resize(maxsplit + 1);
      } else {
        size_t first = words.size() - maxsplit - 1;
        size_t b = 0;
        while (b < u.size() && IsSpace(u[b])) ++b;
        words[first].first = b;
        words.erase(words.begin(), words.begin() + first);
      }
    }
    for (auto [a, b] : words) out.push_back(Value::Str(Encode(std::u32string_view(u).substr(a, b - a))));
    return out;
  }
  if (!sep.is_string()) Fail(line, "split() separator must be a string");
  if (sep.s.empty()) Fail(line, "split(): empty separator");
  std::vector<std::string> parts;
  if (!right) {
    size_t pos = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      size_t f = s.find(sep.s, pos);
      if (f == std::string::npos) break;
      parts.push_back(s.substr(pos, f - pos));
      pos = f + sep.s.size();
      ++n;
    }
    parts.push_back(s.substr(pos));
  } else {
    size_t end = s.size();
    int64_t n = 0;
    std::vector<std::string> rev;
    while (maxsplit < 0 || n < maxsplit) {
      if (end < sep.s.size()) break;
      size_t f = s.rfind(sep.s, end - sep.s.size());
      if (f == std::string::npos) break;
      rev.push_back(s.substr(f + sep.s.size(), end - f - sep.s.size()));
      end = f;
      ++n;
    }
    rev.push_back(s.substr(0, end));
    parts.assign(rev.rbegin(), rev.rend());
  }
  for (auto& p : parts) out.push_back(Value::Str(std::move(p)));
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  Charge(static_cast<int64_t>(s.size()));
  std::string out;
  if (from.empty()) {
    std::u32string u = Decode(s);
    int64_t n = 0;
    for (size_t k = 0; k <= u.size(); ++k) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (k < u.size()) out += Encode(std::u32string(1, u[k]));
      CheckSize(out.size(), "replace()'s result");
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out += s.substr(pos, f - pos) + to;
    CheckSize(out.size(), "replace()'s result");
    pos = f + from.size();
    ++n;
  }
  return out + s.substr(pos);
}

std::string HtmlEscape(const std::string& s) {
  Charge(static_cast<int64_t>(s.size()));
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}


namespace {

// html.unescape's replacements for the numbers HTML5 reads as Windows-1252
// (0x80-0x9F), and 0x00 and 0x0D.
char32_t InvalidCharref(uint64_t n) {
  static constexpr char32_t k80[32] = {
      0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  if (n == 0x00) return 0xFFFD;
  if (n == 0x0D) return U'\r';
  if (n >= 0x80 && n <= 0x9F) return k80[n - 0x80];
  return 0;
}

// The code points html.unescape drops: controls other than \t \n \f \r,
// DEL and C1, the noncharacters U+FDD0..U+FDEF and U+xFFFE / U+xFFFF.
bool DroppedCodepoint(uint64_t n) {
  return (n >= 0x1 && n <= 0x8) || n == 0xB || (n >= 0xE && n <= 0x1F) || (n >= 0x7F && n <= 0x9F) ||
         (n >= 0xFDD0 && n <= 0xFDEF) || (n <= 0x10FFFF && (n & 0xFFFE) == 0xFFFE);
}

bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiHex(char c) { return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Bytes of the first `n` code points of s (or all of it).
size_t PrefixBytes(std::string_view s, size_t n) {
  size_t i = 0;
  while (i < s.size() && n > 0) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
    --n;
  }
  return i;
}

}  // namespace

std::string HtmlUnescape(const std::string& s) {
  Charge(static_cast<int64_t>(s.size()));
  if (s.find('&') == std::string::npos) return s;
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != '&') {
      out += s[i++];
      continue;
    }
    const size_t start = i + 1;
    if (start < s.size() && s[start] == '#') {
      // &#123; or &#x7b; (the ';' optional), any number of digits.
      const bool hex = start + 1 < s.size() && (s[start + 1] == 'x' || s[start + 1] == 'X');
      size_t d = start + 1 + (hex ? 1 : 0), e = d;
      while (e < s.size() && (hex ? IsAsciiHex(s[e]) : IsAsciiDigit(s[e]))) ++e;
      if (e == d) {  // "&#" or "&#x" without digits: not a reference
        out += s[i++];
        continue;
      }
      // Past U+10FFFF the value no longer matters: saturate.
      uint64_t n = 0;
      for (size_t k = d; k < e; ++k) {
        const char c = s[k];
        const uint64_t digit = IsAsciiDigit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
        n = std::min<uint64_t>(n * (hex ? 16 : 10) + digit, uint64_t{1} << 32);
      }
      if (e < s.size() && s[e] == ';') ++e;
      if (char32_t r = InvalidCharref(n)) AppendUtf8(out, r);
      else if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) AppendUtf8(out, 0xFFFD);
      else if (!DroppedCodepoint(n)) AppendUtf8(out, static_cast<char32_t>(n));
      i = e;
      continue;
    }
    // A name: 1 to 32 code points that are not \t \n \f space < & # ;, then
    // an optional ';'.
    size_t e = start, count = 0;
    while (e < s.size() && count < 32) {
      const char c = s[e];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
      e += PrefixBytes(std::string_view(s).substr(e), 1);
      ++count;
    }
    if (count == 0) {
      out += s[i++];
      continue;
    }
    if (e < s.size() && s[e] == ';') ++e;
    const std::string_view name(s.data() + start, e - start);
    if (const char* v = FindHtmlEntity(name)) {
      out += v;
      i = e;
      continue;
    }
    // The longest prefix of 2 .. len - 1 code points that is a (legacy) name.
    const size_t n_cp = CodePoints(name);
    bool found = false;
    for (size_t x = n_cp - 1; x >= 2 && x < n_cp; --x) {
      const size_t bytes = PrefixBytes(name, x);
      if (const char* v = FindHtmlEntity(name.substr(0, bytes))) {
        out += v;
        out += name.substr(bytes);
        found = true;
        break;
      }
    }
    if (!found) out += "&" + std::string(name);
    i = e;
  }
  return out;
}

std::string StripTags(const std::string& s) {
  Charge(static_cast<int64_t>(s.size()));
  // <!--.*?--> first, then <.*?>: each from its opener to the first closer
  // after it; an opener without a closer after it ends the search (no later
  // one can have a closer either).
  auto strip = [](const std::string& in, std::string_view open, std::string_view close) {
    std::string out;
    size_t pos = 0;
    while (true) {
      const size_t a = in.find(open, pos);
      const size_t b = a == std::string::npos ? a : in.find(close, a + open.size());
      if (b == std::string::npos) break;
      out.append(in, pos, a - pos);
      pos = b + close.size();
    }
    out.append(in, pos, std::string::npos);
    return out;
  };
  const std::string text = strip(strip(s, "<!--", "-->"), "<", ">");
  // " ".join(text.split())
  std::string joined;
  for (const Value& w : Split(text, Value::None(), -1, false, 0)) {
    if (!joined.empty()) joined += ' ';
    joined += w.s;
  }
  return HtmlUnescape(joined);
}

std::string Center(const std::string& s, int64_t width) {
  const int64_t len = static_cast<int64_t>(CodePoints(s));
  if (width <= len) return s;
  const int64_t marg = width - len;
  CheckSize(s.size() + static_cast<uint64_t>(marg), "center()'s result");
  Charge(marg);
  // CPython's pad(): the odd space goes left when the width is odd.
  const int64_t left = marg / 2 + (marg & width & 1);
  return std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(marg - left), ' ');
}

int64_t WordCount(const std::string& s) {
  Charge(static_cast<int64_t>(s.size()));
  // PCRE2's \w with UCP is Python's: letters (L*), numbers (N*) and '_'.
  static pcre2_code* const kWord = [] {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    return pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\w+"), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                         &err_off, nullptr);
  }();
  const std::string text = Encode(Decode(s));  // well-formed, as a Python str is
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(kWord, nullptr);
  int64_t n = 0;
  PCRE2_SIZE pos = 0;
  while (pos < text.size() &&
         pcre2_match(kWord, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr) > 0) {
    ++n;
    pos = pcre2_get_ovector_pointer(md)[1];
  }
  pcre2_match_data_free(md);
  return n;
}

std::string Truncate(const std::string& s, int64_t length, bool killwords, const std::string& end, int64_t leeway) {
  const int64_t len = static_cast<int64_t>(CodePoints(s));
  if (len <= length + leeway) return s;
  std::string head = s.substr(0, PrefixBytes(s, static_cast<size_t>(length - static_cast<int64_t>(CodePoints(end)))));
  // rsplit(" ", 1)[0]: up to the last space, or all of it.
  if (!killwords) {
    const size_t space = head.rfind(' ');
    if (space != std::string::npos) head.resize(space);
  }
  return head + end;
}

}  // namespace strata::jinja
