// UTF-8 classification and the GPT-2 byte-level alphabet (see unicode.h).
#include "model/unicode.h"

#include <array>

namespace strata {
namespace {

// A byte is "printable" in GPT-2's alphabet when it is a visible ASCII or
// Latin-1 character other than the soft hyphen; those keep their own code point.
constexpr bool PrintableByte(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteTables {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // code points 0..323 cover the whole image
};

const ByteTables& Tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.from_cp.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      char32_t cp = PrintableByte(b) ? static_cast<char32_t>(b) : next++;
      t.to_cp[b] = cp;
      t.from_cp[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

void AppendUtf8(std::string& out, char32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

Utf8Seq ClassifyUtf8(const char* s, size_t n) {
  const auto* u = reinterpret_cast<const unsigned char*>(s);
  unsigned char c0 = u[0];
  if (c0 < 0x80) return {Utf8Seq::kValid, 1, c0};
  size_t need;
  char32_t cp;
  // The allowed range of the second byte excludes overlong forms (E0, F0),
  // surrogates (ED) and values above U+10FFFF (F4), per Unicode table 3-7.
  unsigned char lo = 0x80, hi = 0xBF;
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    need = 2; cp = c0 & 0x1F;
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    need = 3; cp = c0 & 0x0F;
    if (c0 == 0xE0) lo = 0xA0;
    if (c0 == 0xED) hi = 0x9F;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    need = 4; cp = c0 & 0x07;
    if (c0 == 0xF0) lo = 0x90;
    if (c0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Seq::kInvalid, 1, 0};  // continuation byte, C0, C1, F5..FF
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) return {Utf8Seq::kIncomplete, i, 0};
    unsigned char c = u[i];
    bool ok = (i == 1) ? (c >= lo && c <= hi) : IsCont(c);
    if (!ok) return {Utf8Seq::kInvalid, i, 0};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {Utf8Seq::kValid, need, cp};
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    Utf8Seq q = ClassifyUtf8(s.data() + i, s.size() - i);
    if (q.kind == Utf8Seq::kValid) {
      out.append(s.data() + i, q.len);
    } else {
      AppendUtf8(out, 0xFFFD);
    }
    i += q.len;
  }
  return out;
}

char32_t ByteToUnicode(uint8_t b) { return Tables().to_cp[b]; }

int UnicodeToByte(char32_t cp) {
  const auto& t = Tables();
  return cp < t.from_cp.size() ? t.from_cp[cp] : -1;
}

}  // namespace strata
