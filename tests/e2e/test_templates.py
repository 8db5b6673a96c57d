#!/usr/bin/python3
"""Chat templates: `strata template` must render every shared template
byte-identically to Python's jinja2 set up as transformers sets it up
(the oracle is rendered here, at test time), for a matrix of conversations,
add_generation_prompt and enable_thinking, and the filters truncate,
wordcount, striptags, center and batch on every conversation's texts; where
jinja2 raises, strata must fail with one clear error instead.

Run by ctest with Debian's python3 (python3-jinja2):
test_templates.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import datetime, glob, json, os, subprocess, tempfile

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

import harness
from harness import BIN, SHARED, check

harness.quiet = not os.environ.get("VERBOSE")  # hundreds of checks: failures only
TEMPLATES = sorted(glob.glob(os.path.join(SHARED, "templates", "*.jinja")))
HF = os.path.join(SHARED, "models", "smol-shakespeare")
GGUFS = sorted(glob.glob(os.path.join(SHARED, "models", "*.gguf")))


# ── the oracle: transformers' render_jinja_template environment ──
def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now


def oracle(source, conv, gen, think, bos, eos):
    kwargs = {}
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    if think is not None:
        kwargs["enable_thinking"] = think
    messages = conv["messages"] if isinstance(conv, dict) else conv
    tools = conv.get("tools") if isinstance(conv, dict) else None
    try:
        return env.from_string(source).render(messages=messages, tools=tools, documents=None,
                                              add_generation_prompt=gen, **kwargs), None
    except Exception as e:  # noqa: BLE001 - any jinja2 failure must be a strata failure too
        return None, f"{type(e).__name__}: {e}"


# ── conversations ──
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
CALL_DICT = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}
CALL_STR = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}
UNICODE = "Grüße — naïve café, 日本語のテキスト, emoji 🎉🚀, math ∑x², RTL עברית"
MULTILINE = "Line one\nLine two\n\n    indented line\n\ttabbed\nlast line with trailing spaces   \n"
TRICKY = "He said \"hi\" and 'bye' {{ not a tag }} {% nope %} {# nor this #} \\ backslash </s> <think>"

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Hi there"}],
    "multi_turn": [
        {"role": "system", "content": "You are Shakespeare."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "A poet, good sir."},
        {"role": "user", "content": "Write me a line."},
    ],
    "history_with_thinking": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\nIt is 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nAgain.\n</think>\n\n6."},
    ],
    "reasoning_content_field": [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because.", "reasoning_content": "Thinking hard."},
        {"role": "user", "content": "Sure?"},
    ],
    "empty_contents": [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
    "empty_assistant_last": [{"role": "user", "content": "Say nothing"}, {"role": "assistant", "content": ""}],
    "multiline_unicode": [{"role": "system", "content": MULTILINE}, {"role": "user", "content": UNICODE + "\n" + MULTILINE}],
    "tricky_text": [{"role": "user", "content": TRICKY}, {"role": "assistant", "content": TRICKY}, {"role": "user", "content": "ok"}],
    "system_no_think": [{"role": "system", "content": "Answer quickly. /no_think"}, {"role": "user", "content": "Hi"}],
    "system_think": [{"role": "system", "content": "/think Reason first."}, {"role": "user", "content": "Hi"}],
    "tool_round_trip": {"messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL_DICT]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
        {"role": "assistant", "content": "It is 21 °C and clear."},
        {"role": "user", "content": "Thanks"},
    ], "tools": [WEATHER_TOOL]},
    "tool_call_string_args": {"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL_STR]},
        {"role": "tool", "tool_call_id": "call_2", "content": "cold"},
    ], "tools": [WEATHER_TOOL]},
    "two_tool_results": [
        {"role": "user", "content": "Both cities?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL_DICT, CALL_STR]},
        {"role": "tool", "content": "warm"},
        {"role": "tool", "content": "cold"},
    ],
    "tools_no_calls": {"messages": [{"role": "user", "content": "Hello"}], "tools": [WEATHER_TOOL]},
    "not_alternating": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    "assistant_first": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Fine."}],
    "content_parts": [{"role": "user", "content": [{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]}],
    "no_messages": [],
}

# Texts for striptags: tags, comments, and character references of every
# kind html.unescape knows (named with and without ';', the longest legacy
# name that prefixes a longer run, numeric ones out of range or remapped).
HTML = ("<p class=\"x\">Hello&nbsp;<b>world</b> &amp; friends</p>\n<!-- a\ncomment --> &lt;tag&gt; caf&eacute; "
        "&#169; &#x263A; &#X263a; &#0; &#128; &#13; &#x9f; &#xD800; &#1114112; &#99999999999; &#65534; &#1; &#x; &#;")
HTML_EDGES = ("&copy &notin; &notit; &ampfoo AT&T R&D &amp &AMP; &Amp; &;x &zzzz; &lt3 &frac12; &frac12x "
              "&ThisIsAVeryLongNameThatRunsPastThirtyTwoChars; a<b c>d <unclosed & &\t &#38;#38; \u00e9&eacute\u00e9 "
              "<!-- no end   spaced\u3000out\u00a0nbsp")
FILTER_TEMPLATES = {
    "truncate": ("{% for m in messages %}{% set c = m.content if m.content is string else '' %}"
                 "[{{ c | truncate(9) }}|{{ c | truncate(9, True) }}|{{ c | truncate(11, False, '...', 0) }}|"
                 "{{ c | truncate(20, end='…') }}|{{ c | truncate(5, leeway=0, end='') }}|{{ c | truncate }}|"
                 "{{ c | truncate(length=30, killwords=true, leeway=2) }}]\n{% endfor %}"
                 "{{ 'foo bar baz qux' | truncate(9) }}|{{ [1, 2] | truncate(3) }}|{{ nothing | truncate }}"),
    "wordcount": ("{% for m in messages %}{{ m.content | wordcount }},{{ m.role | wordcount }};{% endfor %}"
                  "{{ none | wordcount }}|{{ 'snake_case and_more 42x' | wordcount }}|{{ '' | wordcount }}"),
    "striptags": "{% for m in messages %}[{{ m.content | striptags }}]\n{% endfor %}{{ [1, '<a>'] | striptags }}",
    "center": ("{% for m in messages %}[{{ m.role | center(12) }}|{{ m.role | center(13) }}|{{ m.role | center(2) }}|"
               "{{ (m.content if m.content is string else '') | center(40) }}]\n{% endfor %}"
               "[{{ 42 | center(7) }}|{{ 'ab' | center }}|{{ 'é日' | center(5) }}|{{ 'x' | center(-3) }}]"),
    "batch": ("{% for m in messages %}{{ m.role | batch(3) | list }}|{{ m.role | batch(4, '-') | list }};{% endfor %}"
              "{{ [1, 2, 3, 4, 5] | batch(2) | list }}|{{ [1, 2, 3] | batch(0) | list }}|{{ [1, 2, 3] | batch(-1, 'x') | list }}|"
              "{{ range(7) | batch(3, fill_with=none) | list }}|{% for row in [1, 2, 3, 4] | batch(3, 0) %}{{ row | sum }},{% endfor %}"),
    "truncate_length_below_end": "{{ messages | length }}{{ 'abcdef' | truncate(2) }}",
    "truncate_negative_leeway": "{{ 'abcdef' | truncate(5, leeway=-1) }}",
    "truncate_number": "{{ 12345678 | truncate(3, end='') }}",
}

BOS, EOS = "<s>", "</s>"

with tempfile.TemporaryDirectory() as d:
    conv_files = {}
    for name, conv in CONVERSATIONS.items():
        path = os.path.join(d, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(conv, f, ensure_ascii=False)
        conv_files[name] = path

    def strata(args):
        return subprocess.run([BIN, "template"] + args, capture_output=True, timeout=60)

    def compare(label, source, args, conv, gen, think, bos, eos):
        want, err = oracle(source, conv, gen, think, bos, eos)
        p = strata(args)
        out, stderr = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        if err is None:
            ok = p.returncode == 0 and out == want
            detail = f"exit {p.returncode}, stderr {stderr[-300:]!r}"
            if p.returncode == 0 and out != want:
                i = next((k for k in range(min(len(out), len(want))) if out[k] != want[k]), min(len(out), len(want)))
                detail = f"first difference at char {i}: strata {out[i:i+60]!r} vs jinja2 {want[i:i+60]!r}"
            check(label, ok, detail)
        else:
            # jinja2 refused: strata must refuse too, with one clear error line.
            lines = [l for l in stderr.strip().splitlines() if l]
            ok = p.returncode == 1 and out == "" and len(lines) == 1 and "chat template line" in lines[0]
            if "TemplateError" in err and ok:  # raise_exception: the template's own message is shown
                ok = err.split(": ", 1)[1] in lines[0]
            check(label + " (jinja2 raised)", ok, f"jinja2: {err}; strata exit {p.returncode}, stderr {stderr[-300:]!r}")

    for tpl in TEMPLATES:
        source = open(tpl, encoding="utf-8").read()
        tname = os.path.basename(tpl)
        for cname, conv in CONVERSATIONS.items():
            # Under the sanitizer build (launch/sanitize.sh) half the matrix, for time.
            for gen in (True,) if os.environ.get("STRATA_E2E_SANITIZER") else (True, False):
                for think in (None, True, False):
                    args = ["--template", tpl, "--messages", conv_files[cname], "--bos-token", BOS, "--eos-token", EOS]
                    if not gen:
                        args.append("--no-generation-prompt")
                    if think is True:
                        args.append("--think")
                    if think is False:
                        args.append("--no-think")
                    compare(f"{tname} {cname} gen={gen} think={think}", source, args, conv, gen, think, BOS, EOS)
        # Without bos/eos tokens they are undefined (printed as nothing).
        compare(f"{tname} no special tokens", source, ["--template", tpl, "--messages", conv_files["multi_turn"]],
                CONVERSATIONS["multi_turn"], True, None, None, None)

    # The model's own template (-m): HF directory vs jinja2 on its chat_template.jinja
    # with the tokenizer's eos token; the GGUF files carry the same template.
    src = open(os.path.join(HF, "chat_template.jinja"), encoding="utf-8").read()
    cfg = json.load(open(os.path.join(HF, "tokenizer_config.json")))
    eos = cfg.get("eos_token")
    bos = cfg.get("bos_token")
    for cname in ("system_user", "multi_turn", "multiline_unicode", "system_no_think"):
        for think in (None, False):
            args = ["-m", HF, "--messages", conv_files[cname]] + (["--no-think"] if think is False else [])
            compare(f"-m hf {cname} think={think}", src, args, CONVERSATIONS[cname], True, think, bos, eos)
            hf_out = strata(args).stdout
            for g in GGUFS:
                p = strata(["-m", g] + args[2:])
                check(f"-m {os.path.basename(g)} {cname} think={think} == HF dir", p.returncode == 0 and p.stdout == hf_out,
                      p.stderr.decode()[-300:])

    # The filters truncate, wordcount, striptags, center and batch on every
    # conversation's texts (and HTML), against jinja2 itself.
    filter_convs = dict(CONVERSATIONS, html=[{"role": "user", "content": HTML}, {"role": "user", "content": HTML_EDGES}])
    path = os.path.join(d, "html.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(filter_convs["html"], f, ensure_ascii=False)
    conv_files["html"] = path
    for fname, source in FILTER_TEMPLATES.items():
        tpath = os.path.join(d, f"filter_{fname}.jinja")
        open(tpath, "w", encoding="utf-8").write(source)
        for cname in ("multiline_unicode", "tricky_text", "multi_turn", "html", "content_parts", "no_messages"):
            compare(f"filter {fname} on {cname}", source, ["--template", tpath, "--messages", conv_files[cname]],
                    filter_convs[cname], True, None, None, None)

    # Errors: one line, exit status 1 or 2, naming the problem.
    bad_cases = {
        "unknown filter": ("{{ messages | frobnicate }}", "unknown filter 'frobnicate'", 1),
        "unsupported tag": ("{% for m in messages %}\n{% call foo() %}{% endcall %}{% endfor %}", "line 2", 1),
        "unclosed block": ("{% if messages %}\nhello", "endif", 1),
        "bad expression": ("line one\n{{ 1 + }}", "line 2", 1),
        "undefined attribute": ("{{ nothing.there }}", "'nothing' is undefined", 1),
        "type error": ("a\nb\n{{ 'x' + 1 }}", "line 3", 1),
        "sandbox": ("{% set l = [] %}{{ l.append(1) }}", "sandbox", 1),
    }
    for name, (source, words, code) in bad_cases.items():
        path = os.path.join(d, "bad.jinja")
        open(path, "w").write(source)
        p = strata(["--template", path, "--messages", conv_files["user"]])
        stderr = p.stderr.decode()
        lines = [l for l in stderr.strip().splitlines() if l]
        check(f"error: {name}", p.returncode == code and len(lines) == 1 and words in stderr and p.stdout == b"",
              f"exit {p.returncode}, stderr {stderr!r}")
    bad_json = os.path.join(d, "bad.json")
    open(bad_json, "w").write("[{\"role\": 3}]")
    p = strata(["--template", TEMPLATES[0], "--messages", bad_json])
    check("error: bad message role", p.returncode == 1 and "role" in p.stderr.decode(), p.stderr.decode())
    open(bad_json, "w").write("not json")
    p = strata(["--template", TEMPLATES[0], "--messages", bad_json])
    check("error: messages not JSON", p.returncode == 1 and "JSON" in p.stderr.decode(), p.stderr.decode())
    p = strata(["--messages", conv_files["user"]])
    check("error: neither -m nor --template", p.returncode == 2 and "--template" in p.stderr.decode(), p.stderr.decode())
    p = strata(["-m", os.path.join(SHARED, "models", "nonexistent"), "--messages", conv_files["user"]])
    check("error: missing model", p.returncode == 1 and "nonexistent" in p.stderr.decode(), p.stderr.decode())

harness.finish()
