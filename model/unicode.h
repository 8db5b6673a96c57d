// UTF-8 helpers and the GPT-2 byte <-> unicode mapping used by byte-level BPE.
//
// Runs on rank 0 (tokenizer, streaming detokenizer, HTTP responses). Nothing
// here trusts its input: invalid UTF-8 is classified, never read past its end.
//
//   Utf8Seq s = ClassifyUtf8(bytes.data() + i, bytes.size() - i);
//   if (s.kind == Utf8Seq::kIncomplete) { /* wait for more bytes */ }
//   std::string clean = SanitizeUtf8(bytes);   // invalid bytes -> U+FFFD
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata {

// Appends the UTF-8 encoding of `cp` (must be <= 0x10FFFF and not a surrogate;
// anything else appends U+FFFD).
void AppendUtf8(std::string& out, char32_t cp);

// What the bytes at the start of a buffer hold.
struct Utf8Seq {
  enum Kind {
    kValid,       // a complete, well-formed sequence of `len` bytes (code point `cp`)
    kIncomplete,  // a well-formed prefix of a sequence that runs past the buffer end
    kInvalid,     // `len` bytes (the maximal ill-formed subpart, >= 1) that form no character
  };
  Kind kind;
  size_t len;
  char32_t cp;
};
// Classifies the sequence starting at s[0] (n >= 1), following the Unicode
// "maximal subpart" rule: overlong forms, surrogates and code points above
// U+10FFFF are invalid at the first byte that proves it.
Utf8Seq ClassifyUtf8(const char* s, size_t n);

// Copy of `s` with every ill-formed subpart (and a truncated trailing
// sequence) replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// GPT-2's reversible map from bytes to printable code points: bytes that are
// printable Latin-1 ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to
// themselves, the other 68 bytes to U+0100.. in byte order (space -> U+0120 'Ġ',
// '\n' -> U+010A 'Ċ').
char32_t ByteToUnicode(uint8_t b);
// Inverse of ByteToUnicode; -1 for a code point that is not in the image.
int UnicodeToByte(char32_t cp);

}  // namespace strata
