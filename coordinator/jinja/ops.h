// Python's operators, subscripts, attributes and methods on template values:
// what `a + b`, `x in y`, `s[1:-1]`, `d.items()`, `s.split(',')` mean.
// Stateless: the renderer and the builtins both use them. Rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/jinja/value.h"

namespace strata::jinja {

// callee(args) at `line`.
Value Call(const Value& callee, Args& a, int line);
// a OP b for ==, !=, <, >, <=, >=, in, not in.
bool CompareOp(const std::string& op, const Value& a, const Value& b, int line);
// x in container.
bool Contains(const Value& container, const Value& x, int line);
// a OP b for ~ + - * / // % **.
Value Binary(const std::string& op, const Value& a, const Value& b, int line);
// Python slicing of n elements: the indices a[start:stop:step] selects.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start, const Value& stop, const Value& step, int line);
// t[a:b:c].
Value Slice(const Value& t, const Value& a, const Value& b, const Value& c, int line);
// x[key]: jinja2's getitem first, getattr after.
Value GetItem(const Value& t, const Value& key, int line);
// x.name: Python's getattr (methods) first, the item after.
Value GetAttr(const Value& t, const std::string& name, int line);
// The bound method `name` of a str, dict or list; undefined when none.
Value StringMethod(const std::string& s, const std::string& name);
Value DictMethod(const Value& t, const std::string& name);
Value ListMethod(const Value& t, const std::string& name);

}  // namespace strata::jinja
