// Values with Python's semantics, the render limits, json.dumps (see
// value.h). Rank 0.
#include "coordinator/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include <nlohmann/json.hpp>

#include "coordinator/jinja/text.h"
#include "model/unicode.h"

namespace strata::jinja {

[[noreturn]] void Fail(int line, const std::string& msg, ErrorKind kind) { throw JinjaError{kind, line, msg}; }

std::string MiB(size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

thread_local Meter* t_meter = nullptr;

void Charge(int64_t units) {
  Meter* m = t_meter;
  if (m != nullptr && (m->work += units) > m->budget)
    Fail(m->line, "rendering needs more work than its budget (" + std::to_string(m->budget) +
                      " units: a loop too long, or strings or lists too large?)");
}

void CheckSize(size_t bytes, const char* what) {
  if (bytes > kMaxStringBytes && t_meter != nullptr)
    Fail(t_meter->line, std::string(what) + " larger than " + MiB(kMaxStringBytes));
}

// ── values ──

namespace {

// Containers know how deeply they nest: at most kMaxValueDepth. A
// namespace() counts as one level whatever it holds (it is mutable, and
// printing, comparing and tojson do not look inside it); the renderer frees
// namespaces one by one (~Renderer), so none is freed recursively.
int NestedDepth(const Value& v) { return v.depth; }
void CheckDepth(int depth) {
  if (depth > kMaxValueDepth)
    Fail(t_meter ? t_meter->line : 0, "lists and dicts nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
}

}  // namespace

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


namespace {

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

}  // namespace

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
Value FromJson(const nlohmann::ordered_json& j, int depth) {
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


}  // namespace strata::jinja
