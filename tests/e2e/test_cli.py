#!/usr/bin/env python3
"""End-to-end checks of the strata command line (the contract of DESIGN.md):
flags, JSON output, streaming, and one clear error for bad input.

Run by ctest: test_cli.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, tempfile

import harness
from harness import SHARED, check, run

HF = os.path.join(SHARED, "models", "smol-shakespeare")
Q4 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-q4_k_m.gguf")
VAL = os.path.join(SHARED, "text", "shakespeare-val.txt")


def expect_error(name, args, code, *words):
    p = run(args)
    msg = p.stderr.strip()
    ok = p.returncode == code and all(w in msg for w in words) and p.stdout.strip() == ""
    check(name, ok, f"exit {p.returncode}, stderr {msg[-300:]!r}, stdout {p.stdout[:100]!r}")


# --help on every command.
for cmd in ([], ["generate"], ["perplexity"]):
    p = run(cmd + ["--help"])
    check(f"--help {' '.join(cmd) or 'strata'}", p.returncode == 0 and "Usage" in p.stdout, p.stderr)

# Usage errors: exit 2 with a message naming the flag.
expect_error("unknown flag", ["generate", "-m", Q4, "-p", "x", "--bogus"], 2, "--bogus")
expect_error("bad value", ["generate", "-m", Q4, "-p", "x", "--temp", "-1"], 2, "--temp")
expect_error("non-numeric value", ["generate", "-m", Q4, "-p", "x", "-n", "many"], 2, "-n")
expect_error("missing model flag", ["generate", "-p", "x"], 2, "--model")
expect_error("missing prompt", ["generate", "-m", Q4], 2, "prompt")
expect_error("perplexity needs --ctx", ["perplexity", "-m", Q4, "-f", VAL], 2, "--ctx")
expect_error("no subcommand", [], 2, "subcommand")

# Bad inputs: exit 1, one line naming the file and the problem.
expect_error("missing model", ["generate", "-m", "/nonexistent/model.gguf", "-p", "x"], 1, "/nonexistent/model.gguf", "does not exist")
with tempfile.TemporaryDirectory() as d:
    junk = os.path.join(d, "junk.gguf")
    open(junk, "wb").write(b"NOTAGGUF" * 8)
    expect_error("not a GGUF", ["generate", "-m", junk, "-p", "x"], 1, junk, "bad magic")
    trunc = os.path.join(d, "trunc.gguf")
    open(trunc, "wb").write(open(Q4, "rb").read()[: 4 << 20])
    expect_error("truncated GGUF", ["generate", "-m", trunc, "-p", "x"], 1, trunc, "past the end")
    empty_dir = os.path.join(d, "hf")
    os.mkdir(empty_dir)
    expect_error("HF directory without config", ["generate", "-m", empty_dir, "-p", "x"], 1, empty_dir, "config.json")
    short = os.path.join(d, "short.txt")
    open(short, "w").write("Too short.")
    expect_error("text shorter than one chunk", ["perplexity", "-m", Q4, "-f", short, "--ctx", "256"], 1, "fewer than one chunk")
expect_error("missing prompt file", ["generate", "-m", Q4, "-f", "/nonexistent/prompt.txt"], 1, "/nonexistent/prompt.txt")
expect_error("prompt longer than the context", ["generate", "-m", Q4, "-f", VAL, "--ctx", "64"], 1, "context")

# generate --json: the documented fields; greedy is deterministic.
p = run(["generate", "-m", Q4, "-p", "ROMEO:", "-n", "8", "--temp", "0", "--ignore-eos", "--json"])
try:
    j = json.loads(p.stdout.strip().splitlines()[-1])
    ok = (set(j) >= {"prompt_ids", "ids", "text", "finish_reason", "timings"} and len(j["ids"]) == 8
          and j["finish_reason"] == "length" and set(j["timings"]) >= {"prefill_ms", "decode_ms", "prefill_tok_s", "decode_tok_s"})
    check("generate --json fields", ok, p.stdout[:300])
except Exception as e:  # noqa: BLE001
    check("generate --json fields", False, f"{e}: {p.stdout[:200]!r} {p.stderr[-200:]!r}")
    j = None

# Streaming text equals the JSON text.
p2 = run(["generate", "-m", Q4, "-p", "ROMEO:", "-n", "8", "--temp", "0", "--ignore-eos"])
check("streamed text equals JSON text", j is not None and p2.returncode == 0 and p2.stdout.rstrip("\n") == j["text"].rstrip("\n"),
      f"{p2.stdout!r} vs {j and j['text']!r}")

# Seeded sampling is reproducible; different seeds differ.
def sample(seed):
    p = run(["generate", "-m", Q4, "-p", "ROMEO:", "-n", "24", "--temp", "1.0", "--seed", str(seed), "--ignore-eos", "--json"])
    return json.loads(p.stdout.strip().splitlines()[-1])["ids"]
a, b, c = sample(7), sample(7), sample(8)
check("seeded sampling reproducible", a == b and a != c, f"{a[:6]} {b[:6]} {c[:6]}")

# Thread count does not change the numbers.
t1 = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "12", "--temp", "0", "--ignore-eos", "--json", "-t", "1"])
t2 = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "12", "--temp", "0", "--ignore-eos", "--json", "-t", "2"])
check("same ids with 1 and 2 threads", t1.returncode == 0 and json.loads(t1.stdout)["ids"] == json.loads(t2.stdout)["ids"])

# --no-mmap (weights copied into huge-page memory) gives the reference's greedy tokens.
REF_HF = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))
case = REF_HF["cases"][0]
ref_ids = json.loads(case["greedy_ids"]) if isinstance(case["greedy_ids"], str) else case["greedy_ids"]
for model, label in ((HF, "HF bf16"), (Q4, "GGUF Q4_K_M")):
    p = run(["generate", "-m", model, "-p", case["prompt"], "-n", str(len(ref_ids)), "--temp", "0", "--ignore-eos", "--json",
             "--no-mmap"])
    ids = json.loads(p.stdout)["ids"] if p.returncode == 0 else None
    if model == HF:
        check("--no-mmap: greedy ids == transformers' (HF bf16)", ids == ref_ids, p.stderr[-300:])
    else:
        q = run(["generate", "-m", model, "-p", case["prompt"], "-n", str(len(ref_ids)), "--temp", "0", "--ignore-eos", "--json"])
        check("--no-mmap: same ids as the mapped file (GGUF Q4_K_M)", ids is not None and ids == json.loads(q.stdout)["ids"],
              p.stderr[-300:])

# perplexity --json fields and the progress line on stderr.
with tempfile.TemporaryDirectory() as d:
    part = os.path.join(d, "part.txt")
    open(part, "w").write(open(VAL).read()[:12000])
    p = run(["perplexity", "-m", Q4, "-f", part, "--ctx", "128", "--json"])
    try:
        j = json.loads(p.stdout.strip().splitlines()[-1])
        ok = set(j) >= {"ppl", "chunks", "tokens_scored"} and j["chunks"] >= 2 and j["tokens_scored"] == j["chunks"] * 63 \
            and 1 < j["ppl"] < 10000 and "perplexity: chunk" in p.stderr
        check("perplexity --json fields and progress", ok, p.stdout + p.stderr[-200:])
    except Exception as e:  # noqa: BLE001
        check("perplexity --json fields and progress", False, f"{e}: {p.stdout!r} {p.stderr[-300:]!r}")

harness.finish()
