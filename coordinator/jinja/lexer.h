// The lexer of jinja2 (lexer.py) for the template source: text, {{ }} and
// {% %} tags cut into tokens, comments dropped, and jinja2's whitespace rules
// applied as transformers configures them (trim_blocks, lstrip_blocks, `-`
// and `+` markers). Rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata::jinja {

struct Tok {
  enum Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind = kEnd;
  std::string text;  // name, operator, or the string's value
  int64_t i = 0;
  double f = 0;
  int line = 0;
};

// The template cut into text and tags (whitespace control applied).
struct Item {
  enum Kind { kText, kVar, kBlock } kind;
  std::string text;
  std::vector<Tok> toks;  // the tag's tokens, ending with kEnd
  int line;
};

// Cuts `src` into items (newlines normalized, one trailing newline dropped,
// as jinja2 does). Fails (JinjaError) on an unterminated tag or string, or a
// character no token starts with.
std::vector<Item> Lex(std::string src);

}  // namespace strata::jinja
