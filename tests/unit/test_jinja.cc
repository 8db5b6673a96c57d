// The Jinja engine (coordinator/jinja.h) against jinja2: each case's expected
// output was rendered by Python's jinja2 3.1 in transformers' environment
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// json.dumps tojson); the shared templates are checked against jinja2 at test
// time by tests/e2e/test_templates.py. Also: errors name the template line,
// and the reasoning / answer split of generated text.
#include <gtest/gtest.h>

#include "coordinator/chat_template.h"
#include "coordinator/jinja.h"

namespace strata {
namespace {

struct Case {
  const char* source;
  const char* context;  // JSON
  const char* want;     // jinja2's output
};

const Case kCases[] = {
    {R"J({{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }})J",
     R"J({})J",
     R"J(7|9|3|-4|1|2|3.5|1024)J"},
    {R"J({{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ 1.5e-5 }}|{{ 3 / 3 }}|{{ 100.0 * 3 }})J",
     R"J({})J",
     R"J(1.0|0.30000000000000004|1e+16|1.5e-05|1.0|300.0)J"},
    {R"J({{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ [1, 'x', none, true, 1.5] }}|{{ {'k': 'v', 'n': [1]} }}|{{ ('a',) }})J",
     R"J({})J",
     R"J(a1NoneTrue|ababab|[1, 'x', None, True, 1.5]|{'k': 'v', 'n': [1]}|('a',))J"},
    {R"J({{ 'x' if false }}|{{ 'y' if 0 else 'z' }}|{{ not 1 == 2 }}|{{ 1 < 2 < 3 }}|{{ 'b' in 'abc' }}|{{ 3 not in [1, 2] }}|{{ 'k' in {'k': 1} }})J",
     R"J({})J",
     R"J(|z|True|True|True|True|True)J"},
    {R"J({{ s[1:3] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ l[1:] }}|{{ l[::-2] }}|{{ s[0] }}|{{ l[-1] }}|{{ s | length }})J",
     R"J({"s": "héllo→", "l": [1, 2, 3, 4, 5]})J",
     R"J(él|→olléh|o→|[2, 3, 4, 5]|[5, 3, 1]|h|5|6)J"},
    {R"J({{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a-b-c'.split('-', 1) }}|{{ 'abc'.replace('b', 'BB') }}|{{ 'abc'.startswith(('x', 'a')) }}|{{ 'abc'.endswith('bc') }}|{{ 'Hello World'.upper() }}|{{ 'hello world'.title() }}|{{ 'ab'.find('b') }})J",
     R"J({})J",
     R"J(a b|a|['a', 'b', '', 'c']|['a', 'b']|['a', 'b-c']|aBBc|True|True|HELLO WORLD|Hello World|1)J"},
    {R"J({{ d.items() | list }}|{{ d.keys() | list }}|{{ d.get('a') }}|{{ d.get('z', 'dflt') }}|{{ d.a }}|{{ d['b'] }}|{{ d.zz is defined }})J",
     R"J({"d": {"a": 1, "b": [2]}})J",
     R"J([('a', 1), ('b', [2])]|['a', 'b']|1|dflt|1|[2]|False)J"},
    {R"J({{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true) }}|{{ 'é"\n' | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=2) }})J",
     R"J({"x": {"b": [1, 2.5, null, true], "a": {"c": "d"}, "e": {}}})J",
     R"J({"b": [1, 2.5, null, true], "a": {"c": "d"}, "e": {}}|{
  "b": [
    1,
    2.5,
    null,
    true
  ],
  "a": {
    "c": "d"
  },
  "e": {}
}|{"a": {"c": "d"}, "b": [1, 2.5, null, true], "e": {}}|"é\"\n"|"\u00e9"|[])J"},
    {R"J({{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort }}|{{ ['b', 'A', 'c'] | sort(case_sensitive=true) }}|{{ l | sort(attribute='n', reverse=true) | map(attribute='n') | list }}|{{ [1, 2, 2, 1] | unique | list }}|{{ l | selectattr('n', 'equalto', 2) | list }}|{{ [1, none, 2] | reject('none') | list }}|{{ [1,2,3] | select('odd') | list }})J",
     R"J({"l": [{"n": 1}, {"n": 3}, {"n": 2}]})J",
     R"J([1, 2, 3]|['A', 'b', 'c']|['A', 'b', 'c']|[3, 2, 1]|[1, 2]|[{'n': 2}]|[1, 2]|[1, 3])J"},
    {R"J({{ x | default('d') }}|{{ '' | default('d', true) }}|{{ [1,2] | join(', ') }}|{{ [1,2] | first }}|{{ [1,2] | last }}|{{ '  t ' | trim }}|{{ 'a
b' | indent(2, first=true) }}|{{ '3' | int + 1 }}|{{ '2.5' | float }}|{{ -3 | abs }}|{{ 2.5 | round }}|{{ 3.14159 | round(2) }}|{{ [1,2,3] | sum }}|{{ [3,1,2] | max }}|{{ 'ab' | upper }}|{{ '<a>' | e }}|{{ 'x' | string }}|{{ {'b': 1, 'a': 2} | dictsort }}|{{ 'abc' | reverse }}|{{ 5 | string | length }})J",
     R"J({})J",
     R"J(d|d|1, 2|1|2|t|  a
  b|4|2.5|3|2.0|3.14|6|3|AB|&lt;a&gt;|x|[('a', 2), ('b', 1)]|cba|1)J"},
    {R"J({% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }};{% endfor %})J",
     R"J({"l": ["p", "q", "r"]})J",
     R"J(1/0/3/True/False/3//q/a;2/1/2/False/False/3/p/r/b;3/2/1/False/True/3/q//a;)J"},
    {R"J({% for x in l if x > 1 %}{{ x }}{% if x == 3 %}{% break %}{% endif %}{% else %}none{% endfor %}|{% for x in [] %}{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}|{% for x in l %}{% if x is even %}{% continue %}{% endif %}{{ x }}{% endfor %})J",
     R"J({"l": [1, 2, 3, 4], "d": {"a": 1, "b": 2}})J",
     R"J(23|empty|a=1,b=2,|13)J"},
    {R"J({% set ns = namespace(n=0, s='') %}{% for x in l %}{% set ns.n = ns.n + x %}{% set inner = x %}{% endfor %}{{ ns.n }}|{{ inner is defined }}|{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set blk %}B{{ a }}{% endset %}{{ blk }})J",
     R"J({"l": [1, 2, 3]})J",
     R"J(6|False|12|B1)J"},
    {R"J({% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }}|{{ greet('B', punct='?') }}|{{ greet(name='C') }})J",
     R"J({})J",
     R"J(Hi A!|Hi B?|Hi C!)J"},
    {R"J(a
  {% if true %}
    b
  {% endif %}
c
{%- if true %} d {% endif -%}
 e {{- ' f ' -}} g
{# comment #}
h
  {%+ if true %}i{% endif %}
{% if true +%}
j{% endif %}
)J",
     R"J({})J",
     R"J(a
    b
c d e f g
h
  i
j)J"},
    {R"J({{ x is string }}{{ 1 is number }}{{ true is number }}{{ 1 is integer }}{{ none is none }}{{ d is mapping }}{{ 's' is iterable }}{{ u is iterable }}{{ l is sequence }}{{ u is defined }}{{ false is false }}{{ 0 is false }}{{ 3 is divisibleby 3 }}{{ 'a' is in 'abc' }}{{ x is not none }})J",
     R"J({"x": "s", "d": {}, "l": []})J",
     R"J(TrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueFalseTrueTrueTrue)J"},
    {R"J({{ "tab\there" }}|{{ 'q\'s' }}|{{ '\u00e9' }}|{{ 'a' 'b' }}|{{ [1,2,3,][1] }}|{{ {'a': 1,}['a'] }}|{{ range(3) | list }}|{{ range(1, 10, 3) | list }}|{{ dict(a=1) }})J",
     R"J({})J",
     R"J(tab	here|q's|é|ab|2|1|[0, 1, 2]|[1, 4, 7]|{'a': 1})J"},    // truncate, wordcount, striptags (markupsafe 2.1.2), center, batch.
    {R"J({{ s | truncate(9) }}|{{ s | truncate(9, true) }}|{{ s | truncate(11) }}|{{ s | truncate(11, false, '...', 0) }}|{{ u | truncate(6, end='…', leeway=0) }}|{{ u | truncate(6, true, '', 0) }})J",
     R"J({"s": "foo bar baz qux", "u": "héllo wörld→ ünïcode"})J",
     R"J(foo...|foo ba...|foo bar baz qux|foo bar...|héllo…|héllo )J"},
    {R"J({{ s | wordcount }}|{{ u | wordcount }}|{{ 'a_b c-d 3.14' | wordcount }}|{{ none | wordcount }}|{{ '' | wordcount }})J",
     R"J({"s": "foo bar baz qux", "u": "日本語 テキスト naïve café ١٢٣"})J",
     R"J(4|5|5|1|0)J"},
    {R"J({{ h | striptags }})J",
     R"J({"h": "<p>Hi&nbsp;<b>there</b></p><!-- x\n-->  &lt;ok&gt; &amp &notit; &#x263A; &#128; &#0; AT&T"})J",
     R"J(Hi there <ok> & ¬it; ☺ € � AT&T)J"},
    {R"J([{{ 'ab' | center(7) }}|{{ 'ab' | center(8) }}|{{ 'abc' | center(8) }}|{{ 'é' | center(4) }}|{{ 42 | center(6) }}|{{ 'long' | center(2) }}])J",
     R"J({})J",
     R"J([   ab  |   ab   |  abc   | é  |  42  |long])J"},
    {R"J({{ l | batch(2) | list }}|{{ l | batch(2, 'x') | list }}|{{ 'abcde' | batch(3) | list }}|{{ l | batch(0) | list }}|{{ [] | batch(2, 0) | list }})J",
     R"J({"l": [1, 2, 3]})J",
     R"J([[1, 2], [3]]|[[1, 2], [3, 'x']]|[['a', 'b', 'c'], ['d', 'e']]|[[], [1, 2, 3]]|[])J"},
};

std::string Render(const std::string& source, const std::string& context_json = "{}") {
  auto t = jinja::Template::Parse(source);
  EXPECT_TRUE(t.ok()) << t.status().message();
  if (!t.ok()) return "<parse error>";
  auto out = t->Render(nlohmann::ordered_json::parse(context_json));
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : "<render error>";
}

Status RenderError(const std::string& source, const std::string& context_json = "{}") {
  auto t = jinja::Template::Parse(source);
  if (!t.ok()) return t.status();
  auto out = t->Render(nlohmann::ordered_json::parse(context_json));
  return out.ok() ? Status::Ok() : out.status();
}

TEST(Jinja, MatchesJinja2) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.source);
    EXPECT_EQ(Render(c.source, c.context), c.want);
  }
}

TEST(Jinja, WhitespaceControl) {
  // trim_blocks removes the newline after a block tag; lstrip_blocks the
  // indentation before it; '-' every whitespace; '+' keeps it.
  EXPECT_EQ(Render("{% if true %}\nx\n{% endif %}\ny"), "x\ny");
  EXPECT_EQ(Render("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(Render("{% if true +%}\nb{% endif %}"), "\nb");
  EXPECT_EQ(Render("  {{ 'v' }}"), "  v");  // variables are not lstripped
  EXPECT_EQ(Render("x\n"), "x");            // one trailing newline dropped
  EXPECT_EQ(Render("x\r\ny"), "x\ny");      // newlines normalized
  // A '}}' inside an open brace does not end the tag (jinja2: "{'a': {'b': 1}}").
  EXPECT_EQ(Render("{{ {'a': {'b': 1}} }}"), "{'a': {'b': 1}}");
}

TEST(Jinja, ErrorsNameTheLine) {
  Status st = RenderError("line 1\nline 2\n{{ 'a' + 1 }}");
  EXPECT_EQ(st.kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(st.message().find("line 3"), std::string::npos) << st.message();
  st = RenderError("\n{{ raise_exception('no system role') }}");
  EXPECT_NE(st.message().find("line 2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("no system role"), std::string::npos) << st.message();
  st = RenderError("{{ x | nosuchfilter }}");
  EXPECT_EQ(st.kind(), ErrorKind::kUnimplemented);
  EXPECT_NE(st.message().find("nosuchfilter"), std::string::npos);
  st = RenderError("a\n\n{% include 'x.jinja' %}");
  EXPECT_EQ(st.kind(), ErrorKind::kUnimplemented);
  EXPECT_NE(st.message().find("line 3"), std::string::npos) << st.message();
  st = RenderError("{% for x in y %}\n{{ x }}");
  EXPECT_NE(st.message().find("endfor"), std::string::npos) << st.message();
  st = RenderError("{{ missing.attr }}");
  EXPECT_NE(st.message().find("'missing' is undefined"), std::string::npos) << st.message();
  st = RenderError("{{ 'unterminated }}");
  EXPECT_FALSE(st.ok());
  st = RenderError("{% set l = [1] %}{{ l.append(2) }}");
  EXPECT_NE(st.message().find("sandbox"), std::string::npos) << st.message();
  st = RenderError("{% set d = {'a': 1} %}{% set d.a = 2 %}");
  EXPECT_NE(st.message().find("namespace"), std::string::npos) << st.message();
  st = RenderError("{{ 'É'.lower() }}");
  EXPECT_EQ(st.kind(), ErrorKind::kUnimplemented);
  st = RenderError("{{ 1 // 0 }}");
  EXPECT_FALSE(st.ok());
  st = RenderError("{% for a, b in [[1, 2, 3]] %}{% endfor %}");
  EXPECT_NE(st.message().find("unpack"), std::string::npos) << st.message();
}

// Hostile templates and conversations end in an error naming the line, in
// bounded time and memory (the limits of coordinator/jinja/value.h), never in a
// crash or a hang.
TEST(Jinja, BoundsHostileTemplates) {
  auto expect_error = [](const std::string& source, const std::string& want, const std::string& context = "{}") {
    SCOPED_TRACE(source.substr(0, 120));
    Status st = RenderError(source, context);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find(want), std::string::npos) << st.message();
    EXPECT_EQ(st.message().rfind("chat template line ", 0), 0u) << st.message();
  };
  expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", "rendering nested deeper than");
  expect_error("{{ " + std::string(1000, '(') + "1" + std::string(1000, ')') + " }}", "nested deeper than 200");
  expect_error("{{ " + std::string(1000, '[') + std::string(1000, ']') + " }}", "nested deeper than 200");
  std::string chain = "{{ 1";
  for (int k = 0; k < 5000; ++k) chain += " + 1";
  expect_error(chain + " }}", "an expression nested deeper than 200");
  std::string blocks;
  for (int k = 0; k < 1000; ++k) blocks += "{% if true %}";
  expect_error(blocks, "blocks or expressions nested deeper than 200");
  expect_error("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}", "work than its budget");
  expect_error("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
               "work than its budget");
  expect_error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "work than its budget");
  expect_error("{{ 'x' * 1000000 * 1000 }}", "larger than 32 MiB");
  // A long conversation raises the work budget; sizes stay bounded.
  const std::string big = R"({"s": ")" + std::string(20 << 20, 'x') + R"("})";
  expect_error("{{ s ~ s }}", "a string larger than 32 MiB", big);
  expect_error("{{ s }}\n{{ s }}", "line 2: output larger than 32 MiB", big);
  expect_error("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}",
               "nested deeper than 200 levels");
  expect_error("{{ m }}", "deeper than 200 levels",
               "{\"m\": " + std::string(1000, '[') + std::string(1000, ']') + "}");
  expect_error("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{% set t = s %}{% endfor %}",
               "work than its budget");
  expect_error("{{ 9223372036854775807 + 1 }}", "integer overflow");
  expect_error("{{ 2 ** 64 }}", "integer overflow");
  expect_error("{{ -(-9223372036854775807 - 1) }}", "integer overflow");
  expect_error("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow");
  expect_error("{{ 1e300 | int }}", "64-bit integer");
  EXPECT_EQ(RenderError("{{ 2 ** 9223372036854775807 }}").kind(), ErrorKind::kUnimplemented);  // fast
  EXPECT_EQ(Render("{{ 2 ** 62 }}|{{ (-2) ** 63 }}|{{ -9223372036854775807 - 1 }}"),
            "4611686018427387904|-9223372036854775808|-9223372036854775808");
  EXPECT_EQ(Render("{{ range(9223372036854775806, 9223372036854775807, 1000) | list }}"), "[9223372036854775806]");
  EXPECT_EQ(Render("{{ [1, 2, 3][::9223372036854775807] }}"), "[1]");
  // A namespace holding itself is freed (the sanitizer builds check leaks).
  EXPECT_EQ(Render("{% set ns = namespace() %}{% set ns.me = ns %}{% set ns.l = [ns, dict(n=ns)] %}ok"), "ok");
}

TEST(Jinja, UndefinedIsLenient) {
  // Jinja's default Undefined: prints as nothing, is false, iterates as empty.
  EXPECT_EQ(Render("[{{ nope }}]{% if nope %}x{% endif %}{% for a in nope %}y{% endfor %}{{ nope | length }}"), "[]0");
  EXPECT_EQ(Render("{{ d.missing is defined }}", R"({"d": {}})"), "False");
}

std::pair<std::string, std::string> Split(const std::vector<std::string>& pieces, bool in_reasoning = false) {
  ThinkingSplitter s(in_reasoning);
  std::string r, a;
  for (const auto& p : pieces) s.Push(p, &r, &a);
  s.Flush(&r, &a);
  return {r, a};
}

TEST(ThinkingSplitter, SplitsReasoningFromAnswer) {
  // The shared reference's chat answer (smol-shakespeare.hf.json).
  auto [r, a] = Split({"<think>", "\n", "DUKE", " VINCENTIO answers.", "\n", "</think>", "\n", "I'll have been a man."});
  EXPECT_EQ(r, "DUKE VINCENTIO answers.");
  EXPECT_EQ(a, "I'll have been a man.");
  // Tags cut across pieces, a byte at a time.
  std::string text = "<think>\n\nstep 1\nstep 2\n\n</think>\n\nAnswer\n";
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  std::tie(r, a) = Split(bytes);
  EXPECT_EQ(r, "step 1\nstep 2");
  EXPECT_EQ(a, "Answer\n");
  // No reasoning block: everything is the answer, verbatim.
  std::tie(r, a) = Split({"  Just ", "text <think> here"});
  EXPECT_EQ(r, "");
  EXPECT_EQ(a, "  Just text <think> here");
  std::tie(r, a) = Split({"<thi", "nk>x</th", "ink>y"});
  EXPECT_EQ(r, "x");
  EXPECT_EQ(a, "y");
  std::tie(r, a) = Split({"<thx"});
  EXPECT_EQ(a, "<thx");
  // The prompt opened the block: reasoning from the first token.
  std::tie(r, a) = Split({"thinking", "</think>", "done"}, true);
  EXPECT_EQ(r, "thinking");
  EXPECT_EQ(a, "done");
  // Reasoning that never closes stays reasoning.
  std::tie(r, a) = Split({"<think>", "unfinished\n"});
  EXPECT_EQ(r, "unfinished");
  EXPECT_EQ(a, "");
  EXPECT_TRUE(PromptOpensThinking("<|im_start|>assistant\n<think>\n"));
  EXPECT_FALSE(PromptOpensThinking("<|im_start|>assistant\n<think>\n\n</think>\n"));
  EXPECT_FALSE(PromptOpensThinking("<|im_start|>assistant\n"));
}

TEST(Conversation, RejectsBadMessages) {
  EXPECT_FALSE(ParseConversation("nope").ok());
  EXPECT_FALSE(ParseConversation(R"({"role": "user"})").ok());
  EXPECT_FALSE(ParseConversation(R"([{"content": "x"}])").ok());
  EXPECT_FALSE(ParseConversation(R"([{"role": "user", "content": 5}])").ok());
  auto c = ParseConversation(R"({"messages": [{"role": "user", "content": "x"}], "tools": []})");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->messages.size(), 1u);
}

}  // namespace
}  // namespace strata
