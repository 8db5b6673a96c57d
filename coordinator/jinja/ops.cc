// Python's operators, subscripts, attributes and methods (see ops.h). Rank 0.
#include "coordinator/jinja/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "coordinator/jinja/text.h"

namespace strata::jinja {
namespace {

// A method that would mutate a value: refused, as jinja2's sandbox does.
Value Unsafe(const std::string& what) {
  return Value::Fn([what](Args& a) -> Value {
    Fail(a.line, what + " is not allowed: chat templates render in an immutable sandbox (as transformers does)");
  });
}

}  // namespace

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

}  // namespace strata::jinja
