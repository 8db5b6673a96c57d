// The syntax tree of a template and jinja2's parser (parser.py): statements
// (if, for, set, macro, break, continue), and expressions with jinja2's
// operator precedence. Filter and test names are looked up in the builtins'
// table (builtins.h) here, so an unknown one fails at parse time, as in
// jinja2. Rank 0.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/jinja/builtins.h"
#include "coordinator/jinja/lexer.h"
#include "coordinator/jinja/value.h"

namespace strata::jinja {

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
  FilterFn filter = nullptr;     // kFilter: the filter `name` (builtins.h)
  TestFn test = nullptr;         // kTest: the test `name`
  bool negated = false;          // `is not`
  int depth = 1;                 // levels of this tree (at most kMaxParseNesting)
};

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

// The tree of the lexed template. Fails (JinjaError) on a syntax error, an
// unknown filter or test, or an unsupported tag (Unimplemented).
std::shared_ptr<TemplateNode> ParseTemplate(std::vector<Item> items);

}  // namespace strata::jinja
