// The Jinja2 subset of jinja.h: its two entry points over the engine in
// coordinator/jinja/ (lexer, parser, renderer, values, builtins), where
// errors are JinjaError exceptions that carry the template line; here they
// become a Status. Rank 0.
//
//   coordinator/jinja/lexer.*     jinja2's lexer and whitespace rules
//   coordinator/jinja/parser.*    the syntax tree and jinja2's parser
//   coordinator/jinja/renderer.*  statements and expressions over scopes
//   coordinator/jinja/builtins.*  one table of filters and one of tests
//   coordinator/jinja/ops.*       Python's operators, subscripts and methods
//   coordinator/jinja/value.*     Python values, json.dumps, the limits
//   coordinator/jinja/text.*      Python's str operations (UTF-8)
#include "coordinator/jinja.h"

#include "coordinator/jinja/lexer.h"
#include "coordinator/jinja/parser.h"
#include "coordinator/jinja/renderer.h"
#include "coordinator/jinja/value.h"

namespace strata::jinja {
namespace {

Status ToStatus(const JinjaError& e, const char* stage) {
  return Status(e.kind, std::string("chat template line ") + std::to_string(e.line) + ": " + e.message +
                            (stage[0] ? std::string(" (") + stage + ")" : ""));
}

}  // namespace

Result<Template> Template::Parse(const std::string& source) {
  try {
    Template t;
    t.root_ = ParseTemplate(Lex(source));
    return t;
  } catch (const JinjaError& e) {
    return ToStatus(e, "");
  }
}

Result<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  if (!root_) return FailedPrecondition("rendering a template that was not parsed");
  Meter meter;
  Meter* const outer = t_meter;
  t_meter = &meter;
  struct Restore {
    Meter* outer;
    ~Restore() { t_meter = outer; }
  } restore{outer};
  try {
    Renderer r(context, meter);
    return r.Run(*root_);
  } catch (const JinjaError& e) {
    return ToStatus(e, "");
  }
}

}  // namespace strata::jinja
