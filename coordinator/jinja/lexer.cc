// jinja2's lexer (see lexer.h). Rank 0.
#include "coordinator/jinja/lexer.h"

#include <cctype>
#include <cstring>
#include <string_view>

#include "coordinator/jinja/value.h"
#include "model/unicode.h"

namespace strata::jinja {
namespace {

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python string literal escapes, as jinja2 reads them (unicode-escape).
std::string Unescape(const std::string& raw, int line) {
  std::string out;
  for (size_t k = 0; k < raw.size(); ++k) {
    if (raw[k] != '\\' || k + 1 == raw.size()) {
      out += raw[k];
      continue;
    }
    char c = raw[++k];
    auto hex = [&](int n) {
      if (k + n >= raw.size()) Fail(line, "truncated escape in a string literal");
      uint32_t v = 0;
      for (int d = 0; d < n; ++d) {
        char h = raw[k + 1 + d];
        if (!std::isxdigit(static_cast<unsigned char>(h))) Fail(line, "bad escape in a string literal");
        v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      k += n;
      AppendUtf8(out, v);
    };
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case 'a': out += '\a'; break;
      case '0': out += '\0'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case '\n': break;
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      default: out += '\\'; out += c; break;
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Item> Run() {
    // jinja2 normalizes newlines and drops one trailing newline
    // (keep_trailing_newline=False).
    std::string s;
    for (size_t k = 0; k < src_.size(); ++k) {
      if (src_[k] == '\r') {
        s += '\n';
        if (k + 1 < src_.size() && src_[k + 1] == '\n') ++k;
      } else {
        s += src_[k];
      }
    }
    if (!s.empty() && s.back() == '\n') s.pop_back();
    src_ = std::move(s);

    std::vector<Item> items;
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t start = pos;
      while (true) {
        start = src_.find('{', start);
        if (start == std::string::npos || start + 1 >= src_.size()) {
          start = std::string::npos;
          break;
        }
        char k = src_[start + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++start;
      }
      std::string text = src_.substr(pos, start == std::string::npos ? std::string::npos : start - pos);
      const int text_line = line_;
      line_ += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
      if (start == std::string::npos) {
        if (!text.empty()) items.push_back({Item::kText, text, {}, text_line});
        break;
      }
      const char kind = src_[start + 1];
      size_t inner = start + 2;
      char sign = 0;
      if (inner < src_.size() && (src_[inner] == '-' || src_[inner] == '+')) sign = src_[inner++];
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && IsWs(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool all_ws = l_pos < text.size();
          for (size_t k = l_pos; k < text.size(); ++k) all_ws &= IsWs(text[k]);
          if (all_ws) text.resize(l_pos);
        }
      }
      if (!text.empty()) items.push_back({Item::kText, text, {}, text_line});

      size_t after;
      char end_sign = 0;
      if (kind == '#') {
        size_t end = src_.find("#}", inner);
        if (end == std::string::npos) Fail(line_, "unclosed comment", ErrorKind::kInvalidArgument);
        if (end > inner && (src_[end - 1] == '-' || src_[end - 1] == '+')) end_sign = src_[end - 1];
        line_ += static_cast<int>(std::count(src_.begin() + inner, src_.begin() + end, '\n'));
        after = end + 2;
        pos = TrimAfter(after, end_sign, true);
      } else {
        Item item{kind == '{' ? Item::kVar : Item::kBlock, "", {}, line_};
        size_t p = inner;
        int depth = 0;  // open ( [ {: a closing }} or %} inside them is not the tag's end (as jinja2)
        while (true) {
          while (p < src_.size() && IsWs(src_[p])) {
            if (src_[p] == '\n') ++line_;
            ++p;
          }
          if (p >= src_.size()) Fail(item.line, kind == '{' ? "unclosed '{{'" : "unclosed '{%'");
          const char close = kind == '{' ? '}' : '%';
          if (depth == 0 && (src_[p] == '-' || (src_[p] == '+' && kind == '%')) && src_.compare(p + 1, 2, std::string(1, close) + "}") == 0) {
            end_sign = src_[p];
            p += 3;
            break;
          }
          if (depth == 0 && src_.compare(p, 2, std::string(1, close) + "}") == 0) {
            p += 2;
            break;
          }
          item.toks.push_back(NextToken(p));
          const Tok& t = item.toks.back();
          if (t.kind == Tok::kOp && (t.text == "(" || t.text == "[" || t.text == "{")) ++depth;
          if (t.kind == Tok::kOp && (t.text == ")" || t.text == "]" || t.text == "}") && depth > 0) --depth;
        }
        Tok end;
        end.line = line_;
        item.toks.push_back(end);
        items.push_back(std::move(item));
        pos = TrimAfter(p, end_sign, kind == '%');
      }
      line_starting = pos > 0 && pos > after_tag_ && src_[pos - 1] == '\n';
    }
    return items;
  }

 private:
  // Whitespace after a tag: all of it after `-`, one newline after a block
  // or comment (trim_blocks) unless `+`.
  size_t TrimAfter(size_t p, char sign, bool block) {
    after_tag_ = p;
    if (sign == '-') {
      while (p < src_.size() && IsWs(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
    } else if (sign != '+' && block && p < src_.size() && src_[p] == '\n') {
      ++line_;
      ++p;
    }
    return p;
  }

  Tok NextToken(size_t& p) {
    Tok t;
    t.line = line_;
    const char c = src_[p];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      t.kind = Tok::kName;
      t.text = src_.substr(p, e - p);
      p = e;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = p;
      bool is_float = false;
      auto digits = [&] {
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      };
      digits();
      if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        is_float = true;
        ++e;
        digits();
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t q = e + 1;
        if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
        if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
          is_float = true;
          e = q;
          digits();
        }
      }
      std::string num;
      for (size_t k = p; k < e; ++k)
        if (src_[k] != '_') num += src_[k];
      p = e;
      if (is_float) {
        t.kind = Tok::kFloat;
        t.f = std::strtod(num.c_str(), nullptr);
      } else {
        t.kind = Tok::kInt;
        errno = 0;
        t.i = std::strtoll(num.c_str(), nullptr, 10);
        if (errno == ERANGE) Fail(line_, "integer literal " + num + " is too large", ErrorKind::kUnimplemented);
      }
      return t;
    }
    if (c == '\'' || c == '"') {
      size_t e = p + 1;
      while (e < src_.size() && src_[e] != c) {
        if (src_[e] == '\\') ++e;
        ++e;
      }
      if (e >= src_.size()) Fail(line_, "unterminated string literal");
      std::string raw = src_.substr(p + 1, e - p - 1);
      line_ += static_cast<int>(std::count(raw.begin(), raw.end(), '\n'));
      t.kind = Tok::kString;
      t.text = Unescape(raw, t.line);
      p = e + 1;
      return t;
    }
    static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                 "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"};
    for (const char* op : kOps) {
      size_t n = std::strlen(op);
      if (src_.compare(p, n, op) == 0) {
        t.kind = Tok::kOp;
        t.text = op;
        p += n;
        return t;
      }
    }
    Fail(line_, std::string("unexpected character '") + c + "' in a tag");
  }

  std::string src_;
  int line_ = 1;
  size_t after_tag_ = 0;
};

}  // namespace

std::vector<Item> Lex(std::string src) { return Lexer(std::move(src)).Run(); }

}  // namespace strata::jinja
