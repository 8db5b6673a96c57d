// The renderer (see renderer.h). Rank 0.
#include "coordinator/jinja/renderer.h"

#include <algorithm>
#include <ctime>

#include <nlohmann/json.hpp>

#include "coordinator/jinja/ops.h"

namespace strata::jinja {

Renderer::Renderer(const nlohmann::ordered_json& context, Meter& meter) : meter_(meter) {
  globals_ = std::make_shared<Scope>();
  InstallGlobals();
  root_ = std::make_shared<Scope>();
  root_->parent = globals_;
  if (context.is_object())
    for (auto it = context.begin(); it != context.end(); ++it) root_->vars[it.key()] = FromJson(it.value());
}

Renderer::~Renderer() {
  for (const auto& ns : namespaces_) ns->items.clear();
  for (const ScopeP& s : macro_scopes_) s->vars.clear();
}

std::string Renderer::Run(const TemplateNode& body) {
  std::string out;
  Flow f = Exec(body, root_, out);
  (void)f;
  return out;
}

// ── statements ──

// Counts the statements and expressions being evaluated inside each other.
class Renderer::Deeper {
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

    Meter& m_;
};

void Renderer::Emit(std::string& out, const std::string& text) {
  Charge(static_cast<int64_t>(text.size()));
  if (out.size() + text.size() > kMaxStringBytes) Fail(meter_.line, "output larger than " + MiB(kMaxStringBytes));
  out += text;
}

Flow Renderer::Exec(const TemplateNode& n, const ScopeP& scope, std::string& out) {
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

void Renderer::Assign(const std::vector<std::string>& targets, const Value& v, Scope& scope, int line) {
  if (targets.size() == 1) {
    scope.vars[targets[0]] = v;
    return;
  }
  Array items = Iterate(v, line);
  if (items.size() != targets.size())
    Fail(line, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names");
  for (size_t k = 0; k < targets.size(); ++k) scope.vars[targets[k]] = items[k];
}

Flow Renderer::ExecFor(const TemplateNode& n, const ScopeP& scope, std::string& out) {
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

Value Renderer::MakeMacro(const TemplateNode& n, const ScopeP& defining) {
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

Value Renderer::Eval(const Expr& e, const ScopeP& scope) {
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
      return e.filter(e.name, target, a);
    }
    case Expr::kTest: {
      Value target = Eval(*e.items[0], scope);
      Args a = EvalArgs(e, 1, scope);
      bool r = e.test(e.name, target, a);
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

Args Renderer::EvalArgs(const Expr& e, size_t first, const ScopeP& scope) {
  Args a;
  a.line = e.line;
  for (size_t k = first; k < e.items.size(); ++k) a.pos.push_back(Eval(*e.items[k], scope));
  for (const auto& [name, x] : e.kwargs) a.kw.emplace_back(name, Eval(*x, scope));
  meter_.line = e.line;
  return a;
}

// ── globals ──

void Renderer::InstallGlobals() {
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

}  // namespace strata::jinja
