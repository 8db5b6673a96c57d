#!/usr/bin/env python3
"""End-to-end checks of `strata inspect`: the dry run that reads only headers.

Run by ctest: test_inspect.py BINARY SHARED_DIR. Prints 'N passed, N failed',
exits 1 on any failure. Python standard library only."""
import json, os, shutil, struct, tempfile

import harness
from harness import SHARED, check

HF = os.path.join(SHARED, "models", "smol-shakespeare")
Q4 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-q4_k_m.gguf")
BF16 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-bf16.gguf")

N_LAYERS, HIDDEN, KV_DIM = 36, 256, 64  # smol-shakespeare: 1 KV head of 64
NOPE = list(range(3, 36, 4))            # SmolLM3: every 4th layer has no RoPE


def run(args, timeout=120):
    return harness.run(["inspect", *args], timeout=timeout)


def inspect_json(args):
    p = run(args + ["--json"])
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
    try:
        return json.loads(p.stdout), ""
    except ValueError as e:
        return None, f"not JSON ({e}): {p.stdout[:200]!r}"


def expect_error(name, args, code, *words):
    p = run(args)
    msg = p.stderr.strip()
    ok = p.returncode == code and all(w in msg for w in words) and p.stdout.strip() == ""
    if code == 1:
        ok = ok and len(msg.splitlines()) == 1
    check(name, ok, f"exit {p.returncode}, stderr {msg[-300:]!r}, stdout {p.stdout[:100]!r}")


def check_model(label, path, fmt, n_tensors):
    j, err = inspect_json([path, "--ranks", "4", "--ctx", "4096", "--parallel", "1"])
    check(f"{label}: --json parses", j is not None, err)
    if j is None:
        return
    for key in ("model", "format", "fingerprint", "config", "tokenizer", "tensors", "n_tensors",
                "weight_bytes", "layers", "plan"):
        check(f"{label}: field '{key}'", key in j, sorted(j))
    c, tok, plan = j.get("config", {}), j.get("tokenizer", {}), j.get("plan", {})
    check(f"{label}: format {fmt}", j.get("format") == fmt, j.get("format"))
    check(f"{label}: n_layers", c.get("n_layers") == N_LAYERS, c.get("n_layers"))
    check(f"{label}: hidden", c.get("hidden") == HIDDEN, c.get("hidden"))
    check(f"{label}: kv_dim", c.get("kv_dim") == KV_DIM and c.get("n_kv_heads", 0) * c.get("head_dim", 0) == KV_DIM,
          (c.get("n_kv_heads"), c.get("head_dim")))
    check(f"{label}: NoPE layers", c.get("nope_layers") == NOPE, c.get("nope_layers"))
    check(f"{label}: eos ids", isinstance(c.get("eos_ids"), list) and len(c["eos_ids"]) >= 1, c.get("eos_ids"))
    check(f"{label}: tokenizer", tok.get("tokens", 0) > 0 and tok.get("tokens") <= c.get("vocab", 0)
          and tok.get("merges", 0) > 0 and isinstance(tok.get("add_bos"), bool), tok)
    check(f"{label}: chat template present", tok.get("chat_template") is True, tok.get("chat_template"))
    tensors = j.get("tensors", [])
    check(f"{label}: {n_tensors} tensors", j.get("n_tensors") == n_tensors == len(tensors), (j.get("n_tensors"), len(tensors)))
    for t in tensors[:1]:
        need = ("name", "type", "shape", "bytes") + (("offset",) if fmt == "gguf" else ("file",))
        check(f"{label}: tensor row fields", all(k in t for k in need), t)
    used = sum(t["bytes"] for t in tensors if t.get("used"))
    check(f"{label}: used tensor bytes == weight_bytes", used == j.get("weight_bytes"), (used, j.get("weight_bytes")))
    layers = j.get("layers", [])
    check(f"{label}: bytes per layer", len(layers) == N_LAYERS and all(l["bytes"] > 0 for l in layers)
          and [l["layer"] for l in layers if not l["rope"]] == NOPE, layers[:2])

    ranks = plan.get("ranks", [])
    check(f"{label}: 4 ranks", len(ranks) == 4 and plan.get("n_ranks") == 4, len(ranks))
    covered = [l for r in ranks for l in range(r["first_layer"], r["last_layer"] + 1)]
    check(f"{label}: plan covers 0..35 once, in order", covered == list(range(N_LAYERS)), covered)
    check(f"{label}: first/last flags", ranks and ranks[0]["first"] and ranks[-1]["last"]
          and not any(r["first"] for r in ranks[1:]) and not any(r["last"] for r in ranks[:-1]))
    total_w = sum(r["weight_bytes"] for r in ranks)
    check(f"{label}: sum of per-rank weight bytes == total", total_w == j.get("weight_bytes"), (total_w, j.get("weight_bytes")))
    kv_layer = 2 * 4096 * KV_DIM * 4
    kv_ok = all(r["kv_bytes"] == r["n_layers"] * kv_layer for r in ranks)
    check(f"{label}: KV bytes per rank at ctx 4096 = layers x 2 x 4096 x 64 x 4", kv_ok,
          [(r["n_layers"], r["kv_bytes"]) for r in ranks])
    check(f"{label}: total KV bytes", plan.get("kv_bytes") == N_LAYERS * kv_layer, plan.get("kv_bytes"))
    growth = plan.get("kv_growth", [])
    check(f"{label}: KV growth 512..4096", [g["ctx"] for g in growth] == [512, 1024, 2048, 4096]
          and growth[-1]["per_rank"] == [r["kv_bytes"] for r in ranks], [g.get("ctx") for g in growth])
    return j


j = check_model("gguf q4_k_m", Q4, "gguf", 326)
if j:
    offs = [t["offset"] for t in j["tensors"]]
    check("gguf: offsets increase from 0", offs[0] == 0 and offs == sorted(offs), offs[:4])
    check("gguf: metadata has general.architecture",
          j.get("gguf", {}).get("metadata", {}).get("general.architecture") == "smollm3")
j = check_model("hf", HF, "hf", 326)
if j:
    check("hf: tensors name their safetensors file", all(t.get("file") == "model.safetensors" for t in j["tensors"]))

# The two formats of one model describe the same architecture and plan.
jg, _ = inspect_json([Q4, "--ranks", "3", "--split", "0-11,12-23,24-35"])
jh, _ = inspect_json([HF, "--ranks", "3", "--split", "0-11,12-23,24-35"])
if jg and jh:
    # rope_layout differs by design (llama.cpp permutes q/k rows); HF adds
    # generation_config.json's eos ids.
    differ = ("rope_layout", "eos_ids")
    same = {k: v for k, v in jg["config"].items() if k not in differ} == \
           {k: v for k, v in jh["config"].items() if k not in differ}
    check("gguf and hf configs agree", same, (jg["config"], jh["config"]))
    check("explicit split honoured", [(r["first_layer"], r["last_layer"]) for r in jg["plan"]["ranks"]]
          == [(0, 11), (12, 23), (24, 35)], jg["plan"]["ranks"])
else:
    check("explicit split runs", False)

# --parallel multiplies the KV cache; a ctx that is not a power of two ends the growth table.
j, err = inspect_json([Q4, "--ctx", "3000", "--parallel", "3"])
if j:
    r = j["plan"]["ranks"]
    check("--parallel 3 at ctx 3000", len(r) == 1 and r[0]["kv_bytes"] == N_LAYERS * 2 * 3000 * KV_DIM * 4 * 3, r)
    check("growth ends at --ctx", [g["ctx"] for g in j["plan"]["kv_growth"]] == [512, 1024, 2048, 3000],
          j["plan"]["kv_growth"])
else:
    check("--parallel 3 at ctx 3000", False, err)

# Text output: the sections a reader looks for.
p = run([Q4, "--ranks", "4"])
check("text output", p.returncode == 0 and all(w in p.stdout for w in
      ("smollm3", "NoPE layers 3,7,11", "tokenizer", "blk.35.ffn_down.weight", "layer plan (auto, balances prefill chunks)", "KV")),
      p.stderr[-300:] + p.stdout[:300])

# Uneven hosts: --speeds balances time, so a rank at half speed gets about
# half the layers of the others; the predicted stage times come out even.
j, err = inspect_json([Q4, "--ranks", "2", "--speeds", "1,0.5"])
if j:
    n = [r["n_layers"] for r in j["plan"]["ranks"]]
    t = [r["decode_ms"] for r in j["plan"]["ranks"]]
    check("--speeds 1,0.5: the slow rank gets about a third of the layers", 9 <= n[1] <= 15 and n[0] + n[1] == N_LAYERS
          and abs(t[0] - t[1]) <= 0.25 * max(t), (n, t))
    even, _ = inspect_json([Q4, "--ranks", "2"])
    check("... fewer than with equal speeds", even and n[1] < even["plan"]["ranks"][1]["n_layers"], even and even["plan"]["ranks"])
else:
    check("--speeds 1,0.5", False, err)
j, err = inspect_json([Q4, "--ranks", "4", "--parallel", "8"])
check("--parallel 8 on 4 ranks balances decode micro-batches of 2 tokens", j and j["plan"]["decode_tokens"] == 2 and j["plan"]["balances"] == "decode", err)
expect_error("--speeds of the wrong count", [Q4, "--ranks", "3", "--speeds", "1,2"], 1, "2 speeds for 3 stages")
expect_error("--speeds not positive", [Q4, "--ranks", "2", "--speeds", "1,-1"], 2, "--speeds")

# Errors: one line, exit 1, the problem named; bad flags exit 2.
expect_error("bad --split names the gap", [Q4, "--ranks", "2", "--split", "0-10,12-35"], 1, "0-10,12-35", "layer 11")
expect_error("--split with too few ranges", [Q4, "--ranks", "4", "--split", "0-17,18-35"], 1, "layer plan")
expect_error("more ranks than layers", [Q4, "--ranks", "37"], 1, "37")
expect_error("missing file", ["/nonexistent/model.gguf"], 1, "/nonexistent/model.gguf")
with tempfile.TemporaryDirectory() as d:
    junk = os.path.join(d, "junk.gguf")
    open(junk, "wb").write(b"NOTAGGUF" * 8)
    expect_error("not a GGUF", [junk], 1, junk)
expect_error("--ranks 0", [Q4, "--ranks", "0"], 2, "--ranks")
expect_error("--ctx not a number", [Q4, "--ctx", "lots"], 2, "--ctx")
expect_error("unknown flag", [Q4, "--bogus"], 2, "--bogus")
expect_error("no model", [], 2, "model")

# Header only: it never reads tensor data. Copies whose whole data region is
# overwritten (0xFF bytes: NaN in bf16) inspect exactly like the originals.
def without_model_path(doc):
    """The document without its path and this host's free memory (which moves between two runs)."""
    if not doc:
        return doc
    out = {k: v for k, v in doc.items() if k != "model"}
    plan = dict(out["plan"])
    plan.pop("host_available_bytes", None)
    plan.pop("all_ranks_fit_host", None)
    plan["ranks"] = [{k: v for k, v in r.items() if k != "fits_host"} for r in plan["ranks"]]
    out["plan"] = plan
    return out


def garbled_copy(src, dst, data_offset):
    shutil.copyfile(src, dst)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as f:
        f.seek(data_offset)
        for pos in range(data_offset, size, 1 << 20):
            f.write(b"\xff" * min(1 << 20, size - pos))


with tempfile.TemporaryDirectory() as d:
    if os.path.exists(BF16):
        orig, err = inspect_json([BF16])
        if orig:
            copy = os.path.join(d, "garbled.gguf")
            garbled_copy(BF16, copy, orig["gguf"]["data_offset"])
            got, err = inspect_json([copy])
            check("bf16 GGUF with its tensor data overwritten inspects the same", got and
                  without_model_path(got) == without_model_path(orig), err)
        else:
            check("bf16 GGUF inspects", False, err)
    hf_copy = os.path.join(d, "hf")
    shutil.copytree(HF, hf_copy)
    st = os.path.join(hf_copy, "model.safetensors")
    with open(st, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
    garbled_copy(os.path.join(HF, "model.safetensors"), st, 8 + header_len)
    orig, err1 = inspect_json([HF])
    got, err2 = inspect_json([hf_copy])
    check("HF directory with its tensor data overwritten inspects the same",
          orig and got and without_model_path(got) == without_model_path(orig), err1 + err2)

harness.finish()
