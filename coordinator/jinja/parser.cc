// jinja2's parser (see parser.h). Rank 0.
#include "coordinator/jinja/parser.h"

#include <algorithm>
#include <unordered_set>

namespace strata::jinja {
namespace {

using NodeP = std::shared_ptr<TemplateNode>;

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
        f->filter = FindFilter(f->name);
        if (f->filter == nullptr) Fail(line, "unknown filter '" + f->name + "'", ErrorKind::kUnimplemented);
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
        t->test = FindTest(t->name);
        if (t->test == nullptr) Fail(line, "unknown test '" + t->name + "'", ErrorKind::kUnimplemented);
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


}  // namespace

std::shared_ptr<TemplateNode> ParseTemplate(std::vector<Item> items) {
  return Parser(std::move(items)).ParseTemplate();
}

}  // namespace strata::jinja
