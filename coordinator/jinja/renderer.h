// The tree-walking renderer: statements (output, if, for with loop.*, set,
// macros, break/continue) and expressions evaluated over scopes, with the
// globals transformers provides (raise_exception, strftime_now, range,
// namespace, dict). Every step is charged to the render's Meter (value.h).
// Rank 0.
//
//   Meter meter;  t_meter = &meter;   // Template::Render does this
//   Renderer r(context, meter);
//   std::string out = r.Run(*root);
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "coordinator/jinja/parser.h"
#include "coordinator/jinja/value.h"

namespace strata::jinja {

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


class Renderer {
 public:
  // Rendering charges `meter` (the caller makes it the thread's t_meter).
  Renderer(const nlohmann::ordered_json& context, Meter& meter);
  // Breaks the reference cycles (a namespace holding itself, a macro held by
  // the scope it captured). Namespaces are emptied in the order they were
  // made and each is still held here while emptied, so freeing one never
  // frees a chain of them recursively.
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  std::string Run(const TemplateNode& body);

 private:
  // Counts the statements and expressions being evaluated inside each other.
  class Deeper;

  void Emit(std::string& out, const std::string& text);
  Flow Exec(const TemplateNode& n, const ScopeP& scope, std::string& out);
  void Assign(const std::vector<std::string>& targets, const Value& v, Scope& scope, int line);
  Flow ExecFor(const TemplateNode& n, const ScopeP& scope, std::string& out);
  Value MakeMacro(const TemplateNode& n, const ScopeP& defining);
  Value Eval(const Expr& e, const ScopeP& scope);
  Args EvalArgs(const Expr& e, size_t first, const ScopeP& scope);
  void InstallGlobals();

  Meter& meter_;
  ScopeP globals_, root_;
  std::vector<ScopeP> macro_scopes_;                // scopes that define macros (cycles to break)
  std::vector<std::shared_ptr<Object>> namespaces_;  // every namespace() made (cycles to break)
};

}  // namespace strata::jinja
