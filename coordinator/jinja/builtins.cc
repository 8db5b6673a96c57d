// The filter and test tables (see builtins.h). Rank 0.
#include "coordinator/jinja/builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cfenv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <limits>
#include <utility>

#include "coordinator/jinja/ops.h"
#include "coordinator/jinja/text.h"

namespace strata::jinja {
namespace {

// The argument called `key` (keyword) or at position `k`, else `dflt`.
Value ArgOr(const Args& a, size_t k, const char* key, Value dflt) {
  Value x = a.Get(k, key);
  return x.undefined() ? dflt : x;
}

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then index 0;
// undefined or None: the item itself.
std::function<Value(const Value&)> AttrGetter(int line, const Value& attr) {
  return [attr, line](const Value& item) {
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
}

// The order of sort, dictsort, min and max: ASCII strings compared
// lower-cased unless case_sensitive.
std::function<bool(const Value&, const Value&)> SortKeyLess(int line, bool case_sensitive) {
  return [case_sensitive, line](const Value& x, const Value& y) {
    if (!case_sensitive && x.is_string() && y.is_string() && IsAscii(x.s) && IsAscii(y.s))
      return Lower(x.s, line) < Lower(y.s, line);
    return Compare(x, y, line) < 0;
  };
}

// A test's one argument.
const Value& TestArg(const std::string& name, const Args& a) {
  if (a.pos.empty()) Fail(a.line, "test '" + name + "' needs an argument");
  return a.pos[0];
}

// Filters and tests named at render time (map, select, ...).
Value ApplyFilter(const std::string& name, const Value& v, Args& a) {
  FilterFn f = FindFilter(name);
  if (f == nullptr) Fail(a.line, "unknown filter '" + name + "'", ErrorKind::kUnimplemented);
  return f(name, v, a);
}
bool ApplyTest(const std::string& name, const Value& v, Args& a) {
  TestFn t = FindTest(name);
  if (t == nullptr) Fail(a.line, "unknown test '" + name + "'", ErrorKind::kUnimplemented);
  return t(name, v, a);
}

// ── filters ──

Value FilterLength(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Value::Int(Length(v, line));
}

Value FilterString(const std::string& name, const Value& v, Args& a) {
  return Value::Str(Str(v));
}

Value FilterSafe(const std::string& name, const Value& v, Args& a) {
  return v;
}

Value FilterTrim(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("trim", 1, {"chars"});
  Value c = a.Get(0, "chars");
  if (c.undefined() || c.none()) return Value::Str(Strip(Str(v), nullptr, true, true));
  std::u32string chars = CharsArg(c, line);
  return Value::Str(Strip(Str(v), &chars, true, true));
}

Value FilterTojson(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle st;
  st.ensure_ascii = Truthy(ArgOr(a, 0, "ensure_ascii", Value::Bool(false)));
  Value indent = ArgOr(a, 1, "indent", Value::None());
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
  Value seps = ArgOr(a, 2, "separators", Value::None());
  if (!seps.none()) {
    if (seps.kind != Value::Kind::kArray || seps.arr->size() != 2 || !(*seps.arr)[0].is_string() || !(*seps.arr)[1].is_string())
      Fail(line, "tojson: separators must be a pair of strings");
    st.item_sep = (*seps.arr)[0].s;
    st.key_sep = (*seps.arr)[1].s;
  }
  st.sort_keys = Truthy(ArgOr(a, 3, "sort_keys", Value::Bool(false)));
  std::string out;
  DumpJson(v, st, 0, out, line);
  return Value::Str(out);
}

// lower, upper, title, capitalize: one str operation of text.h on the value.
template <std::string (*Op)(const std::string&, int)>
Value StrFilter(const std::string& name, const Value& v, Args& a) {
  return Value::Str(Op(Str(v), a.line));
}

Value FilterDefault(const std::string& name, const Value& v, Args& a) {
  a.Expect(name, 2, {"default_value", "boolean"});
  Value dflt = ArgOr(a, 0, "default_value", Value::Str(""));
  const bool boolean = Truthy(ArgOr(a, 1, "boolean", Value::Bool(false)));
  if (v.undefined() || (boolean && !Truthy(v))) return dflt;
  return v;
}

Value FilterJoin(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("join", 2, {"d", "attribute"});
  Value sep = ArgOr(a, 0, "d", Value::Str(""));
  auto get = AttrGetter(line, a.Get(1, "attribute"));
  std::string out;
  bool first = true;
  for (const Value& x : Iterate(v, line)) {
    out += (first ? "" : Str(sep)) + Str(get(x));
    CheckSize(out.size(), "join's result");
    first = false;
  }
  return Value::Str(out);
}

Value FilterFirstLast(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  Array items = Iterate(v, line);
  if (items.empty()) return Value::Undefined("no " + name + " item: the sequence is empty");
  return name == "first" ? items.front() : items.back();
}

Value FilterList(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Value::List(Iterate(v, line));
}

Value FilterItems(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  if (v.undefined()) return Value::List({});
  if (v.kind != Value::Kind::kObject || v.obj->is_namespace) Fail(line, std::string("items: expected a dict, got ") + TypeName(v));
  Array r;
  for (const auto& [k, x] : v.obj->items) r.push_back(Value::List({Value::Str(k), x}, true));
  return Value::List(std::move(r));
}

Value FilterDictsort(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("dictsort", 3, {"case_sensitive", "by", "reverse"});
  if (v.kind != Value::Kind::kObject) Fail(line, std::string("dictsort: expected a dict, got ") + TypeName(v));
  const bool cs = Truthy(ArgOr(a, 0, "case_sensitive", Value::Bool(false)));
  const Value by = ArgOr(a, 1, "by", Value::Str("key"));
  const bool rev = Truthy(ArgOr(a, 2, "reverse", Value::Bool(false)));
  const size_t pos = by.is_string() && by.s == "value" ? 1 : 0;
  Array r;
  for (const auto& [k, x] : v.obj->items) r.push_back(Value::List({Value::Str(k), x}, true));
  auto less = SortKeyLess(line, cs);
  std::stable_sort(r.begin(), r.end(), [&](const Value& x, const Value& y) {
    return rev ? less((*y.arr)[pos], (*x.arr)[pos]) : less((*x.arr)[pos], (*y.arr)[pos]);
  });
  return Value::List(std::move(r));
}

Value FilterSort(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("sort", 3, {"reverse", "case_sensitive", "attribute"});
  const bool rev = Truthy(ArgOr(a, 0, "reverse", Value::Bool(false)));
  const bool cs = Truthy(ArgOr(a, 1, "case_sensitive", Value::Bool(false)));
  auto get = AttrGetter(line, a.Get(2, "attribute"));
  Array r = Iterate(v, line);
  auto less = SortKeyLess(line, cs);
  std::stable_sort(r.begin(), r.end(), [&](const Value& x, const Value& y) {
    return rev ? less(get(y), get(x)) : less(get(x), get(y));
  });
  return Value::List(std::move(r));
}

Value FilterReverse(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  if (v.is_string()) {
    std::u32string u = Decode(v.s);
    std::reverse(u.begin(), u.end());
    return Value::Str(Encode(u));
  }
  Array r = Iterate(v, line);
  std::reverse(r.begin(), r.end());
  return Value::List(std::move(r));
}

Value FilterUnique(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("unique", 2, {"case_sensitive", "attribute"});
  const bool cs = Truthy(ArgOr(a, 0, "case_sensitive", Value::Bool(false)));
  auto get = AttrGetter(line, a.Get(1, "attribute"));
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

Value FilterMap(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  Array r;
  Value attr = a.Get(99, "attribute");
  if (!attr.undefined()) {
    auto get = AttrGetter(line, attr);
    Value dflt = a.Get(99, "default");
    for (const Value& x : Iterate(v, line)) {
      Value y = get(x);
      r.push_back(y.undefined() && !dflt.undefined() ? dflt : y);
    }
    return Value::List(std::move(r));
  }
  if (a.pos.empty() || !a.pos[0].is_string()) Fail(line, "map: expected a filter name or attribute=");
  const std::string f = a.pos[0].s;
  if (!FindFilter(f)) Fail(line, "unknown filter '" + f + "'", ErrorKind::kUnimplemented);
  Args rest;
  rest.line = line;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const Value& x : Iterate(v, line)) r.push_back(ApplyFilter(f, x, rest));
  return Value::List(std::move(r));
}

Value FilterSelectReject(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  const bool attr_form = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  size_t k = 0;
  std::function<Value(const Value&)> get = [](const Value& x) { return x; };
  if (attr_form) {
    if (a.pos.empty()) Fail(line, name + ": expected an attribute name");
    get = AttrGetter(line, a.pos[0]);
    k = 1;
  }
  std::string test;
  Args targs;
  targs.line = line;
  if (k < a.pos.size()) {
    if (!a.pos[k].is_string()) Fail(line, name + ": expected a test name");
    test = a.pos[k].s;
    if (!FindTest(test)) Fail(line, "unknown test '" + test + "'", ErrorKind::kUnimplemented);
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

Value FilterReplace(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("replace", 3, {"old", "new", "count"});
  Value from = a.Get(0, "old"), to = a.Get(1, "new"), cnt = a.Get(2, "count");
  if (from.undefined() || to.undefined()) Fail(line, "replace: expected old and new strings");
  return Value::Str(Replace(Str(v), Str(from), Str(to), cnt.undefined() || cnt.none() ? -1 : cnt.AsInt()));
}

Value FilterEscape(const std::string& name, const Value& v, Args& a) {
  return Value::Str(HtmlEscape(Str(v)));
}

Value FilterIndent(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("indent", 3, {"width", "first", "blank"});
  Value width = ArgOr(a, 0, "width", Value::Int(4));
  const bool first = Truthy(ArgOr(a, 1, "first", Value::Bool(false)));
  const bool blank = Truthy(ArgOr(a, 2, "blank", Value::Bool(false)));
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

Value FilterInt(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  Value dflt = ArgOr(a, 0, "default", Value::Int(0));
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

Value FilterFloat(const std::string& name, const Value& v, Args& a) {
  Value dflt = ArgOr(a, 0, "default", Value::Float(0.0));
  if (v.numeric()) return Value::Float(v.AsDouble());
  if (v.is_string()) {
    std::string t = Strip(v.s, nullptr, true, true);
    char* end = nullptr;
    double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && *end == 0) return Value::Float(d);
  }
  return dflt;
}

Value FilterAbs(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  if (!v.numeric()) Fail(line, std::string("abs: bad operand type '") + TypeName(v) + "'");
  if (v.integral()) {
    CheckOverflow(v.AsInt() == std::numeric_limits<int64_t>::min(), "abs", line);
    return Value::Int(v.AsInt() < 0 ? -v.AsInt() : v.AsInt());
  }
  return Value::Float(std::fabs(v.f));
}

Value FilterRound(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("round", 2, {"precision", "method"});
  if (!v.numeric()) Fail(line, std::string("round: bad operand type '") + TypeName(v) + "'");
  const int64_t prec = ArgOr(a, 0, "precision", Value::Int(0)).AsInt();
  const std::string method = Str(ArgOr(a, 1, "method", Value::Str("common")));
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

Value FilterSum(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("sum", 2, {"attribute", "start"});
  auto get = AttrGetter(line, a.Get(0, "attribute"));
  Value acc = ArgOr(a, 1, "start", Value::Int(0));
  for (const Value& x : Iterate(v, line)) acc = Binary("+", acc, get(x), line);
  return acc;
}

Value FilterMinMax(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect(name, 2, {"case_sensitive", "attribute"});
  const bool cs = Truthy(ArgOr(a, 0, "case_sensitive", Value::Bool(false)));
  auto get = AttrGetter(line, a.Get(1, "attribute"));
  Array items = Iterate(v, line);
  if (items.empty()) return Value::Undefined("no " + name + " item: the sequence is empty");
  auto less = SortKeyLess(line, cs);
  Value best = items[0];
  for (size_t k = 1; k < items.size(); ++k) {
    bool better = name == "min" ? less(get(items[k]), get(best)) : less(get(best), get(items[k]));
    if (better) best = items[k];
  }
  return best;
}

Value FilterAttr(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  if (a.pos.empty() || !a.pos[0].is_string()) Fail(line, "attr: expected an attribute name");
  return GetAttr(v, a.pos[0].s, line);
}

// jinja2 3.1.2's truncate, wordcount, striptags (markupsafe 2.1.2), center
// and batch; tests/unit/test_jinja.cc and tests/e2e/test_templates.py
// compare them with jinja2.

Value FilterTruncate(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("truncate", 4, {"length", "killwords", "end", "leeway"});
  const Value length = ArgOr(a, 0, "length", Value::Int(255));
  const bool killwords = Truthy(ArgOr(a, 1, "killwords", Value::Bool(false)));
  const Value end = ArgOr(a, 2, "end", Value::Str("..."));
  Value leeway = ArgOr(a, 3, "leeway", Value::None());
  if (leeway.none()) leeway = Value::Int(5);  // jinja2's policy truncate.leeway
  if (!length.integral() || !leeway.integral()) Fail(line, "truncate: length and leeway must be integers");
  if (!end.is_string()) Fail(line, std::string("truncate: end must be a string, got ") + TypeName(end));
  const int64_t end_len = Length(end, line);
  if (length.AsInt() < end_len)
    Fail(line, "truncate: expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length.AsInt()));
  if (leeway.AsInt() < 0) Fail(line, "truncate: expected leeway >= 0, got " + std::to_string(leeway.AsInt()));
  int64_t limit = 0;
  CheckOverflow(__builtin_add_overflow(length.AsInt(), leeway.AsInt(), &limit), "+", line);
  if (!v.is_string()) {
    // jinja2 hands back anything short enough as it is; cutting needs a str.
    const bool sized =
        v.undefined() || v.kind == Value::Kind::kArray || (v.kind == Value::Kind::kObject && !v.obj->is_namespace);
    if (sized && Length(v, line) <= limit) return v;
    Fail(line, std::string("truncate: expected a string, got ") + TypeName(v));
  }
  return Value::Str(Truncate(v.s, length.AsInt(), killwords, end.s, leeway.AsInt()));
}

Value FilterWordcount(const std::string& name, const Value& v, Args& a) {
  a.Expect("wordcount", 0, {});
  return Value::Int(WordCount(Str(v)));
}

Value FilterStriptags(const std::string& name, const Value& v, Args& a) {
  a.Expect("striptags", 0, {});
  return Value::Str(StripTags(Str(v)));
}

Value FilterCenter(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("center", 1, {"width"});
  const Value width = ArgOr(a, 0, "width", Value::Int(80));
  if (!width.integral()) Fail(line, std::string("center: width must be an integer, got ") + TypeName(width));
  return Value::Str(Center(Str(v), width.AsInt()));
}

Value FilterBatch(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  a.Expect("batch", 2, {"linecount", "fill_with"});
  const Value count = a.Get(0, "linecount");
  if (!count.integral()) Fail(line, "batch: linecount must be an integer");
  const int64_t n = count.AsInt();
  const Value fill = a.Get(1, "fill_with");
  // As jinja2's loop: a batch is handed out when the next item finds it
  // full (so linecount <= 0 gives an empty first batch, then one with all).
  Array batches, cur;
  for (const Value& x : Iterate(v, line)) {
    if (static_cast<int64_t>(cur.size()) == n) {
      batches.push_back(Value::List(std::move(cur)));
      cur.clear();
    }
    cur.push_back(x);
  }
  if (!cur.empty()) {
    if (!fill.undefined() && !fill.none() && static_cast<int64_t>(cur.size()) < n) {
      if (n - static_cast<int64_t>(cur.size()) > (1 << 20)) Fail(line, "batch: linecount is too large to fill");
      while (static_cast<int64_t>(cur.size()) < n) {
        Charge(sizeof(Value));
        cur.push_back(fill);
      }
    }
    batches.push_back(Value::List(std::move(cur)));
  }
  return Value::List(std::move(batches));
}

// ── tests ──

bool TestDefined(const std::string& name, const Value& v, Args& a) {
  return !v.undefined();
}

bool TestUndefined(const std::string& name, const Value& v, Args& a) {
  return v.undefined();
}

bool TestNone(const std::string& name, const Value& v, Args& a) {
  return v.none();
}

bool TestBoolean(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kBool;
}

bool TestTrue(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kBool && v.b;
}

bool TestFalse(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kBool && !v.b;
}

bool TestInteger(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kInt;
}

bool TestFloat(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kFloat;
}

bool TestNumber(const std::string& name, const Value& v, Args& a) {
  return v.numeric();
}

bool TestString(const std::string& name, const Value& v, Args& a) {
  return v.is_string();
}

bool TestMapping(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kObject && !v.obj->is_namespace;
}

bool TestIterable(const std::string& name, const Value& v, Args& a) {
  return v.undefined() || v.is_string() || v.kind == Value::Kind::kArray ||
         (v.kind == Value::Kind::kObject && !v.obj->is_namespace);
}

bool TestSequence(const std::string& name, const Value& v, Args& a) {
  return v.is_string() || v.kind == Value::Kind::kArray || (v.kind == Value::Kind::kObject && !v.obj->is_namespace);
}

bool TestCallable(const std::string& name, const Value& v, Args& a) {
  return v.kind == Value::Kind::kCallable;
}

bool TestOddEven(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  if (!v.integral()) Fail(line, "test '" + name + "' needs an integer");
  return ((v.AsInt() % 2) != 0) == (name == "odd");
}

bool TestDivisibleby(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  const Value& d = TestArg(name, a);
  if (!v.integral() || !d.integral() || d.AsInt() == 0) Fail(line, "divisibleby needs non-zero integers");
  return v.AsInt() % d.AsInt() == 0;
}

bool TestEq(const std::string& name, const Value& v, Args& a) {
  return Equal(v, TestArg(name, a));
}

bool TestNe(const std::string& name, const Value& v, Args& a) {
  return !Equal(v, TestArg(name, a));
}

bool TestLt(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Compare(v, TestArg(name, a), line) < 0;
}

bool TestLe(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Compare(v, TestArg(name, a), line) <= 0;
}

bool TestGt(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Compare(v, TestArg(name, a), line) > 0;
}

bool TestGe(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Compare(v, TestArg(name, a), line) >= 0;
}

bool TestIn(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return Contains(TestArg(name, a), v, line);
}

bool TestLower(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return v.is_string() && Lower(v.s, line) == v.s;
}

bool TestUpper(const std::string& name, const Value& v, Args& a) {
  const int line = a.line;
  return v.is_string() && Upper(v.s, line) == v.s;
}

bool TestEscaped(const std::string& name, const Value& v, Args& a) {
  return false;
}

bool TestSameas(const std::string& name, const Value& v, Args& a) {
  const Value& o = TestArg(name, a);
  if (v.kind != o.kind) return false;
  if (v.kind == Value::Kind::kArray) return v.arr == o.arr;
  if (v.kind == Value::Kind::kObject) return v.obj == o.obj;
  return Equal(v, o);
}

template <typename Fn>
struct Named {
  const char* name;
  Fn fn;
};

// Sorted by name (FindFilter / FindTest search them).
constexpr Named<FilterFn> kFilters[] = {
    {"abs", FilterAbs}, {"attr", FilterAttr}, {"batch", FilterBatch}, {"capitalize", StrFilter<Capitalize>},
    {"center", FilterCenter}, {"count", FilterLength}, {"d", FilterDefault}, {"default", FilterDefault},
    {"dictsort", FilterDictsort}, {"e", FilterEscape}, {"escape", FilterEscape}, {"first", FilterFirstLast},
    {"float", FilterFloat}, {"forceescape", FilterEscape}, {"indent", FilterIndent}, {"int", FilterInt},
    {"items", FilterItems}, {"join", FilterJoin}, {"last", FilterFirstLast}, {"length", FilterLength},
    {"list", FilterList}, {"lower", StrFilter<Lower>}, {"map", FilterMap}, {"max", FilterMinMax}, {"min", FilterMinMax},
    {"reject", FilterSelectReject}, {"rejectattr", FilterSelectReject}, {"replace", FilterReplace}, {"reverse", FilterReverse},
    {"round", FilterRound}, {"safe", FilterSafe}, {"select", FilterSelectReject}, {"selectattr", FilterSelectReject},
    {"sort", FilterSort}, {"string", FilterString}, {"striptags", FilterStriptags}, {"sum", FilterSum},
    {"title", StrFilter<Title>}, {"tojson", FilterTojson}, {"trim", FilterTrim}, {"truncate", FilterTruncate},
    {"unique", FilterUnique}, {"upper", StrFilter<Upper>}, {"wordcount", FilterWordcount},
};

constexpr Named<TestFn> kTests[] = {
    {"!=", TestNe}, {"<", TestLt}, {"<=", TestLe}, {"==", TestEq}, {">", TestGt}, {">=", TestGe},
    {"boolean", TestBoolean}, {"callable", TestCallable}, {"defined", TestDefined},
    {"divisibleby", TestDivisibleby}, {"eq", TestEq}, {"equalto", TestEq}, {"escaped", TestEscaped},
    {"even", TestOddEven}, {"false", TestFalse}, {"float", TestFloat}, {"ge", TestGe}, {"greaterthan", TestGt},
    {"gt", TestGt}, {"in", TestIn}, {"integer", TestInteger}, {"iterable", TestIterable}, {"le", TestLe},
    {"lessthan", TestLt}, {"lower", TestLower}, {"lt", TestLt}, {"mapping", TestMapping}, {"ne", TestNe},
    {"none", TestNone}, {"number", TestNumber}, {"odd", TestOddEven}, {"sameas", TestSameas},
    {"sequence", TestSequence}, {"string", TestString}, {"true", TestTrue}, {"undefined", TestUndefined},
    {"upper", TestUpper},
};

template <typename Fn, size_t N>
Fn Find(const Named<Fn> (&table)[N], std::string_view name) {
  auto it = std::lower_bound(std::begin(table), std::end(table), name,
                             [](const Named<Fn>& e, std::string_view n) { return std::string_view(e.name) < n; });
  return it != std::end(table) && std::string_view(it->name) == name ? it->fn : nullptr;
}

}  // namespace

FilterFn FindFilter(std::string_view name) { return Find(kFilters, name); }
TestFn FindTest(std::string_view name) { return Find(kTests, name); }

}  // namespace strata::jinja
