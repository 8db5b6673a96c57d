// A Jinja2 subset, enough to render the chat templates models ship
// (tokenizer.chat_template / chat_template.jinja) byte for byte as
// transformers renders them. Runs on rank 0.
//
// The environment is transformers' (render_jinja_template): trim_blocks and
// lstrip_blocks on, autoescape off, the loopcontrols extension (break,
// continue), `{% generation %}` blocks rendered as their body, the globals
// raise_exception(msg) and strftime_now(fmt), and a tojson filter with
// json.dumps semantics (ensure_ascii=False, indent, separators, sort_keys).
// Values behave as Python's: str/list/dict methods, slicing, truthiness,
// repr() when a list is printed, Jinja's Undefined for missing keys.
//
// Supported: {{ }}, {% if/elif/else %}, {% for %} (unpacking, `if` filter,
// else, loop.*), {% set %} (names, tuples, namespace attributes, blocks),
// {% macro %}, {% break/continue %}, comments, `-`/`+` whitespace control,
// the usual filters and tests. Anything else (call blocks, includes,
// extends, ...) is an Unimplemented error naming the template line; errors
// while rendering (a failed raise_exception, an undefined attribute, a type
// error) name the line too. Nothing is silently rendered differently.
//
//   STRATA_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
//   nlohmann::ordered_json ctx = {{"messages", msgs}, {"add_generation_prompt", true}};
//   STRATA_ASSIGN_OR_RETURN(std::string prompt, t.Render(ctx));
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace strata::jinja {

struct TemplateNode;

class Template {
 public:
  // Parses `source` (newlines normalized to \n, one trailing newline dropped,
  // as jinja2 does). Syntax errors and unsupported tags fail here.
  static Result<Template> Parse(const std::string& source);
  // Renders with the JSON object's members as variables (objects keep their
  // key order, as Python dicts do).
  Result<std::string> Render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const TemplateNode> root_;
};

}  // namespace strata::jinja
