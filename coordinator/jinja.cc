// The Jinja2 subset of jinja.h: a lexer that applies jinja2's whitespace
// rules (lexer.py: trim_blocks, lstrip_blocks, `-` and `+`), a recursive
// descent parser with jinja2's operator precedence (parser.py), and a
// tree-walking renderer whose values follow Python's semantics.
//
// Errors inside the engine are thrown as JinjaError (kind, line, message) and
// turned into a Status at the two entry points (Parse, Render): a template is
// a deeply recursive structure and every evaluation step can fail, so an
// exception that carries the line is far clearer than threading Result
// through each of them. Nothing escapes this file as an exception.
#include "coordinator/jinja.h"

#include <algorithm>
#include <cerrno>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "model/unicode.h"

namespace strata::jinja {
namespace {

// ───────────────────────────── errors ─────────────────────────────

struct JinjaError {
  ErrorKind kind;
  int line;
  std::string message;
};

[[noreturn]] void Fail(int line, const std::string& msg, ErrorKind kind = ErrorKind::kInvalidArgument) {
  throw JinjaError{kind, line, msg};
}

// ───────────────────────────── limits ─────────────────────────────
//
// Templates come with model files and conversations with requests: neither
// is trusted. jinja2 is bounded by Python (its recursion limit, the sandbox's
// range() cap); here every resource is bounded explicitly, and running out is
// an error naming the template line, never a crash, a hang or an exhausted
// machine:
//  - nesting while parsing (blocks and expressions inside each other, chains
//    such as a + b + c ...), which bounds the syntax tree the renderer walks;
//  - render depth: statements, expressions and macro calls inside each other
//    (a macro calling itself);
//  - nesting of lists and dicts, the conversation's included: printing,
//    comparing and freeing them recurse;
//  - the size of any one string, the output included;
//  - work: one budget, in units of about a byte, charged per evaluation
//    step and per byte of values created, copied or scanned, which bounds
//    time and memory together ({% for %} over huge ranges, a string doubled
//    in a loop, a large list copied again and again). It grows with the
//    context, so that long conversations render: a real template uses about
//    30 units per byte of conversation.
constexpr int kMaxParseNesting = 200;
constexpr int kMaxRenderDepth = 500;
constexpr int kMaxValueDepth = 200;
constexpr size_t kMaxStringBytes = size_t{32} << 20;
constexpr int64_t kStepCost = 64;                    // per statement or expression evaluated
constexpr int64_t kWorkBudget = int64_t{32} << 20;   // per render, plus:
constexpr int64_t kWorkPerContextByte = 256;         // per byte of the context's values (its strings and nodes)

std::string MiB(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The running render's account (one per Render call, on its thread).
struct Meter {
  int64_t work = 0, budget = kWorkBudget;
  int depth = 0;  // statements and expressions being evaluated
  int line = 0;   // the template line being rendered
};
thread_local Meter* t_meter = nullptr;  // null while parsing: nothing is charged

void Charge(int64_t units) {
  Meter* m = t_meter;
  if (m != nullptr && (m->work += units) > m->budget)
    Fail(m->line, "rendering needs more work than its budget (" + std::to_string(m->budget) +
                      " units: a loop too long, or strings or lists too large?)");
}

// A string about to become a value or the output: at most kMaxStringBytes.
void CheckSize(size_t bytes, const char* what) {
  if (bytes > kMaxStringBytes && t_meter != nullptr)
    Fail(t_meter->line, std::string(what) + " larger than " + MiB(kMaxStringBytes));
}

// ───────────────────────────── values ─────────────────────────────

struct Value;
struct Object;
struct Args;
using Array = std::vector<Value>;
using Function = std::function<Value(Args&)>;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };
  Kind kind = Kind::kUndefined;
  bool b = false;
  bool tuple = false;  // an array that Python would hold as a tuple (repr uses parentheses)
  int depth = 0;       // lists and dicts nested in this one (0: not a container; a namespace counts 1)
  int64_t i = 0;
  double f = 0;
  std::string s;  // the string; for an undefined value, why it is undefined
  std::shared_ptr<Array> arr;
  std::shared_ptr<Object> obj;
  std::shared_ptr<Function> fn;

  // Copies are charged (the string is copied; arrays and objects are shared).
  Value() = default;
  Value(const Value& o) { *this = o; }
  Value& operator=(const Value& o) {
    Charge(static_cast<int64_t>(sizeof(Value) + o.s.size()));
    kind = o.kind;
    b = o.b;
    tuple = o.tuple;
    depth = o.depth;
    i = o.i;
    f = o.f;
    s = o.s;
    arr = o.arr;
    obj = o.obj;
    fn = o.fn;
    return *this;
  }
  Value(Value&&) noexcept = default;
  Value& operator=(Value&&) noexcept = default;

  static Value Undefined(std::string why) {
    Value v;
    v.s = std::move(why);
    return v;
  }
  static Value None() { Value v; v.kind = Kind::kNone; return v; }
  static Value Bool(bool x) { Value v; v.kind = Kind::kBool; v.b = x; return v; }
  static Value Int(int64_t x) { Value v; v.kind = Kind::kInt; v.i = x; return v; }
  static Value Float(double x) { Value v; v.kind = Kind::kFloat; v.f = x; return v; }
  static Value Str(std::string x) {
    CheckSize(x.size(), "a string");
    Charge(static_cast<int64_t>(x.size()));
    Value v;
    v.kind = Kind::kString;
    v.s = std::move(x);
    return v;
  }
  static Value List(Array a, bool tuple = false);
  static Value Dict(std::shared_ptr<Object> o);
  static Value Fn(Function f) { Value v; v.kind = Kind::kCallable; v.fn = std::make_shared<Function>(std::move(f)); return v; }

  bool undefined() const { return kind == Kind::kUndefined; }
  bool none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool numeric() const { return kind == Kind::kBool || kind == Kind::kInt || kind == Kind::kFloat; }
  bool integral() const { return kind == Kind::kBool || kind == Kind::kInt; }
  int64_t AsInt() const { return kind == Kind::kBool ? (b ? 1 : 0) : i; }
  double AsDouble() const { return kind == Kind::kFloat ? f : static_cast<double>(AsInt()); }
};

// A dict (insertion-ordered, as Python's) or a namespace() object.
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;
  // Linear, as dicts here are small; charged, as a conversation's need not be.
  const Value* Find(std::string_view key) const {
    Charge(static_cast<int64_t>(items.size()));
    for (const auto& [k, v] : items)
      if (k == key) return &v;
    return nullptr;
  }
  void Set(const std::string& key, Value v) {
    Charge(static_cast<int64_t>(items.size()));
    for (auto& [k, old] : items)
      if (k == key) {
        old = std::move(v);
        return;
      }
    items.emplace_back(key, std::move(v));
  }
};

// Containers know how deeply they nest: at most kMaxValueDepth. A
// namespace() counts as one level whatever it holds (it is mutable, and
// printing, comparing and tojson do not look inside it); the renderer frees
// namespaces one by one (~Renderer), so none is freed recursively.
int NestedDepth(const Value& v) { return v.depth; }
void CheckDepth(int depth) {
  if (depth > kMaxValueDepth)
    Fail(t_meter ? t_meter->line : 0, "lists and dicts nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
}

Value Value::List(Array a, bool tuple) {
  Charge(static_cast<int64_t>(a.size() * sizeof(Value)));
  int depth = 0;
  for (const Value& x : a) depth = std::max(depth, NestedDepth(x));
  CheckDepth(depth + 1);
  Value v;
  v.kind = Kind::kArray;
  v.arr = std::make_shared<Array>(std::move(a));
  v.tuple = tuple;
  v.depth = depth + 1;
  return v;
}

Value Value::Dict(std::shared_ptr<Object> o) {
  Charge(static_cast<int64_t>(o->items.size() * (sizeof(Value) + 32)));
  int depth = 0;
  if (!o->is_namespace)
    for (const auto& [k, x] : o->items) depth = std::max(depth, NestedDepth(x));
  CheckDepth(depth + 1);
  Value v;
  v.kind = Kind::kObject;
  v.obj = std::move(o);
  v.depth = depth + 1;
  return v;
}

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  int line = 0;
  // The argument called `name` (keyword) or at `index` (positional), or
  // undefined when neither was given.
  Value Get(size_t index, const std::string& name) const {
    for (const auto& [k, v] : kw)
      if (k == name) return v;
    if (index < pos.size()) return pos[index];
    return Value::Undefined("argument '" + name + "' missing");
  }
  void Expect(const std::string& what, size_t max_pos, std::initializer_list<const char*> names) const {
    if (pos.size() > max_pos)
      Fail(line, what + " takes at most " + std::to_string(max_pos) + " positional arguments, got " + std::to_string(pos.size()));
    for (const auto& [k, v] : kw) {
      bool known = false;
      for (const char* n : names) known |= k == n;
      if (!known) Fail(line, what + " got an unexpected keyword argument '" + k + "'");
    }
  }
};

const char* TypeName(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return "undefined";
    case Value::Kind::kNone: return "NoneType";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kArray: return v.tuple ? "tuple" : "list";
    case Value::Kind::kObject: return v.obj->is_namespace ? "Namespace" : "dict";
    case Value::Kind::kCallable: return "function";
  }
  return "?";
}

// ── unicode helpers (Python strings are sequences of code points) ──

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

// Python's str.isspace().
bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// str.strip / lstrip / rstrip; `chars` null: whitespace.
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

// Case mapping is done for ASCII only: a string with other characters would
// need Unicode's tables, so it is refused rather than mapped wrongly.
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

// ── Python's str() and repr() ──

// float.__repr__: the shortest string that reads back to the same double,
// fixed notation for exponents -4..15, else d.ddde+XX.
std::string PyFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[40];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*e", p - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string t = buf;
  std::string sign;
  if (t[0] == '-') {
    sign = "-";
    t = t.substr(1);
  }
  const size_t e_pos = t.find('e');
  const int exp = std::atoi(t.c_str() + e_pos + 1);
  std::string digits;
  for (size_t k = 0; k < e_pos; ++k)
    if (t[k] != '.') digits += t[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      std::string int_part = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      while (int_part.size() < static_cast<size_t>(exp + 1)) int_part += '0';
      std::string frac = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      out = int_part + "." + frac;
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += e;
  }
  return sign + out;
}

std::string Repr(const Value& v);

std::string PyStrRepr(const std::string& s) {
  Charge(static_cast<int64_t>(s.size()));
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == q) { out += '\\'; out += static_cast<char>(c); }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else out += static_cast<char>(c);
  }
  return out + q;
}

std::string Str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return "";
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return v.b ? "True" : "False";
    case Value::Kind::kInt: return std::to_string(v.i);
    case Value::Kind::kFloat: return PyFloat(v.f);
    case Value::Kind::kString: return v.s;
    default: return Repr(v);
  }
}

std::string Repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString: return PyStrRepr(v.s);
    case Value::Kind::kArray: {
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.arr->size(); ++k) {
        out += (k ? ", " : "") + Repr((*v.arr)[k]);
        CheckSize(out.size(), "a printed list");
      }
      Charge(static_cast<int64_t>(out.size()));
      if (v.tuple && v.arr->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Value::Kind::kObject: {
      if (v.obj->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.obj->items) {
        out += (first ? "" : ", ") + PyStrRepr(k) + ": " + Repr(x);
        CheckSize(out.size(), "a printed dict");
        first = false;
      }
      Charge(static_cast<int64_t>(out.size()));
      return out + "}";
    }
    case Value::Kind::kCallable: return "<function>";
    default: return Str(v);
  }
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return false;
    case Value::Kind::kBool: return v.b;
    case Value::Kind::kInt: return v.i != 0;
    case Value::Kind::kFloat: return v.f != 0;
    case Value::Kind::kString: return !v.s.empty();
    case Value::Kind::kArray: return !v.arr->empty();
    case Value::Kind::kObject: return v.obj->is_namespace || !v.obj->items.empty();
    case Value::Kind::kCallable: return true;
  }
  return false;
}

bool Equal(const Value& a, const Value& b) {
  Charge(1 + static_cast<int64_t>(std::min(a.s.size(), b.s.size())));
  if (a.numeric() && b.numeric()) {
    if (a.integral() && b.integral()) return a.AsInt() == b.AsInt();
    return a.AsDouble() == b.AsDouble();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.s == b.s;
    case Value::Kind::kArray:
      if (a.tuple != b.tuple || a.arr->size() != b.arr->size()) return false;
      for (size_t k = 0; k < a.arr->size(); ++k)
        if (!Equal((*a.arr)[k], (*b.arr)[k])) return false;
      return true;
    case Value::Kind::kObject:
      if (a.obj == b.obj) return true;
      if (a.obj->is_namespace || b.obj->is_namespace || a.obj->items.size() != b.obj->items.size()) return false;
      for (const auto& [k, x] : a.obj->items) {
        const Value* y = b.obj->Find(k);
        if (!y || !Equal(x, *y)) return false;
      }
      return true;
    case Value::Kind::kCallable: return a.fn == b.fn;
    default: return false;
  }
}

[[noreturn]] void FailUndefined(const Value& v, int line) {
  Fail(line, v.s.empty() ? "undefined value" : v.s);
}

// a < b as Python orders numbers, strings (by code point: UTF-8 byte order
// is the same) and lists.
int Compare(const Value& a, const Value& b, int line) {
  Charge(1 + static_cast<int64_t>(std::min(a.s.size(), b.s.size())));
  if (a.undefined()) FailUndefined(a, line);
  if (b.undefined()) FailUndefined(b, line);
  if (a.numeric() && b.numeric()) {
    if (a.integral() && b.integral()) return a.AsInt() < b.AsInt() ? -1 : a.AsInt() > b.AsInt() ? 1 : 0;
    return a.AsDouble() < b.AsDouble() ? -1 : a.AsDouble() > b.AsDouble() ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  if (a.kind == Value::Kind::kArray && b.kind == Value::Kind::kArray) {
    for (size_t k = 0; k < a.arr->size() && k < b.arr->size(); ++k)
      if (!Equal((*a.arr)[k], (*b.arr)[k])) return Compare((*a.arr)[k], (*b.arr)[k], line);
    return a.arr->size() < b.arr->size() ? -1 : a.arr->size() > b.arr->size() ? 1 : 0;
  }
  Fail(line, std::string("cannot compare ") + TypeName(a) + " with " + TypeName(b));
}

// The items a for loop (or list()) sees.
Array Iterate(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return {};
    case Value::Kind::kArray: return *v.arr;
    case Value::Kind::kObject: {
      if (v.obj->is_namespace) break;
      Array keys;
      for (const auto& [k, x] : v.obj->items) keys.push_back(Value::Str(k));
      return keys;
    }
    case Value::Kind::kString: {
      Array chars;
      for (char32_t c : Decode(v.s)) chars.push_back(Value::Str(Encode(std::u32string(1, c))));
      return chars;
    }
    default: break;
  }
  Fail(line, std::string("'") + TypeName(v) + "' object is not iterable");
}

int64_t Length(const Value& v, int line) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kString: return static_cast<int64_t>(CodePoints(v.s));
    case Value::Kind::kArray: return static_cast<int64_t>(v.arr->size());
    case Value::Kind::kObject:
      if (!v.obj->is_namespace) return static_cast<int64_t>(v.obj->items.size());
      break;
    default: break;
  }
  Fail(line, std::string("object of type '") + TypeName(v) + "' has no len()");
}

// ── json.dumps (transformers' tojson filter) ──

struct JsonStyle {
  bool ensure_ascii = false;
  bool indent = false;
  std::string indent_str;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};

void JsonString(const std::string& s, bool ensure_ascii, std::string& out) {
  Charge(static_cast<int64_t>(s.size()));
  out += '"';
  auto u16 = [&](unsigned v) {
    char b[16];
    std::snprintf(b, sizeof b, "\\u%04x", v);
    out += b;
  };
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\b') out += "\\b";
    else if (c == '\f') out += "\\f";
    else if (c < 0x20) u16(c);
    else if (c >= 0x80 && ensure_ascii) {
      Utf8Seq q = ClassifyUtf8(s.data() + i, s.size() - i);
      char32_t cp = q.kind == Utf8Seq::kValid ? q.cp : 0xFFFD;
      size_t len = q.kind == Utf8Seq::kIncomplete ? s.size() - i : q.len;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        u16(0xD800 + (cp >> 10));
        u16(0xDC00 + (cp & 0x3FF));
      } else {
        u16(cp);
      }
      i += len;
      continue;
    } else out += static_cast<char>(c);
    ++i;
  }
  out += '"';
}

void DumpJson(const Value& v, const JsonStyle& st, int depth, std::string& out, int line) {
  Charge(1 + static_cast<int64_t>(st.indent_str.size()) * depth);
  CheckSize(out.size(), "tojson's output");
  auto newline = [&](int d) {
    out += '\n';
    for (int k = 0; k < d; ++k) out += st.indent_str;
  };
  switch (v.kind) {
    case Value::Kind::kNone: out += "null"; return;
    case Value::Kind::kBool: out += v.b ? "true" : "false"; return;
    case Value::Kind::kInt: out += std::to_string(v.i); return;
    case Value::Kind::kFloat:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f < 0 ? "-Infinity" : "Infinity";
      else out += PyFloat(v.f);
      return;
    case Value::Kind::kString: JsonString(v.s, st.ensure_ascii, out); return;
    case Value::Kind::kArray: {
      if (v.arr->empty()) { out += "[]"; return; }
      out += '[';
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += st.item_sep;
        if (st.indent) newline(depth + 1);
        DumpJson((*v.arr)[k], st, depth + 1, out, line);
      }
      if (st.indent) newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kObject: {
      if (v.obj->is_namespace) break;
      if (v.obj->items.empty()) { out += "{}"; return; }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.obj->items) items.push_back(&kv);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += st.item_sep;
        if (st.indent) newline(depth + 1);
        JsonString(items[k]->first, st.ensure_ascii, out);
        out += st.key_sep;
        DumpJson(items[k]->second, st, depth + 1, out, line);
      }
      if (st.indent) newline(depth);
      out += '}';
      return;
    }
    default: break;
  }
  Fail(line, std::string("Object of type ") + TypeName(v) + " is not JSON serializable");
}

// The context's values (the conversation): nested at most kMaxValueDepth.
Value FromJson(const nlohmann::ordered_json& j, int depth = 0) {
  if (depth >= kMaxValueDepth)
    Fail(0, "the context (the conversation) nests lists and dicts deeper than " + std::to_string(kMaxValueDepth) + " levels");
  if (t_meter != nullptr) t_meter->budget += kWorkPerContextByte * static_cast<int64_t>(sizeof(Value));
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::None();
    case nlohmann::ordered_json::value_t::boolean: return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? Value::Float(static_cast<double>(u))
                                                                           : Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string: {
      const std::string& x = j.get_ref<const std::string&>();
      if (t_meter != nullptr) t_meter->budget += kWorkPerContextByte * static_cast<int64_t>(x.size());
      return Value::Str(x);
    }
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      for (const auto& x : j) a.push_back(FromJson(x, depth + 1));
      return Value::List(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto o = std::make_shared<Object>();
      for (auto it = j.begin(); it != j.end(); ++it) o->items.emplace_back(it.key(), FromJson(it.value(), depth + 1));
      return Value::Dict(std::move(o));
    }
    default: return Value::None();
  }
}

// ───────────────────────────── lexer ─────────────────────────────

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

// ───────────────────────────── syntax tree ─────────────────────────────

struct Expr;
using ExprP = std::shared_ptr<const Expr>;

struct Expr {
  enum Kind {
    kLiteral, kName, kList, kTuple, kDict, kAttr, kItem, kSlice, kCall, kFilter, kTest,
    kNot, kNeg, kPos, kBinary, kAnd, kOr, kCompare, kCond
  } kind;
  int line = 0;
  Value literal;
  std::string name;          // variable, attribute, filter, test or operator
  std::vector<ExprP> items;  // operands / list items / dict keys and values / call arguments
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;  // comparison chain operators
  bool negated = false;          // `is not`
  int depth = 1;                 // levels of this tree (at most kMaxParseNesting)
};

}  // namespace

struct TemplateNode {
  enum Kind { kBody, kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue } kind = kBody;
  int line = 0;
  std::string text;
  ExprP expr, filter;
  std::vector<std::string> targets;  // for / set names; set: ["ns", "attr"] with attr_target
  bool attr_target = false;
  std::vector<std::pair<ExprP, std::shared_ptr<TemplateNode>>> branches;  // if / elif
  std::shared_ptr<TemplateNode> body, else_body;
  std::vector<std::shared_ptr<TemplateNode>> children;  // kBody
  std::vector<std::string> params;  // macro
  std::vector<ExprP> defaults;      // macro (null where none)
};

namespace {

using NodeP = std::shared_ptr<TemplateNode>;

const std::unordered_set<std::string>& KnownFilters() {
  static const std::unordered_set<std::string> k = {
      "length", "count", "trim", "tojson", "string", "int", "float", "lower", "upper", "title", "capitalize",
      "default", "d", "join", "first", "last", "list", "items", "dictsort", "sort", "reverse", "unique", "map",
      "select", "reject", "selectattr", "rejectattr", "replace", "safe", "escape", "e", "forceescape", "indent",
      "abs", "round", "sum", "min", "max", "wordcount", "attr", "batch", "center", "truncate", "striptags"};
  return k;
}
const std::unordered_set<std::string>& KnownTests() {
  static const std::unordered_set<std::string> k = {
      "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string",
      "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne",
      "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "lower", "upper",
      "sameas", "escaped"};
  return k;
}

class Parser {
 public:
  explicit Parser(std::vector<Item> items) : items_(std::move(items)) {}

  // Counts the recursion of the parser; at most kMaxParseNesting.
  class Nest {
   public:
    Nest(Parser& p, int line) : p_(p) {
      if (++p_.nesting_ > kMaxParseNesting)
        Fail(line, "blocks or expressions nested deeper than " + std::to_string(kMaxParseNesting) + " levels");
    }
    ~Nest() { --p_.nesting_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser& p_;
  };

  NodeP ParseTemplate() {
    std::string end;
    NodeP body = ParseBody({}, &end);
    return body;
  }

 private:
  // ── statements ──

  // Parses until a block tag named in `ends` (consumed; its name in *end_tag).
  NodeP ParseBody(const std::vector<std::string>& ends, std::string* end_tag) {
    Nest nest(*this, idx_ < items_.size() ? items_[idx_].line : 0);
    auto body = std::make_shared<TemplateNode>();
    body->kind = TemplateNode::kBody;
    while (idx_ < items_.size()) {
      Item& it = items_[idx_];
      body->line = it.line;
      if (it.kind == Item::kText) {
        auto n = std::make_shared<TemplateNode>();
        n->kind = TemplateNode::kText;
        n->line = it.line;
        n->text = it.text;
        body->children.push_back(n);
        ++idx_;
        continue;
      }
      toks_ = &it.toks;
      tpos_ = 0;
      if (it.kind == Item::kVar) {
        auto n = std::make_shared<TemplateNode>();
        n->kind = TemplateNode::kOutput;
        n->line = it.line;
        n->expr = ParseTuple(true);
        ExpectEnd();
        body->children.push_back(n);
        ++idx_;
        continue;
      }
      const Tok& first = Peek();
      if (first.kind != Tok::kName) Fail(it.line, "expected a tag name after '{%'");
      const std::string tag = first.text;
      if (std::find(ends.begin(), ends.end(), tag) != ends.end()) {
        *end_tag = tag;
        return body;  // the caller consumes the end tag
      }
      ++tpos_;
      body->children.push_back(ParseStatement(tag, it.line));
    }
    if (!ends.empty())
      Fail(items_.empty() ? 1 : items_.back().line, "unexpected end of template: expected '{% " + ends.back() + " %}'");
    return body;
  }

  // At an end tag found by ParseBody: checks nothing follows its name.
  void ConsumeEndTag() {
    ExpectEnd();
    ++idx_;
  }

  NodeP ParseStatement(const std::string& tag, int line) {
    auto n = std::make_shared<TemplateNode>();
    n->line = line;
    std::string end;
    if (tag == "if") {
      n->kind = TemplateNode::kIf;
      ExprP cond = ParseTuple(true);
      ExpectEnd();
      ++idx_;
      while (true) {
        NodeP body = ParseBody({"elif", "else", "endif"}, &end);
        n->branches.emplace_back(cond, body);
        ++tpos_;
        if (end == "elif") {
          cond = ParseTuple(true);
          ExpectEnd();
          ++idx_;
          continue;
        }
        if (end == "else") {
          ConsumeEndTag();
          n->else_body = ParseBody({"endif"}, &end);
          ++tpos_;
        }
        ConsumeEndTag();
        return n;
      }
    }
    if (tag == "for") {
      n->kind = TemplateNode::kFor;
      n->targets = ParseTargets(line);
      if (!IsName("in")) Fail(line, "expected 'in' in a for tag");
      ++tpos_;
      n->expr = ParseTuple(false);
      if (IsName("if")) {
        ++tpos_;
        n->filter = ParseExpr(true);
      }
      if (IsName("recursive")) Fail(line, "recursive for loops are not supported", ErrorKind::kUnimplemented);
      ExpectEnd();
      ++idx_;
      n->body = ParseBody({"else", "endfor"}, &end);
      ++tpos_;
      if (end == "else") {
        ConsumeEndTag();
        n->else_body = ParseBody({"endfor"}, &end);
        ++tpos_;
      }
      ConsumeEndTag();
      return n;
    }
    if (tag == "set") {
      n->targets = ParseTargets(line);
      if (n->targets.size() == 1 && IsOp(".")) {
        ++tpos_;
        if (Peek().kind != Tok::kName) Fail(line, "expected an attribute name after '.' in a set tag");
        n->targets.push_back(Peek().text);
        n->attr_target = true;
        ++tpos_;
      }
      if (IsOp("=")) {
        ++tpos_;
        n->kind = TemplateNode::kSet;
        n->expr = ParseTuple(true);
        ExpectEnd();
        ++idx_;
        return n;
      }
      if (n->attr_target || n->targets.size() != 1) Fail(line, "expected '=' in a set tag");
      if (IsOp("|")) Fail(line, "filtered set blocks are not supported", ErrorKind::kUnimplemented);
      n->kind = TemplateNode::kSetBlock;
      ExpectEnd();
      ++idx_;
      n->body = ParseBody({"endset"}, &end);
      ++tpos_;
      ConsumeEndTag();
      return n;
    }
    if (tag == "macro") {
      n->kind = TemplateNode::kMacro;
      if (Peek().kind != Tok::kName) Fail(line, "expected a macro name");
      n->text = Peek().text;
      ++tpos_;
      ExpectOp("(", line);
      while (!IsOp(")")) {
        if (Peek().kind != Tok::kName) Fail(line, "expected a parameter name in macro '" + n->text + "'");
        n->params.push_back(Peek().text);
        ++tpos_;
        if (IsOp("=")) {
          ++tpos_;
          n->defaults.push_back(ParseExpr(true));
        } else {
          n->defaults.push_back(nullptr);
        }
        if (!IsOp(",")) break;
        ++tpos_;
      }
      ExpectOp(")", line);
      ExpectEnd();
      ++idx_;
      n->body = ParseBody({"endmacro"}, &end);
      ++tpos_;
      if (Peek().kind == Tok::kName) ++tpos_;  // {% endmacro name %}
      ConsumeEndTag();
      return n;
    }
    if (tag == "break" || tag == "continue") {
      n->kind = tag == "break" ? TemplateNode::kBreak : TemplateNode::kContinue;
      ExpectEnd();
      ++idx_;
      return n;
    }
    if (tag == "generation") {  // transformers' AssistantTracker: renders its body
      ExpectEnd();
      ++idx_;
      NodeP body = ParseBody({"endgeneration"}, &end);
      ++tpos_;
      ConsumeEndTag();
      return body;
    }
    static const std::unordered_set<std::string> kKnownUnsupported = {
        "call", "filter", "include", "import", "from", "extends", "block", "raw", "with", "autoescape", "do", "trans"};
    if (kKnownUnsupported.count(tag))
      Fail(line, "the '{% " + tag + " %}' tag is not supported by strata's template renderer", ErrorKind::kUnimplemented);
    Fail(line, "unknown tag '" + tag + "'");
  }

  std::vector<std::string> ParseTargets(int line) {
    std::vector<std::string> names;
    bool paren = IsOp("(");
    if (paren) ++tpos_;
    while (true) {
      if (Peek().kind != Tok::kName) Fail(line, "expected a variable name");
      names.push_back(Peek().text);
      ++tpos_;
      if (!IsOp(",")) break;
      ++tpos_;
    }
    if (paren) ExpectOp(")", line);
    return names;
  }

  // ── expressions ──

  const Tok& Peek(size_t ahead = 0) const {
    size_t k = std::min(tpos_ + ahead, toks_->size() - 1);
    return (*toks_)[k];
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    const Tok& t = Peek(ahead);
    return t.kind == Tok::kOp && t.text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    const Tok& t = Peek(ahead);
    return t.kind == Tok::kName && t.text == name;
  }
  void ExpectOp(const char* op, int line) {
    if (!IsOp(op)) Fail(Peek().line ? Peek().line : line, std::string("expected '") + op + "', got " + Describe(Peek()));
    ++tpos_;
  }
  void ExpectEnd() {
    if (Peek().kind != Tok::kEnd) Fail(Peek().line, "unexpected " + Describe(Peek()) + " in a tag");
  }
  static std::string Describe(const Tok& t) {
    switch (t.kind) {
      case Tok::kEnd: return "end of tag";
      case Tok::kString: return "string '" + t.text + "'";
      case Tok::kInt: return "integer " + std::to_string(t.i);
      case Tok::kFloat: return "number";
      default: return "'" + t.text + "'";
    }
  }
  ExprP Make(Expr::Kind kind, int line, std::vector<ExprP> items = {}, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->kind = kind;
    e->line = line;
    e->items = std::move(items);
    e->name = std::move(name);
    return Done(std::move(e));
  }
  // A finished node: its depth, at most kMaxParseNesting (chains such as
  // a ~ b ~ c ... grow the tree without recursing in the parser).
  ExprP Done(std::shared_ptr<Expr> e) {
    int depth = 0;
    for (const ExprP& x : e->items)
      if (x) depth = std::max(depth, x->depth);
    for (const auto& [k, x] : e->kwargs) depth = std::max(depth, x->depth);
    e->depth = depth + 1;
    if (e->depth > kMaxParseNesting)
      Fail(e->line, "an expression nested deeper than " + std::to_string(kMaxParseNesting) + " levels");
    return e;
  }

  // A tuple when commas separate expressions (`a, b`), else one expression.
  ExprP ParseTuple(bool with_condexpr) {
    const int line = Peek().line;
    std::vector<ExprP> items;
    bool comma = false;
    while (true) {
      items.push_back(ParseExpr(with_condexpr));
      if (!IsOp(",")) break;
      comma = true;
      ++tpos_;
      if (Peek().kind == Tok::kEnd || IsOp(")") || (!with_condexpr && IsName("if"))) break;
    }
    if (!comma) return items[0];
    return Make(Expr::kTuple, line, std::move(items));
  }

  ExprP ParseExpr(bool with_condexpr) {
    Nest nest(*this, Peek().line);
    ExprP e = ParseOr();
    if (!with_condexpr) return e;
    while (IsName("if")) {
      const int line = Peek().line;
      ++tpos_;
      ExprP cond = ParseOr();
      ExprP other;
      if (IsName("else")) {
        ++tpos_;
        other = ParseExpr(true);
      }
      e = Make(Expr::kCond, line, {cond, e, other});
    }
    return e;
  }
  ExprP ParseOr() {
    ExprP e = ParseAnd();
    while (IsName("or")) {
      const int line = Peek().line;
      ++tpos_;
      e = Make(Expr::kOr, line, {e, ParseAnd()});
    }
    return e;
  }
  ExprP ParseAnd() {
    ExprP e = ParseNot();
    while (IsName("and")) {
      const int line = Peek().line;
      ++tpos_;
      e = Make(Expr::kAnd, line, {e, ParseNot()});
    }
    return e;
  }
  ExprP ParseNot() {
    if (IsName("not")) {
      const int line = Peek().line;
      Nest nest(*this, line);
      ++tpos_;
      return Make(Expr::kNot, line, {ParseNot()});
    }
    return ParseCompare();
  }
  ExprP ParseCompare() {
    const int line = Peek().line;
    ExprP first = ParseMath1();
    std::vector<ExprP> items{first};
    std::vector<std::string> ops;
    while (true) {
      const Tok& t = Peek();
      if (t.kind == Tok::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" ||
                                 t.text == ">=")) {
        ops.push_back(t.text);
        ++tpos_;
      } else if (IsName("in")) {
        ops.push_back("in");
        ++tpos_;
      } else if (IsName("not") && IsName("in", 1)) {
        ops.push_back("not in");
        tpos_ += 2;
      } else {
        break;
      }
      items.push_back(ParseMath1());
    }
    if (ops.empty()) return first;
    auto e = std::make_shared<Expr>();
    e->kind = Expr::kCompare;
    e->line = line;
    e->items = std::move(items);
    e->ops = std::move(ops);
    return Done(std::move(e));
  }
  ExprP ParseMath1() {
    ExprP e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Tok t = Peek();
      ++tpos_;
      e = Make(Expr::kBinary, t.line, {e, ParseConcat()}, t.text);
    }
    return e;
  }
  ExprP ParseConcat() {
    ExprP e = ParseMath2();
    while (IsOp("~")) {
      const int line = Peek().line;
      ++tpos_;
      e = Make(Expr::kBinary, line, {e, ParseMath2()}, "~");
    }
    return e;
  }
  ExprP ParseMath2() {
    ExprP e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Tok t = Peek();
      ++tpos_;
      e = Make(Expr::kBinary, t.line, {e, ParsePow()}, t.text);
    }
    return e;
  }
  ExprP ParsePow() {
    ExprP e = ParseUnary(true);
    while (IsOp("**")) {
      const int line = Peek().line;
      ++tpos_;
      e = Make(Expr::kBinary, line, {e, ParseUnary(true)}, "**");
    }
    return e;
  }
  ExprP ParseUnary(bool with_filter) {
    const int line = Peek().line;
    ExprP e;
    if (IsOp("-")) {
      Nest nest(*this, line);
      ++tpos_;
      e = Make(Expr::kNeg, line, {ParseUnary(false)});
    } else if (IsOp("+")) {
      Nest nest(*this, line);
      ++tpos_;
      e = Make(Expr::kPos, line, {ParseUnary(false)});
    } else {
      e = ParsePrimary();
    }
    e = ParsePostfix(e);
    if (with_filter) e = ParseFilterExpr(e);
    return e;
  }
  ExprP ParsePrimary() {
    const Tok t = Peek();
    auto lit = [&](Value v) {
      auto e = std::make_shared<Expr>();
      e->kind = Expr::kLiteral;
      e->line = t.line;
      e->literal = std::move(v);
      return e;
    };
    switch (t.kind) {
      case Tok::kName: {
        ++tpos_;
        if (t.text == "true" || t.text == "True") return lit(Value::Bool(true));
        if (t.text == "false" || t.text == "False") return lit(Value::Bool(false));
        if (t.text == "none" || t.text == "None") return lit(Value::None());
        return Make(Expr::kName, t.line, {}, t.text);
      }
      case Tok::kString: {
        std::string s;
        while (Peek().kind == Tok::kString) s += Peek().text, ++tpos_;  // adjacent literals concatenate
        return lit(Value::Str(s));
      }
      case Tok::kInt: ++tpos_; return lit(Value::Int(t.i));
      case Tok::kFloat: ++tpos_; return lit(Value::Float(t.f));
      case Tok::kOp:
        if (t.text == "(") {
          ++tpos_;
          if (IsOp(")")) {
            ++tpos_;
            return Make(Expr::kTuple, t.line);
          }
          ExprP e = ParseTuple(true);
          ExpectOp(")", t.line);
          return e;
        }
        if (t.text == "[") {
          ++tpos_;
          std::vector<ExprP> items;
          while (!IsOp("]")) {
            items.push_back(ParseExpr(true));
            if (!IsOp(",")) break;
            ++tpos_;
          }
          ExpectOp("]", t.line);
          return Make(Expr::kList, t.line, std::move(items));
        }
        if (t.text == "{") {
          ++tpos_;
          std::vector<ExprP> items;
          while (!IsOp("}")) {
            items.push_back(ParseExpr(true));
            ExpectOp(":", t.line);
            items.push_back(ParseExpr(true));
            if (!IsOp(",")) break;
            ++tpos_;
          }
          ExpectOp("}", t.line);
          return Make(Expr::kDict, t.line, std::move(items));
        }
        break;
      default: break;
    }
    Fail(t.line, "unexpected " + Describe(t) + " in an expression");
  }
  ExprP ParsePostfix(ExprP e) {
    while (true) {
      const Tok t = Peek();
      if (IsOp(".")) {
        ++tpos_;
        const Tok a = Peek();
        if (a.kind == Tok::kName) {
          ++tpos_;
          e = Make(Expr::kAttr, t.line, {e}, a.text);
        } else if (a.kind == Tok::kInt) {
          ++tpos_;
          auto idx = std::make_shared<Expr>();
          idx->kind = Expr::kLiteral;
          idx->line = a.line;
          idx->literal = Value::Int(a.i);
          e = Make(Expr::kItem, t.line, {e, idx});
        } else {
          Fail(t.line, "expected an attribute name after '.'");
        }
      } else if (IsOp("[")) {
        ++tpos_;
        e = ParseSubscript(e, t.line);
      } else if (IsOp("(")) {
        e = ParseCall(e, t.line);
      } else {
        return e;
      }
    }
  }
  ExprP ParseSubscript(ExprP target, int line) {
    // [expr] or a slice [a:b:c] (each part optional)
    ExprP parts[3];
    bool slice = false;
    int part = 0;
    while (true) {
      if (IsOp(":")) {
        slice = true;
        if (++part > 2) Fail(line, "too many ':' in a slice");
        ++tpos_;
        continue;
      }
      if (IsOp("]")) break;
      if (parts[part]) Fail(line, "expected ']' or ':' in a subscript");
      parts[part] = ParseExpr(true);
    }
    ExpectOp("]", line);
    if (!slice) {
      if (!parts[0]) Fail(line, "empty subscript");
      return Make(Expr::kItem, line, {target, parts[0]});
    }
    return Make(Expr::kSlice, line, {target, parts[0], parts[1], parts[2]});
  }
  // '(' args ')' after `callee` (kwargs as name=expr).
  void ParseArgs(Expr& e, int line) {
    ExpectOp("(", line);
    while (!IsOp(")")) {
      if (IsOp("*") || IsOp("**")) Fail(line, "*args / **kwargs in calls are not supported", ErrorKind::kUnimplemented);
      if (Peek().kind == Tok::kName && IsOp("=", 1)) {
        std::string name = Peek().text;
        tpos_ += 2;
        e.kwargs.emplace_back(name, ParseExpr(true));
      } else {
        if (!e.kwargs.empty()) Fail(line, "a positional argument follows a keyword argument");
        e.items.push_back(ParseExpr(true));
      }
      if (!IsOp(",")) break;
      ++tpos_;
    }
    ExpectOp(")", line);
  }
  ExprP ParseCall(ExprP callee, int line) {
    auto e = std::make_shared<Expr>();
    e->kind = Expr::kCall;
    e->line = line;
    e->items.push_back(callee);
    ParseArgs(*e, line);
    return Done(std::move(e));
  }
  ExprP ParseFilterExpr(ExprP e) {
    while (true) {
      if (IsOp("|")) {
        const int line = Peek().line;
        ++tpos_;
        if (Peek().kind != Tok::kName) Fail(line, "expected a filter name after '|'");
        auto f = std::make_shared<Expr>();
        f->kind = Expr::kFilter;
        f->line = line;
        f->name = Peek().text;
        ++tpos_;
        if (!KnownFilters().count(f->name)) Fail(line, "unknown filter '" + f->name + "'", ErrorKind::kUnimplemented);
        f->items.push_back(e);
        if (IsOp("(")) ParseArgs(*f, line);
        e = Done(std::move(f));
      } else if (IsName("is")) {
        const int line = Peek().line;
        ++tpos_;
        auto t = std::make_shared<Expr>();
        t->kind = Expr::kTest;
        t->line = line;
        if (IsName("not")) {
          t->negated = true;
          ++tpos_;
        }
        const Tok n = Peek();
        if (n.kind == Tok::kName || (n.kind == Tok::kOp && (n.text == "==" || n.text == "!=" || n.text == "<" ||
                                                            n.text == ">" || n.text == "<=" || n.text == ">="))) {
          t->name = n.text;
          ++tpos_;
        } else {
          Fail(line, "expected a test name after 'is'");
        }
        if (!KnownTests().count(t->name)) Fail(line, "unknown test '" + t->name + "'", ErrorKind::kUnimplemented);
        t->items.push_back(e);
        const Tok a = Peek();
        if (IsOp("(")) {
          ParseArgs(*t, line);
        } else if ((a.kind == Tok::kName || a.kind == Tok::kString || a.kind == Tok::kInt || a.kind == Tok::kFloat ||
                    IsOp("[") || IsOp("{")) &&
                   !(IsName("else") || IsName("or") || IsName("and"))) {
          if (IsName("is")) Fail(line, "tests cannot be chained with 'is'");
          t->items.push_back(ParsePostfix(ParsePrimary()));
        }
        e = Done(std::move(t));
      } else if (IsOp("(")) {
        e = ParseCall(e, Peek().line);
      } else {
        return e;
      }
    }
  }

  std::vector<Item> items_;
  size_t idx_ = 0;
  int nesting_ = 0;
  const std::vector<Tok>* toks_ = nullptr;
  size_t tpos_ = 0;
};

// ───────────────────────────── renderer ─────────────────────────────

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* Find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopeP = std::shared_ptr<Scope>;

enum class Flow { kNormal, kBreak, kContinue };

// Python slicing of n elements: the indices a[start:stop:step] selects.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start, const Value& stop, const Value& step, int line) {
  auto get = [&](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.undefined() || v.none()) return std::nullopt;
    if (!v.integral()) Fail(line, std::string("slice ") + what + " must be an integer");
    return v.AsInt();
  };
  const int64_t st = get(step, "step").value_or(1);
  if (st == 0) Fail(line, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t a = clamp(get(start, "start"), st > 0 ? 0 : n - 1);
  const int64_t b = clamp(get(stop, "stop"), st > 0 ? n : -1);
  std::vector<int64_t> out;
  // a and b lie in [-1, n]: stepping past them cannot overflow unless the
  // step is near the int64 limits, where one step ends the loop anyway.
  for (int64_t k = a; st > 0 ? k < b : k > b;) {
    out.push_back(k);
    if (__builtin_add_overflow(k, st, &k)) break;
  }
  return out;
}

std::u32string CharsArg(const Value& v, int line) {
  if (v.undefined() || v.none()) return U"";
  if (!v.is_string()) Fail(line, "strip() argument must be a string or None");
  return Decode(v.s);
}

// str.split(sep, maxsplit) (from the right when `right`).
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

// Int arithmetic as Python's, within int64: beyond it (Python would grow the
// integer) an Unimplemented error rather than a wrapped value.
void CheckOverflow(bool overflow, const std::string& op, int line) {
  if (overflow) Fail(line, "integer overflow in '" + op + "' (strata's integers are 64-bit)", ErrorKind::kUnimplemented);
}

// A float as an int (Python's int(x)): finite and within int64.
int64_t FloatToInt(double d, int line) {
  if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
    Fail(line, "cannot convert " + PyFloat(d) + " to a 64-bit integer", ErrorKind::kUnimplemented);
  return static_cast<int64_t>(d);
}

class Renderer {
 public:
  // Rendering charges `meter` (the caller makes it the thread's t_meter).
  Renderer(const nlohmann::ordered_json& context, Meter& meter) : meter_(meter) {
    globals_ = std::make_shared<Scope>();
    InstallGlobals();
    root_ = std::make_shared<Scope>();
    root_->parent = globals_;
    if (context.is_object())
      for (auto it = context.begin(); it != context.end(); ++it) root_->vars[it.key()] = FromJson(it.value());
  }

  // Breaks the reference cycles (a namespace holding itself, a macro held by
  // the scope it captured). Namespaces are emptied in the order they were
  // made and each is still held here while emptied, so freeing one never
  // frees a chain of them recursively.
  ~Renderer() {
    for (const auto& ns : namespaces_) ns->items.clear();
    for (const ScopeP& s : macro_scopes_) s->vars.clear();
  }
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  std::string Run(const TemplateNode& body) {
    std::string out;
    Flow f = Exec(body, root_, out);
    (void)f;
    return out;
  }

 private:
  // ── statements ──

  // Counts the statements and expressions being evaluated inside each other.
  class Deeper {
   public:
    explicit Deeper(Meter& m) : m_(m) {
      Charge(kStepCost);
      if (++m_.depth > kMaxRenderDepth)
        Fail(m_.line, "rendering nested deeper than " + std::to_string(kMaxRenderDepth) +
                          " levels (a macro calling itself without end?)");
    }
    ~Deeper() { --m_.depth; }
    Deeper(const Deeper&) = delete;
    Deeper& operator=(const Deeper&) = delete;

   private:
    Meter& m_;
  };

  void Emit(std::string& out, const std::string& text) {
    Charge(static_cast<int64_t>(text.size()));
    if (out.size() + text.size() > kMaxStringBytes) Fail(meter_.line, "output larger than " + MiB(kMaxStringBytes));
    out += text;
  }

  Flow Exec(const TemplateNode& n, const ScopeP& scope, std::string& out) {
    meter_.line = n.line;
    Deeper deeper(meter_);
    switch (n.kind) {
      case TemplateNode::kBody:
        for (const auto& c : n.children) {
          Flow f = Exec(*c, scope, out);
          if (f != Flow::kNormal) return f;
        }
        return Flow::kNormal;
      case TemplateNode::kText: Emit(out, n.text); return Flow::kNormal;
      case TemplateNode::kOutput: {
        Value v = Eval(*n.expr, scope);
        if (v.kind == Value::Kind::kCallable) Fail(n.line, "cannot print a function (missing '()'?)");
        Emit(out, v.is_string() ? v.s : Str(v));
        return Flow::kNormal;
      }
      case TemplateNode::kIf:
        for (const auto& [cond, body] : n.branches) {
          if (Truthy(Eval(*cond, scope))) return Exec(*body, scope, out);
        }
        if (n.else_body) return Exec(*n.else_body, scope, out);
        return Flow::kNormal;
      case TemplateNode::kFor: return ExecFor(n, scope, out);
      case TemplateNode::kSet: {
        Value v = Eval(*n.expr, scope);
        if (n.attr_target) {
          const Value* ns = scope->Find(n.targets[0]);
          if (!ns || ns->kind != Value::Kind::kObject || !ns->obj->is_namespace)
            Fail(n.line, "cannot assign attribute '" + n.targets[1] + "' on '" + n.targets[0] + "': not a namespace() object");
          ns->obj->Set(n.targets[1], std::move(v));
        } else {
          Assign(n.targets, v, *scope, n.line);
        }
        return Flow::kNormal;
      }
      case TemplateNode::kSetBlock: {
        std::string captured;
        Exec(*n.body, scope, captured);
        scope->vars[n.targets[0]] = Value::Str(std::move(captured));
        return Flow::kNormal;
      }
      case TemplateNode::kMacro: {
        scope->vars[n.text] = MakeMacro(n, scope);
        return Flow::kNormal;
      }
      case TemplateNode::kBreak: return Flow::kBreak;
      case TemplateNode::kContinue: return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  void Assign(const std::vector<std::string>& targets, const Value& v, Scope& scope, int line) {
    if (targets.size() == 1) {
      scope.vars[targets[0]] = v;
      return;
    }
    Array items = Iterate(v, line);
    if (items.size() != targets.size())
      Fail(line, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names");
    for (size_t k = 0; k < targets.size(); ++k) scope.vars[targets[k]] = items[k];
  }

  Flow ExecFor(const TemplateNode& n, const ScopeP& scope, std::string& out) {
    Value seq = Eval(*n.expr, scope);
    if (seq.none()) Fail(n.line, "'NoneType' object is not iterable");
    Array items = Iterate(seq, n.line);
    if (n.filter) {
      Array kept;
      for (const Value& it : items) {
        auto s = std::make_shared<Scope>();
        s->parent = scope;
        Assign(n.targets, it, *s, n.line);
        if (Truthy(Eval(*n.filter, s))) kept.push_back(it);
      }
      items = std::move(kept);
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      auto s = std::make_shared<Scope>();
      s->parent = scope;
      Assign(n.targets, items[k], *s, n.line);
      auto loop = std::make_shared<Object>();
      loop->items = {{"index", Value::Int(k + 1)},       {"index0", Value::Int(k)},
                     {"revindex", Value::Int(len - k)},  {"revindex0", Value::Int(len - k - 1)},
                     {"first", Value::Bool(k == 0)},     {"last", Value::Bool(k == len - 1)},
                     {"length", Value::Int(len)},        {"depth", Value::Int(1)},
                     {"depth0", Value::Int(0)}};
      loop->items.emplace_back("previtem", k > 0 ? items[k - 1] : Value::Undefined("there is no previous item"));
      loop->items.emplace_back("nextitem", k + 1 < len ? items[k + 1] : Value::Undefined("there is no next item"));
      loop->items.emplace_back("cycle", Value::Fn([k](Args& a) {
                                 if (a.pos.empty()) Fail(a.line, "loop.cycle() needs at least one argument");
                                 return a.pos[static_cast<size_t>(k) % a.pos.size()];
                               }));
      s->vars["loop"] = Value::Dict(loop);
      Flow f = Exec(*n.body, s, out);
      if (f == Flow::kBreak) break;
    }
    if (len == 0 && n.else_body) return Exec(*n.else_body, scope, out);
    return Flow::kNormal;
  }

  Value MakeMacro(const TemplateNode& n, const ScopeP& defining) {
    const TemplateNode* node = &n;
    // The macro holds its defining scope and that scope holds the macro: a
    // cycle of shared_ptrs, broken when the renderer ends (~Renderer).
    macro_scopes_.push_back(defining);
    return Value::Fn([this, node, defining](Args& a) {
      auto s = std::make_shared<Scope>();
      s->parent = defining;
      if (a.pos.size() > node->params.size())
        Fail(a.line, "macro '" + node->text + "' takes " + std::to_string(node->params.size()) + " arguments, got " +
                         std::to_string(a.pos.size()));
      for (const auto& [k, v] : a.kw)
        if (std::find(node->params.begin(), node->params.end(), k) == node->params.end())
          Fail(a.line, "macro '" + node->text + "' has no parameter '" + k + "'");
      for (size_t k = 0; k < node->params.size(); ++k) {
        Value v = a.Get(k, node->params[k]);
        if (v.undefined() && node->defaults[k]) v = Eval(*node->defaults[k], s);
        else if (v.undefined()) v = Value::Undefined("parameter '" + node->params[k] + "' of macro '" + node->text + "' was not given");
        s->vars[node->params[k]] = v;
      }
      std::string out;
      const int saved = meter_.line;
      Exec(*node->body, s, out);
      meter_.line = saved;
      return Value::Str(std::move(out));
    });
  }

  // ── expressions ──

  Value Eval(const Expr& e, const ScopeP& scope) {
    meter_.line = e.line;
    Deeper deeper(meter_);
    switch (e.kind) {
      case Expr::kLiteral: return e.literal;
      case Expr::kName: {
        const Value* v = scope->Find(e.name);
        return v ? *v : Value::Undefined("'" + e.name + "' is undefined");
      }
      case Expr::kList:
      case Expr::kTuple: {
        Array a;
        for (const auto& x : e.items) a.push_back(Eval(*x, scope));
        return Value::List(std::move(a), e.kind == Expr::kTuple);
      }
      case Expr::kDict: {
        auto o = std::make_shared<Object>();
        for (size_t k = 0; k + 1 < e.items.size(); k += 2) {
          Value key = Eval(*e.items[k], scope);
          if (!key.is_string()) Fail(e.line, "only string keys are supported in dict literals", ErrorKind::kUnimplemented);
          o->Set(key.s, Eval(*e.items[k + 1], scope));
        }
        return Value::Dict(o);
      }
      case Expr::kAttr: return GetAttr(Eval(*e.items[0], scope), e.name, e.line);
      case Expr::kItem: return GetItem(Eval(*e.items[0], scope), Eval(*e.items[1], scope), e.line);
      case Expr::kSlice: {
        Value target = Eval(*e.items[0], scope);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.items[k + 1]) parts[k] = Eval(*e.items[k + 1], scope);
        return Slice(target, parts[0], parts[1], parts[2], e.line);
      }
      case Expr::kCall: {
        Value callee = Eval(*e.items[0], scope);
        Args a = EvalArgs(e, 1, scope);
        return Call(callee, a, e.line);
      }
      case Expr::kFilter: {
        Value target = Eval(*e.items[0], scope);
        Args a = EvalArgs(e, 1, scope);
        return ApplyFilter(e.name, target, a);
      }
      case Expr::kTest: {
        Value target = Eval(*e.items[0], scope);
        Args a = EvalArgs(e, 1, scope);
        bool r = ApplyTest(e.name, target, a);
        return Value::Bool(e.negated ? !r : r);
      }
      case Expr::kNot: return Value::Bool(!Truthy(Eval(*e.items[0], scope)));
      case Expr::kNeg:
      case Expr::kPos: {
        Value v = Eval(*e.items[0], scope);
        if (v.undefined()) FailUndefined(v, e.line);
        if (!v.numeric()) Fail(e.line, std::string("bad operand type for unary ") + (e.kind == Expr::kNeg ? "-" : "+") + ": '" + TypeName(v) + "'");
        if (e.kind == Expr::kPos) return v.integral() ? Value::Int(v.AsInt()) : v;
        int64_t r = 0;
        if (v.integral()) {
          CheckOverflow(__builtin_sub_overflow(int64_t{0}, v.AsInt(), &r), "-", e.line);
          return Value::Int(r);
        }
        return Value::Float(-v.f);
      }
      case Expr::kAnd: {
        Value a = Eval(*e.items[0], scope);
        return Truthy(a) ? Eval(*e.items[1], scope) : a;
      }
      case Expr::kOr: {
        Value a = Eval(*e.items[0], scope);
        return Truthy(a) ? a : Eval(*e.items[1], scope);
      }
      case Expr::kBinary: return Binary(e.name, Eval(*e.items[0], scope), Eval(*e.items[1], scope), e.line);
      case Expr::kCompare: {
        Value left = Eval(*e.items[0], scope);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = Eval(*e.items[k + 1], scope);
          if (!CompareOp(e.ops[k], left, right, e.line)) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case Expr::kCond: {
        if (Truthy(Eval(*e.items[0], scope))) return Eval(*e.items[1], scope);
        if (e.items[2]) return Eval(*e.items[2], scope);
        return Value::Undefined("the condition was false and the expression has no 'else'");
      }
    }
    return Value();
  }

  Args EvalArgs(const Expr& e, size_t first, const ScopeP& scope) {
    Args a;
    a.line = e.line;
    for (size_t k = first; k < e.items.size(); ++k) a.pos.push_back(Eval(*e.items[k], scope));
    for (const auto& [name, x] : e.kwargs) a.kw.emplace_back(name, Eval(*x, scope));
    meter_.line = e.line;
    return a;
  }

  Value Call(const Value& callee, Args& a, int line) {
    if (callee.undefined()) FailUndefined(callee, line);
    if (callee.kind != Value::Kind::kCallable) Fail(line, std::string("'") + TypeName(callee) + "' object is not callable");
    a.line = line;
    return (*callee.fn)(a);
  }

  bool CompareOp(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return Equal(a, b);
    if (op == "!=") return !Equal(a, b);
    if (op == "in") return Contains(b, a, line);
    if (op == "not in") return !Contains(b, a, line);
    int c = Compare(a, b, line);
    if (op == "<") return c < 0;
    if (op == ">") return c > 0;
    if (op == "<=") return c <= 0;
    return c >= 0;
  }

  bool Contains(const Value& container, const Value& x, int line) {
    switch (container.kind) {
      case Value::Kind::kUndefined: return false;
      case Value::Kind::kString:
        if (x.undefined()) FailUndefined(x, line);
        if (!x.is_string()) Fail(line, std::string("'in <string>' requires string as left operand, not ") + TypeName(x));
        Charge(static_cast<int64_t>(container.s.size()));
        return container.s.find(x.s) != std::string::npos;
      case Value::Kind::kArray:
        for (const Value& v : *container.arr)
          if (Equal(v, x)) return true;
        return false;
      case Value::Kind::kObject:
        if (container.obj->is_namespace) break;
        return x.is_string() && container.obj->Find(x.s) != nullptr;
      default: break;
    }
    Fail(line, std::string("argument of type '") + TypeName(container) + "' is not iterable");
  }

  Value Binary(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "~") return Value::Str(Str(a) + Str(b));
    if (a.undefined()) FailUndefined(a, line);
    if (b.undefined()) FailUndefined(b, line);
    auto bad = [&]() -> Value {
      Fail(line, "unsupported operand types for " + op + ": '" + TypeName(a) + "' and '" + TypeName(b) + "'");
    };
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::Str(a.s + b.s);
      if (a.kind == Value::Kind::kArray && b.kind == Value::Kind::kArray && a.tuple == b.tuple) {
        Array r = *a.arr;
        r.insert(r.end(), b.arr->begin(), b.arr->end());
        return Value::List(std::move(r), a.tuple);
      }
    }
    if (op == "*") {
      const Value* seq = a.is_string() || a.kind == Value::Kind::kArray ? &a : &b;
      const Value* cnt = seq == &a ? &b : &a;
      if ((seq->is_string() || seq->kind == Value::Kind::kArray) && cnt->integral()) {
        const int64_t n = std::max<int64_t>(0, cnt->AsInt());
        if (n > (1 << 20)) Fail(line, "sequence repetition by " + std::to_string(n) + " is too large");
        const size_t unit = seq->is_string() ? seq->s.size() : seq->arr->size() * sizeof(Value);
        if (unit * static_cast<size_t>(n) > kMaxStringBytes)
          Fail(line, "sequence repetition: result larger than " + MiB(kMaxStringBytes));
        if (seq->is_string()) {
          std::string r;
          for (int64_t k = 0; k < n; ++k) r += seq->s;
          return Value::Str(r);
        }
        Array r;
        for (int64_t k = 0; k < n; ++k) r.insert(r.end(), seq->arr->begin(), seq->arr->end());
        return Value::List(std::move(r), seq->tuple);
      }
    }
    if (op == "%" && a.is_string())
      Fail(line, "printf-style string formatting ('%') is not supported", ErrorKind::kUnimplemented);
    if (!a.numeric() || !b.numeric()) return bad();
    const bool ints = a.integral() && b.integral();
    if (ints) {
      const int64_t x = a.AsInt(), y = b.AsInt();
      int64_t r = 0;
      if (op == "+" || op == "-" || op == "*") {
        const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                              : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                          : __builtin_mul_overflow(x, y, &r);
        CheckOverflow(overflow, op, line);
        return Value::Int(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) Fail(line, "integer division or modulo by zero");
        CheckOverflow(x == std::numeric_limits<int64_t>::min() && y == -1, op, line);
        int64_t q = x / y;
        r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {
          --q;
          r += y;
        }
        return Value::Int(op == "//" ? q : r);
      }
      if (op == "**" && y >= 0) {  // by squaring: log2(y) steps
        int64_t base = x, e = y;
        bool overflow = false;
        r = 1;
        while (e > 0 && !overflow) {
          if (e & 1) overflow |= __builtin_mul_overflow(r, base, &r);
          e >>= 1;
          if (e > 0) overflow |= __builtin_mul_overflow(base, base, &base);
        }
        CheckOverflow(overflow, op, line);
        return Value::Int(r);
      }
    }
    const double x = a.AsDouble(), y = b.AsDouble();
    if (op == "+") return Value::Float(x + y);
    if (op == "-") return Value::Float(x - y);
    if (op == "*") return Value::Float(x * y);
    if (op == "/") {
      if (y == 0) Fail(line, "division by zero");
      return Value::Float(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) Fail(line, "float division or modulo by zero");
      double r = std::fmod(x, y);
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      return Value::Float(op == "//" ? std::floor(x / y) : r);
    }
    if (op == "**") return Value::Float(std::pow(x, y));
    return bad();
  }

  Value Slice(const Value& t, const Value& a, const Value& b, const Value& c, int line) {
    if (t.undefined()) FailUndefined(t, line);
    if (t.is_string()) {
      std::u32string u = Decode(t.s), r;
      for (int64_t k : SliceIndices(static_cast<int64_t>(u.size()), a, b, c, line)) r += u[k];
      return Value::Str(Encode(r));
    }
    if (t.kind == Value::Kind::kArray) {
      Array r;
      for (int64_t k : SliceIndices(static_cast<int64_t>(t.arr->size()), a, b, c, line)) r.push_back((*t.arr)[k]);
      return Value::List(std::move(r), t.tuple);
    }
    Fail(line, std::string("'") + TypeName(t) + "' object is not subscriptable");
  }

  // x[key]: jinja2's getitem first, getattr after.
  Value GetItem(const Value& t, const Value& key, int line) {
    if (t.undefined()) FailUndefined(t, line);
    if (t.kind == Value::Kind::kArray || t.is_string()) {
      if (key.integral()) {
        const int64_t n = t.is_string() ? static_cast<int64_t>(CodePoints(t.s)) : static_cast<int64_t>(t.arr->size());
        int64_t k = key.AsInt();
        if (k < 0) k += n;
        if (k < 0 || k >= n) return Value::Undefined(std::string(TypeName(t)) + " index " + std::to_string(key.AsInt()) + " out of range");
        if (t.is_string()) return Value::Str(Encode(std::u32string(1, Decode(t.s)[k])));
        return (*t.arr)[k];
      }
      if (key.is_string()) return GetAttr(t, key.s, line);
      return Value::Undefined(std::string(TypeName(t)) + " indices must be integers");
    }
    if (t.kind == Value::Kind::kObject) {
      if (key.is_string()) {
        if (const Value* v = t.obj->Find(key.s)) return *v;
        return GetAttr(t, key.s, line);
      }
      return Value::Undefined("'dict object' has no attribute " + Str(key));
    }
    return Value::Undefined(std::string("'") + TypeName(t) + " object' has no attribute " + Repr(key));
  }

  // x.name: Python's getattr (methods) first, the item after.
  Value GetAttr(const Value& t, const std::string& name, int line) {
    if (t.undefined()) FailUndefined(t, line);
    const std::string missing = std::string("'") + TypeName(t) + " object' has no attribute '" + name + "'";
    if (t.is_string()) {
      Value m = StringMethod(t.s, name);
      return m.undefined() ? Value::Undefined(missing) : m;
    }
    if (t.kind == Value::Kind::kObject) {
      if (!t.obj->is_namespace) {
        Value m = DictMethod(t, name);
        if (!m.undefined()) return m;
      }
      if (const Value* v = t.obj->Find(name)) return *v;
      return Value::Undefined(missing);
    }
    if (t.kind == Value::Kind::kArray) {
      Value m = ListMethod(t, name);
      return m.undefined() ? Value::Undefined(missing) : m;
    }
    return Value::Undefined(missing);
  }

  static Value Unsafe(const std::string& what) {
    return Value::Fn([what](Args& a) -> Value {
      Fail(a.line, what + " is not allowed: chat templates render in an immutable sandbox (as transformers does)");
    });
  }

  Value DictMethod(const Value& t, const std::string& name) {
    auto obj = t.obj;
    if (name == "items")
      return Value::Fn([obj](Args& a) {
        a.Expect("dict.items()", 0, {});
        Array r;
        for (const auto& [k, v] : obj->items) r.push_back(Value::List({Value::Str(k), v}, true));
        return Value::List(std::move(r));
      });
    if (name == "keys")
      return Value::Fn([obj](Args& a) {
        a.Expect("dict.keys()", 0, {});
        Array r;
        for (const auto& [k, v] : obj->items) r.push_back(Value::Str(k));
        return Value::List(std::move(r));
      });
    if (name == "values")
      return Value::Fn([obj](Args& a) {
        a.Expect("dict.values()", 0, {});
        Array r;
        for (const auto& [k, v] : obj->items) r.push_back(v);
        return Value::List(std::move(r));
      });
    if (name == "get")
      return Value::Fn([obj](Args& a) {
        a.Expect("dict.get()", 2, {});
        if (a.pos.empty()) Fail(a.line, "dict.get() needs a key");
        if (a.pos[0].is_string())
          if (const Value* v = obj->Find(a.pos[0].s)) return *v;
        return a.pos.size() > 1 ? a.pos[1] : Value::None();
      });
    if (name == "update" || name == "pop" || name == "popitem" || name == "setdefault" || name == "clear")
      return Unsafe("dict." + name + "()");
    if (name == "copy") return Value::Fn([t](Args&) { auto o = std::make_shared<Object>(*t.obj); return Value::Dict(o); });
    return Value();
  }

  Value ListMethod(const Value& t, const std::string& name) {
    auto arr = t.arr;
    if (name == "index")
      return Value::Fn([arr](Args& a) {
        if (a.pos.empty()) Fail(a.line, "list.index() needs a value");
        for (size_t k = 0; k < arr->size(); ++k)
          if (Equal((*arr)[k], a.pos[0])) return Value::Int(static_cast<int64_t>(k));
        Fail(a.line, Repr(a.pos[0]) + " is not in list");
      });
    if (name == "count")
      return Value::Fn([arr](Args& a) {
        if (a.pos.empty()) Fail(a.line, "list.count() needs a value");
        int64_t n = 0;
        for (const Value& v : *arr) n += Equal(v, a.pos[0]);
        return Value::Int(n);
      });
    if (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove" ||
        name == "reverse" || name == "sort" || name == "clear")
      return Unsafe("list." + name + "()");
    return Value();
  }

  Value StringMethod(const std::string& s, const std::string& name) {
    Charge(static_cast<int64_t>(s.size()));  // the method holds a copy
    auto str_arg = [](const Args& a, size_t k, const char* what) -> const std::string& {
      if (k >= a.pos.size() || !a.pos[k].is_string()) Fail(a.line, std::string(what) + " needs a string argument");
      return a.pos[k].s;
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return Value::Fn([s, l, r, name](Args& a) {
        a.Expect("str." + name + "()", 1, {});
        Value c = a.Get(0, "chars");
        if (c.undefined() || c.none()) return Value::Str(Strip(s, nullptr, l, r));
        std::u32string chars = CharsArg(c, a.line);
        return Value::Str(Strip(s, &chars, l, r));
      });
    }
    if (name == "split" || name == "rsplit") {
      const bool right = name == "rsplit";
      return Value::Fn([s, right, name](Args& a) {
        a.Expect("str." + name + "()", 2, {"sep", "maxsplit"});
        Value ms = a.Get(1, "maxsplit");
        int64_t maxsplit = -1;
        if (!ms.undefined()) {
          if (!ms.integral()) Fail(a.line, "maxsplit must be an integer");
          maxsplit = ms.AsInt();
        }
        return Value::List(Split(s, a.Get(0, "sep"), maxsplit, right, a.line));
      });
    }
    if (name == "replace")
      return Value::Fn([s, str_arg](Args& a) {
        a.Expect("str.replace()", 3, {});
        int64_t count = -1;
        if (a.pos.size() > 2) {
          if (!a.pos[2].integral()) Fail(a.line, "replace() count must be an integer");
          count = a.pos[2].AsInt();
        }
        return Value::Str(Replace(s, str_arg(a, 0, "str.replace()"), str_arg(a, 1, "str.replace()"), count));
      });
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return Value::Fn([s, start, name](Args& a) {
        a.Expect("str." + name + "()", 1, {});
        if (a.pos.empty()) Fail(a.line, "str." + name + "() needs an argument");
        std::vector<std::string> cands;
        if (a.pos[0].is_string()) cands.push_back(a.pos[0].s);
        else if (a.pos[0].kind == Value::Kind::kArray)
          for (const Value& v : *a.pos[0].arr) {
            if (!v.is_string()) Fail(a.line, "str." + name + "() tuple items must be strings");
            cands.push_back(v.s);
          }
        else Fail(a.line, "str." + name + "() argument must be a string or a tuple of strings");
        for (const std::string& c : cands) {
          if (c.size() > s.size()) continue;
          if (start ? s.compare(0, c.size(), c) == 0 : s.compare(s.size() - c.size(), c.size(), c) == 0)
            return Value::Bool(true);
        }
        return Value::Bool(false);
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize")
      return Value::Fn([s, name](Args& a) {
        a.Expect("str." + name + "()", 0, {});
        if (name == "upper") return Value::Str(Upper(s, a.line));
        if (name == "lower") return Value::Str(Lower(s, a.line));
        if (name == "title") return Value::Str(Title(s, a.line));
        return Value::Str(Capitalize(s, a.line));
      });
    if (name == "find" || name == "rfind" || name == "count")
      return Value::Fn([s, name, str_arg](Args& a) {
        a.Expect("str." + name + "()", 1, {});
        Charge(static_cast<int64_t>(s.size()));
        const std::string& sub = str_arg(a, 0, "str.find()");
        if (name == "count") {
          if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePoints(s)) + 1);
          int64_t n = 0;
          for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
          return Value::Int(n);
        }
        size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
        if (p == std::string::npos) return Value::Int(-1);
        return Value::Int(static_cast<int64_t>(CodePoints(std::string_view(s).substr(0, p))));
      });
    if (name == "join")
      return Value::Fn([s](Args& a) {
        a.Expect("str.join()", 1, {});
        if (a.pos.empty()) Fail(a.line, "str.join() needs an iterable");
        std::string out;
        bool first = true;
        for (const Value& v : Iterate(a.pos[0], a.line)) {
          if (!v.is_string()) Fail(a.line, std::string("str.join(): expected str instance, ") + TypeName(v) + " found");
          out += (first ? "" : s) + v.s;
          CheckSize(out.size(), "str.join()'s result");
          first = false;
        }
        return Value::Str(out);
      });
    if (name == "splitlines")
      return Value::Fn([s](Args& a) {
        a.Expect("str.splitlines()", 0, {});
        Array out;
        size_t p = 0;
        while (p < s.size()) {
          size_t e = s.find_first_of("\r\n", p);
          if (e == std::string::npos) {
            out.push_back(Value::Str(s.substr(p)));
            break;
          }
          out.push_back(Value::Str(s.substr(p, e - p)));
          p = e + ((s[e] == '\r' && e + 1 < s.size() && s[e + 1] == '\n') ? 2 : 1);
        }
        return Value::List(std::move(out));
      });
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "islower" ||
        name == "isupper")
      return Value::Fn([s, name](Args& a) {
        Charge(static_cast<int64_t>(s.size()));
        if (!IsAscii(s)) Fail(a.line, "str." + name + "() of non-ASCII text is not supported", ErrorKind::kUnimplemented);
        if (s.empty()) return Value::Bool(false);
        bool all = true, cased = false;
        for (unsigned char c : s) {
          if (name == "isdigit") all &= std::isdigit(c) != 0;
          else if (name == "isspace") all &= std::isspace(c) != 0;
          else if (name == "isalpha") all &= std::isalpha(c) != 0;
          else if (name == "isalnum") all &= std::isalnum(c) != 0;
          else if (name == "islower") { all &= !std::isupper(c); cased |= std::islower(c) != 0; }
          else { all &= !std::islower(c); cased |= std::isupper(c) != 0; }
        }
        return Value::Bool(all && ((name == "islower" || name == "isupper") ? cased : true));
      });
    if (name == "format" || name == "format_map" || name == "encode")
      return Value::Fn([name](Args& a) -> Value {
        Fail(a.line, "str." + name + "() is not supported", ErrorKind::kUnimplemented);
      });
    return Value();
  }

  // ── filters ──

  Value ApplyFilter(const std::string& name, const Value& v, Args& a) {
    const int line = a.line;
    auto kw_or = [&](size_t k, const char* key, Value dflt) {
      Value x = a.Get(k, key);
      return x.undefined() ? dflt : x;
    };
    auto attr_getter = [&](const Value& attr) {
      return [this, attr, line](const Value& item) {
        if (attr.undefined() || attr.none()) return item;
        Value cur = item;
        std::string path = attr.is_string() ? attr.s : Str(attr);
        size_t p = 0;
        while (true) {
          size_t d = path.find('.', p);
          std::string part = path.substr(p, d == std::string::npos ? std::string::npos : d - p);
          bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
          // digits: an index (18 digits at most fit an int64; longer ones index nothing)
          cur = GetItem(cur, digits && part.size() <= 18 ? Value::Int(std::stoll(part)) : Value::Str(part), line);
          if (d == std::string::npos) break;
          p = d + 1;
        }
        return cur;
      };
    };
    auto sort_key_less = [&](bool case_sensitive) {
      return [case_sensitive, line](const Value& x, const Value& y) {
        if (!case_sensitive && x.is_string() && y.is_string() && IsAscii(x.s) && IsAscii(y.s))
          return Lower(x.s, line) < Lower(y.s, line);
        return Compare(x, y, line) < 0;
      };
    };

    if (name == "length" || name == "count") return Value::Int(Length(v, line));
    if (name == "string") return Value::Str(Str(v));
    if (name == "safe") return v;
    if (name == "trim") {
      a.Expect("trim", 1, {"chars"});
      Value c = a.Get(0, "chars");
      if (c.undefined() || c.none()) return Value::Str(Strip(Str(v), nullptr, true, true));
      std::u32string chars = CharsArg(c, line);
      return Value::Str(Strip(Str(v), &chars, true, true));
    }
    if (name == "tojson") {
      a.Expect("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
      JsonStyle st;
      st.ensure_ascii = Truthy(kw_or(0, "ensure_ascii", Value::Bool(false)));
      Value indent = kw_or(1, "indent", Value::None());
      if (indent.integral()) {
        st.indent = true;
        const int64_t n = std::max<int64_t>(0, indent.AsInt());
        CheckSize(static_cast<uint64_t>(n), "tojson's indent");
        st.indent_str = std::string(static_cast<size_t>(n), ' ');
      } else if (indent.is_string()) {
        st.indent = true;
        st.indent_str = indent.s;
      } else if (!indent.none()) {
        Fail(line, "tojson: indent must be an integer, a string or None");
      }
      if (st.indent) st.item_sep = ",";
      Value seps = kw_or(2, "separators", Value::None());
      if (!seps.none()) {
        if (seps.kind != Value::Kind::kArray || seps.arr->size() != 2 || !(*seps.arr)[0].is_string() || !(*seps.arr)[1].is_string())
          Fail(line, "tojson: separators must be a pair of strings");
        st.item_sep = (*seps.arr)[0].s;
        st.key_sep = (*seps.arr)[1].s;
      }
      st.sort_keys = Truthy(kw_or(3, "sort_keys", Value::Bool(false)));
      std::string out;
      DumpJson(v, st, 0, out, line);
      return Value::Str(out);
    }
    if (name == "lower") return Value::Str(Lower(Str(v), line));
    if (name == "upper") return Value::Str(Upper(Str(v), line));
    if (name == "title") return Value::Str(Title(Str(v), line));
    if (name == "capitalize") return Value::Str(Capitalize(Str(v), line));
    if (name == "default" || name == "d") {
      a.Expect(name, 2, {"default_value", "boolean"});
      Value dflt = kw_or(0, "default_value", Value::Str(""));
      const bool boolean = Truthy(kw_or(1, "boolean", Value::Bool(false)));
      if (v.undefined() || (boolean && !Truthy(v))) return dflt;
      return v;
    }
    if (name == "join") {
      a.Expect("join", 2, {"d", "attribute"});
      Value sep = kw_or(0, "d", Value::Str(""));
      auto get = attr_getter(a.Get(1, "attribute"));
      std::string out;
      bool first = true;
      for (const Value& x : Iterate(v, line)) {
        out += (first ? "" : Str(sep)) + Str(get(x));
        CheckSize(out.size(), "join's result");
        first = false;
      }
      return Value::Str(out);
    }
    if (name == "first" || name == "last") {
      Array items = Iterate(v, line);
      if (items.empty()) return Value::Undefined("no " + name + " item: the sequence is empty");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") return Value::List(Iterate(v, line));
    if (name == "items") {
      if (v.undefined()) return Value::List({});
      if (v.kind != Value::Kind::kObject || v.obj->is_namespace) Fail(line, std::string("items: expected a dict, got ") + TypeName(v));
      Array r;
      for (const auto& [k, x] : v.obj->items) r.push_back(Value::List({Value::Str(k), x}, true));
      return Value::List(std::move(r));
    }
    if (name == "dictsort") {
      a.Expect("dictsort", 3, {"case_sensitive", "by", "reverse"});
      if (v.kind != Value::Kind::kObject) Fail(line, std::string("dictsort: expected a dict, got ") + TypeName(v));
      const bool cs = Truthy(kw_or(0, "case_sensitive", Value::Bool(false)));
      const Value by = kw_or(1, "by", Value::Str("key"));
      const bool rev = Truthy(kw_or(2, "reverse", Value::Bool(false)));
      const size_t pos = by.is_string() && by.s == "value" ? 1 : 0;
      Array r;
      for (const auto& [k, x] : v.obj->items) r.push_back(Value::List({Value::Str(k), x}, true));
      auto less = sort_key_less(cs);
      std::stable_sort(r.begin(), r.end(), [&](const Value& x, const Value& y) {
        return rev ? less((*y.arr)[pos], (*x.arr)[pos]) : less((*x.arr)[pos], (*y.arr)[pos]);
      });
      return Value::List(std::move(r));
    }
    if (name == "sort") {
      a.Expect("sort", 3, {"reverse", "case_sensitive", "attribute"});
      const bool rev = Truthy(kw_or(0, "reverse", Value::Bool(false)));
      const bool cs = Truthy(kw_or(1, "case_sensitive", Value::Bool(false)));
      auto get = attr_getter(a.Get(2, "attribute"));
      Array r = Iterate(v, line);
      auto less = sort_key_less(cs);
      std::stable_sort(r.begin(), r.end(), [&](const Value& x, const Value& y) {
        return rev ? less(get(y), get(x)) : less(get(x), get(y));
      });
      return Value::List(std::move(r));
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string u = Decode(v.s);
        std::reverse(u.begin(), u.end());
        return Value::Str(Encode(u));
      }
      Array r = Iterate(v, line);
      std::reverse(r.begin(), r.end());
      return Value::List(std::move(r));
    }
    if (name == "unique") {
      a.Expect("unique", 2, {"case_sensitive", "attribute"});
      const bool cs = Truthy(kw_or(0, "case_sensitive", Value::Bool(false)));
      auto get = attr_getter(a.Get(1, "attribute"));
      Array r, keys;
      for (const Value& x : Iterate(v, line)) {
        Value k = get(x);
        if (!cs && k.is_string() && IsAscii(k.s)) k = Value::Str(Lower(k.s, line));
        bool seen = false;
        for (const Value& y : keys) seen |= Equal(y, k);
        if (!seen) {
          keys.push_back(k);
          r.push_back(x);
        }
      }
      return Value::List(std::move(r));
    }
    if (name == "map") {
      Array r;
      Value attr = a.Get(99, "attribute");
      if (!attr.undefined()) {
        auto get = attr_getter(attr);
        Value dflt = a.Get(99, "default");
        for (const Value& x : Iterate(v, line)) {
          Value y = get(x);
          r.push_back(y.undefined() && !dflt.undefined() ? dflt : y);
        }
        return Value::List(std::move(r));
      }
      if (a.pos.empty() || !a.pos[0].is_string()) Fail(line, "map: expected a filter name or attribute=");
      const std::string f = a.pos[0].s;
      if (!KnownFilters().count(f)) Fail(line, "unknown filter '" + f + "'", ErrorKind::kUnimplemented);
      Args rest;
      rest.line = line;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      rest.kw = a.kw;
      for (const Value& x : Iterate(v, line)) r.push_back(ApplyFilter(f, x, rest));
      return Value::List(std::move(r));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool attr_form = name == "selectattr" || name == "rejectattr";
      const bool keep = name == "select" || name == "selectattr";
      size_t k = 0;
      std::function<Value(const Value&)> get = [](const Value& x) { return x; };
      if (attr_form) {
        if (a.pos.empty()) Fail(line, name + ": expected an attribute name");
        get = attr_getter(a.pos[0]);
        k = 1;
      }
      std::string test;
      Args targs;
      targs.line = line;
      if (k < a.pos.size()) {
        if (!a.pos[k].is_string()) Fail(line, name + ": expected a test name");
        test = a.pos[k].s;
        if (!KnownTests().count(test)) Fail(line, "unknown test '" + test + "'", ErrorKind::kUnimplemented);
        targs.pos.assign(a.pos.begin() + k + 1, a.pos.end());
      }
      Array r;
      for (const Value& x : Iterate(v, line)) {
        Value y = get(x);
        bool ok = test.empty() ? Truthy(y) : ApplyTest(test, y, targs);
        if (ok == keep) r.push_back(x);
      }
      return Value::List(std::move(r));
    }
    if (name == "replace") {
      a.Expect("replace", 3, {"old", "new", "count"});
      Value from = a.Get(0, "old"), to = a.Get(1, "new"), cnt = a.Get(2, "count");
      if (from.undefined() || to.undefined()) Fail(line, "replace: expected old and new strings");
      return Value::Str(Replace(Str(v), Str(from), Str(to), cnt.undefined() || cnt.none() ? -1 : cnt.AsInt()));
    }
    if (name == "escape" || name == "e" || name == "forceescape") return Value::Str(HtmlEscape(Str(v)));
    if (name == "indent") {
      a.Expect("indent", 3, {"width", "first", "blank"});
      Value width = kw_or(0, "width", Value::Int(4));
      const bool first = Truthy(kw_or(1, "first", Value::Bool(false)));
      const bool blank = Truthy(kw_or(2, "blank", Value::Bool(false)));
      const int64_t n = width.is_string() ? 0 : std::max<int64_t>(0, width.AsInt());
      CheckSize(static_cast<uint64_t>(n), "indent's width");
      const std::string ind = width.is_string() ? width.s : std::string(static_cast<size_t>(n), ' ');
      Value lines_v = StringMethod(Str(v) + "\n", "splitlines");
      Args none;
      none.line = line;
      Array lines = *Call(lines_v, none, line).arr;
      std::string rv;
      if (blank) {
        for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k].s;
      } else {
        rv = lines.empty() ? "" : lines[0].s;
        for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].s.empty() ? "" : ind + lines[k].s);
      }
      if (first) rv = ind + rv;
      return Value::Str(rv);
    }
    if (name == "int") {
      Value dflt = kw_or(0, "default", Value::Int(0));
      if (v.integral()) return Value::Int(v.AsInt());
      if (v.kind == Value::Kind::kFloat) return Value::Int(FloatToInt(v.f, line));
      if (v.is_string()) {
        std::string t = Strip(v.s, nullptr, true, true);
        char* end = nullptr;
        errno = 0;
        long long x = std::strtoll(t.c_str(), &end, 10);
        if (!t.empty() && *end == 0 && errno == 0) return Value::Int(x);
        double d = std::strtod(t.c_str(), &end);
        if (!t.empty() && *end == 0 && std::isfinite(d)) return Value::Int(FloatToInt(d, line));
      }
      return dflt;
    }
    if (name == "float") {
      Value dflt = kw_or(0, "default", Value::Float(0.0));
      if (v.numeric()) return Value::Float(v.AsDouble());
      if (v.is_string()) {
        std::string t = Strip(v.s, nullptr, true, true);
        char* end = nullptr;
        double d = std::strtod(t.c_str(), &end);
        if (!t.empty() && *end == 0) return Value::Float(d);
      }
      return dflt;
    }
    if (name == "abs") {
      if (!v.numeric()) Fail(line, std::string("abs: bad operand type '") + TypeName(v) + "'");
      if (v.integral()) {
        CheckOverflow(v.AsInt() == std::numeric_limits<int64_t>::min(), "abs", line);
        return Value::Int(v.AsInt() < 0 ? -v.AsInt() : v.AsInt());
      }
      return Value::Float(std::fabs(v.f));
    }
    if (name == "round") {
      a.Expect("round", 2, {"precision", "method"});
      if (!v.numeric()) Fail(line, std::string("round: bad operand type '") + TypeName(v) + "'");
      const int64_t prec = kw_or(0, "precision", Value::Int(0)).AsInt();
      const std::string method = Str(kw_or(1, "method", Value::Str("common")));
      const double scale = std::pow(10.0, static_cast<double>(prec));
      double x = v.AsDouble() * scale;
      if (method == "common") {
        std::fesetround(FE_TONEAREST);
        x = std::nearbyint(x);
      } else if (method == "ceil") {
        x = std::ceil(x);
      } else if (method == "floor") {
        x = std::floor(x);
      } else {
        Fail(line, "round: method must be common, ceil or floor");
      }
      return Value::Float(x / scale);
    }
    if (name == "sum") {
      a.Expect("sum", 2, {"attribute", "start"});
      auto get = attr_getter(a.Get(0, "attribute"));
      Value acc = kw_or(1, "start", Value::Int(0));
      for (const Value& x : Iterate(v, line)) acc = Binary("+", acc, get(x), line);
      return acc;
    }
    if (name == "min" || name == "max") {
      a.Expect(name, 2, {"case_sensitive", "attribute"});
      const bool cs = Truthy(kw_or(0, "case_sensitive", Value::Bool(false)));
      auto get = attr_getter(a.Get(1, "attribute"));
      Array items = Iterate(v, line);
      if (items.empty()) return Value::Undefined("no " + name + " item: the sequence is empty");
      auto less = sort_key_less(cs);
      Value best = items[0];
      for (size_t k = 1; k < items.size(); ++k) {
        bool better = name == "min" ? less(get(items[k]), get(best)) : less(get(best), get(items[k]));
        if (better) best = items[k];
      }
      return best;
    }
    if (name == "attr") {
      if (a.pos.empty() || !a.pos[0].is_string()) Fail(line, "attr: expected an attribute name");
      return GetAttr(v, a.pos[0].s, line);
    }
    Fail(line, "the filter '" + name + "' is not supported by strata's template renderer", ErrorKind::kUnimplemented);
  }

  // ── tests ──

  bool ApplyTest(const std::string& name, const Value& v, Args& a) {
    const int line = a.line;
    auto arg = [&]() -> const Value& {
      if (a.pos.empty()) Fail(line, "test '" + name + "' needs an argument");
      return a.pos[0];
    };
    if (name == "defined") return !v.undefined();
    if (name == "undefined") return v.undefined();
    if (name == "none") return v.none();
    if (name == "boolean") return v.kind == Value::Kind::kBool;
    if (name == "true") return v.kind == Value::Kind::kBool && v.b;
    if (name == "false") return v.kind == Value::Kind::kBool && !v.b;
    if (name == "integer") return v.kind == Value::Kind::kInt;
    if (name == "float") return v.kind == Value::Kind::kFloat;
    if (name == "number") return v.numeric();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.kind == Value::Kind::kObject && !v.obj->is_namespace;
    if (name == "iterable")
      return v.undefined() || v.is_string() || v.kind == Value::Kind::kArray ||
             (v.kind == Value::Kind::kObject && !v.obj->is_namespace);
    if (name == "sequence")
      return v.is_string() || v.kind == Value::Kind::kArray || (v.kind == Value::Kind::kObject && !v.obj->is_namespace);
    if (name == "callable") return v.kind == Value::Kind::kCallable;
    if (name == "odd" || name == "even") {
      if (!v.integral()) Fail(line, "test '" + name + "' needs an integer");
      return ((v.AsInt() % 2) != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      const Value& d = arg();
      if (!v.integral() || !d.integral() || d.AsInt() == 0) Fail(line, "divisibleby needs non-zero integers");
      return v.AsInt() % d.AsInt() == 0;
    }
    if (name == "eq" || name == "equalto" || name == "==") return Equal(v, arg());
    if (name == "ne" || name == "!=") return !Equal(v, arg());
    if (name == "lt" || name == "lessthan" || name == "<") return Compare(v, arg(), line) < 0;
    if (name == "le" || name == "<=") return Compare(v, arg(), line) <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return Compare(v, arg(), line) > 0;
    if (name == "ge" || name == ">=") return Compare(v, arg(), line) >= 0;
    if (name == "in") return Contains(arg(), v, line);
    if (name == "lower") return v.is_string() && Lower(v.s, line) == v.s;
    if (name == "upper") return v.is_string() && Upper(v.s, line) == v.s;
    if (name == "escaped") return false;
    if (name == "sameas") {
      const Value& o = arg();
      if (v.kind != o.kind) return false;
      if (v.kind == Value::Kind::kArray) return v.arr == o.arr;
      if (v.kind == Value::Kind::kObject) return v.obj == o.obj;
      return Equal(v, o);
    }
    Fail(line, "the test '" + name + "' is not supported by strata's template renderer", ErrorKind::kUnimplemented);
  }

  // ── globals ──

  void InstallGlobals() {
    globals_->vars["raise_exception"] = Value::Fn([](Args& a) -> Value {
      Fail(a.line, "the template raised an exception: " + (a.pos.empty() ? std::string() : Str(a.pos[0])));
    });
    globals_->vars["strftime_now"] = Value::Fn([](Args& a) {
      if (a.pos.empty() || !a.pos[0].is_string()) Fail(a.line, "strftime_now() needs a format string");
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      size_t n = std::strftime(buf, sizeof buf, a.pos[0].s.c_str(), &tm);
      return Value::Str(std::string(buf, n));
    });
    globals_->vars["range"] = Value::Fn([](Args& a) {
      std::vector<int64_t> p;
      for (const Value& v : a.pos) {
        if (!v.integral()) Fail(a.line, "range() arguments must be integers");
        p.push_back(v.AsInt());
      }
      if (p.empty() || p.size() > 3) Fail(a.line, "range() takes 1 to 3 arguments");
      int64_t start = p.size() > 1 ? p[0] : 0, stop = p.size() > 1 ? p[1] : p[0], step = p.size() > 2 ? p[2] : 1;
      if (step == 0) Fail(a.line, "range() step must not be zero");
      Array r;
      for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
        if (r.size() >= (1u << 20)) Fail(a.line, "range() is too long");
        Charge(sizeof(Value));
        r.push_back(Value::Int(k));
        if (__builtin_add_overflow(k, step, &k)) break;
      }
      return Value::List(std::move(r));
    });
    auto make_dict = [this](bool ns) {
      return Value::Fn([this, ns](Args& a) {
        auto o = std::make_shared<Object>();
        o->is_namespace = ns;
        if (ns) namespaces_.push_back(o);
        for (const Value& v : a.pos) {
          if (v.kind != Value::Kind::kObject) Fail(a.line, std::string(ns ? "namespace" : "dict") + "() positional arguments must be dicts");
          for (const auto& [k, x] : v.obj->items) o->Set(k, x);
        }
        for (const auto& [k, x] : a.kw) o->Set(k, x);
        return Value::Dict(o);
      });
    };
    globals_->vars["namespace"] = make_dict(true);
    globals_->vars["dict"] = make_dict(false);
  }

  Meter& meter_;
  ScopeP globals_, root_;
  std::vector<ScopeP> macro_scopes_;                // scopes that define macros (cycles to break)
  std::vector<std::shared_ptr<Object>> namespaces_;  // every namespace() made (cycles to break)
};

Status ToStatus(const JinjaError& e, const char* stage) {
  return Status(e.kind, std::string("chat template line ") + std::to_string(e.line) + ": " + e.message +
                            (stage[0] ? std::string(" (") + stage + ")" : ""));
}

}  // namespace

Result<Template> Template::Parse(const std::string& source) {
  try {
    Lexer lexer(source);
    std::vector<Item> items = lexer.Run();
    Parser parser(std::move(items));
    Template t;
    t.root_ = parser.ParseTemplate();
    return t;
  } catch (const JinjaError& e) {
    return ToStatus(e, "");
  }
}

Result<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  if (!root_) return FailedPrecondition("rendering a template that was not parsed");
  Meter meter;
  Meter* const outer = t_meter;
  t_meter = &meter;
  struct Restore {
    Meter* outer;
    ~Restore() { t_meter = outer; }
  } restore{outer};
  try {
    Renderer r(context, meter);
    return r.Run(*root_);
  } catch (const JinjaError& e) {
    return ToStatus(e, "");
  }
}

}  // namespace strata::jinja
