// Python's str operations on UTF-8 strings (a Python str is a sequence of
// code points): decoding, whitespace, strip, ASCII case mapping, split,
// replace, HTML escaping and what the filters center, wordcount, striptags
// and truncate do. Rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "coordinator/jinja/value.h"

namespace strata::jinja {

std::u32string Decode(std::string_view s);  // invalid UTF-8 -> U+FFFD
std::string Encode(std::u32string_view s);
size_t CodePoints(std::string_view s);
// Python's str.isspace().
bool IsSpace(char32_t c);
// str.strip / lstrip / rstrip; `chars` null: whitespace.
std::string Strip(const std::string& s, const std::u32string* chars, bool left, bool right);
bool IsAscii(std::string_view s);
// Case mapping is done for ASCII only: a string with other characters would
// need Unicode's tables, so it is refused rather than mapped wrongly.
std::string Lower(const std::string& s, int line);
std::string Upper(const std::string& s, int line);
std::string Title(const std::string& s, int line);
std::string Capitalize(const std::string& s, int line);
// strip()'s argument: the characters to strip (None: whitespace, empty).
std::u32string CharsArg(const Value& v, int line);
// str.split(sep, maxsplit) (from the right when `right`).
Array Split(const std::string& s, const Value& sep, int64_t maxsplit, bool right, int line);
// str.replace(from, to, count); count < 0: all.
std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
// jinja2's escape (markupsafe): & < > " ' as entities.
std::string HtmlEscape(const std::string& s);

// Python's html.unescape: numeric and HTML5 named character references by
// the standard's rules (invalid numbers, legacy names without ';', the
// longest name that prefixes a longer run).
std::string HtmlUnescape(const std::string& s);
// The value of an HTML5 named reference ("amp;", or a legacy "amp"), or null
// (html_entities.cc).
const char* FindHtmlEntity(std::string_view name);
// markupsafe's Markup.striptags: comments and tags removed, whitespace runs
// made one space, then unescaped.
std::string StripTags(const std::string& s);
// str.center(width) with spaces.
std::string Center(const std::string& s, int64_t width);
// len(re.findall(r"\w+", s)): runs of Unicode letters, digits and '_'.
int64_t WordCount(const std::string& s);
// jinja2's truncate: at most length + leeway code points kept as they are,
// else cut to length - len(end) (at the last space unless killwords) and
// `end` appended. length >= len(end) and leeway >= 0 (checked by the caller).
std::string Truncate(const std::string& s, int64_t length, bool killwords, const std::string& end, int64_t leeway);

}  // namespace strata::jinja
