// The filters (`x | name(args)`) and tests (`x is name(args)`) of the
// template language, each a function in one table by name: the parser looks
// names up here (an unknown one fails at parse time, as in jinja2) and the
// renderer calls what it found. jinja2's semantics throughout, including the
// keyword names of each argument. Rank 0.
//
//   FilterFn f = FindFilter("join");         // null: no such filter
//   Value joined = f("join", items, args);
#pragma once

#include <string>
#include <string_view>

#include "coordinator/jinja/value.h"

namespace strata::jinja {

// `name` is the name the filter or test was called by (aliases such as
// d/default share one function); a.line the template line.
using FilterFn = Value (*)(const std::string& name, const Value& v, Args& a);
using TestFn = bool (*)(const std::string& name, const Value& v, Args& a);

// Null for a name strata does not implement.
FilterFn FindFilter(std::string_view name);
TestFn FindTest(std::string_view name);

}  // namespace strata::jinja
