// The values a chat template computes with, as Python holds them (None,
// bool, int, float, str, list/tuple, dict, namespace(), functions), with
// Python's str(), repr(), truthiness, equality and ordering, json.dumps for
// the tojson filter, and the limits every render is held to. Rank 0.
//
// Errors are thrown as JinjaError (kind, line, message) inside the engine and
// turned into a Status at its two entry points (Template::Parse, Render in
// coordinator/jinja.cc): a template is a deeply recursive structure and every
// step can fail, so an exception that carries the line is far clearer than
// threading Result through each of them. Nothing escapes the engine as an
// exception.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace strata::jinja {

// ───────────────────────────── errors ─────────────────────────────

struct JinjaError {
  ErrorKind kind;
  int line;
  std::string message;
};

[[noreturn]] void Fail(int line, const std::string& msg, ErrorKind kind = ErrorKind::kInvalidArgument);

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

std::string MiB(size_t bytes);

// The running render's account (one per Render call, on its thread).
struct Meter {
  int64_t work = 0, budget = kWorkBudget;
  int depth = 0;  // statements and expressions being evaluated
  int line = 0;   // the template line being rendered
};
extern thread_local Meter* t_meter;  // null while parsing: nothing is charged

// Charges the running render `units` of work (nothing while parsing).
void Charge(int64_t units);
// A string about to become a value or the output: at most kMaxStringBytes.
void CheckSize(size_t bytes, const char* what);

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

const char* TypeName(const Value& v);  // Python's type name: "str", "list", "dict", ...

// ── Python's str() and repr() ──

// float.__repr__: the shortest string that reads back to the same double.
std::string PyFloat(double d);
std::string PyStrRepr(const std::string& s);
std::string Str(const Value& v);
std::string Repr(const Value& v);

// ── truthiness, equality, ordering, iteration ──

bool Truthy(const Value& v);
bool Equal(const Value& a, const Value& b);
[[noreturn]] void FailUndefined(const Value& v, int line);
// a < b as Python orders numbers, strings (by code point) and lists: -1, 0, 1.
int Compare(const Value& a, const Value& b, int line);
// The items a for loop (or list()) sees.
Array Iterate(const Value& v, int line);
int64_t Length(const Value& v, int line);

// Int arithmetic as Python's, within int64: beyond it (Python would grow the
// integer) an Unimplemented error rather than a wrapped value.
void CheckOverflow(bool overflow, const std::string& op, int line);
// A float as an int (Python's int(x)): finite and within int64.
int64_t FloatToInt(double d, int line);

// ── json.dumps (transformers' tojson filter) ──

struct JsonStyle {
  bool ensure_ascii = false;
  bool indent = false;
  std::string indent_str;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};
void DumpJson(const Value& v, const JsonStyle& st, int depth, std::string& out, int line);
// The context's values (the conversation): nested at most kMaxValueDepth.
Value FromJson(const nlohmann::ordered_json& j, int depth = 0);

}  // namespace strata::jinja
