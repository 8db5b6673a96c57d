#!/usr/bin/env python3
"""Convert and quantize end to end. `strata convert` of the shared HF model:
to bf16 gives llama.cpp's own bf16 GGUF (same metadata, same tensor bytes);
f32 and bf16 files continue prompts exactly as the HF directory does; q8_0
and q4_k_m perplexity stays within 0.5% / 1.5% of bf16 and q4_k_m within 1%
of llama.cpp's Q4_K_M; llama.cpp itself (node-llama-cpp, installed by
bench/peer/setup.sh) loads strata's bf16 file and continues a prompt exactly
as strata does. `strata quantize` equals convert, refuses to re-quantize
without --allow-requantize, and bad inputs are clear errors that leave no
file behind.

Run by ctest: test_convert.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, struct, subprocess, tempfile

import harness
from harness import ROOT, SHARED, check

HF = os.path.join(SHARED, "models", "smol-shakespeare")
LLAMA_BF16 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-bf16.gguf")
VAL = os.path.join(SHARED, "text", "shakespeare-val.txt")
REF = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.llamacpp.json")))
PROMPTS = [c["prompt"] for c in json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))["cases"][:2]]


def run(args, timeout=600):  # conversions of the whole model take minutes on 2 cores
    return harness.run(args, timeout=timeout)


def read_gguf(path):
    """(metadata {key: (type, value)}, tensors {name: (ne, type, bytes)}) of a GGUF v3 file."""
    f = open(path, "rb").read()
    n_tensors, n_kv = struct.unpack_from("<QQ", f, 8)
    o = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string(o):
        n, = struct.unpack_from("<Q", f, o)
        return f[o + 8:o + 8 + n], o + 8 + n

    def value(t, o):
        if t == 8:
            return string(o)
        if t == 9:
            et, n = struct.unpack_from("<IQ", f, o)
            o += 12
            items = []
            for _ in range(n):
                v, o = value(et, o)
                items.append(v)
            return (et, tuple(items)), o
        return f[o:o + sizes[t]], o + sizes[t]

    kv = {}
    for _ in range(n_kv):
        k, o = string(o)
        t, = struct.unpack_from("<I", f, o)
        v, o = value(t, o + 4)
        kv[k.decode()] = (t, v)
    infos = []
    for _ in range(n_tensors):
        name, o = string(o)
        nd, = struct.unpack_from("<I", f, o)
        ne = struct.unpack_from("<" + "Q" * nd, f, o + 4)
        o += 4 + 8 * nd
        ty, off = struct.unpack_from("<IQ", f, o)
        o += 12
        infos.append((name.decode(), ne, ty, off))
    align = int.from_bytes(kv["general.alignment"][1], "little") if "general.alignment" in kv else 32
    data = (o + align - 1) // align * align
    offsets = sorted(off for _, _, _, off in infos) + [len(f) - data]
    tensors = {}
    for name, ne, ty, off in infos:
        end = offsets[offsets.index(off) + 1]
        tensors[name] = (ne, ty, f[data + off:data + end])
    return kv, tensors


def greedy(model, prompt, n=24):
    p = run(["generate", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "--ignore-eos", "--json", "-t", "2"])
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-300:])
    j = json.loads(p.stdout)
    return j["prompt_ids"], j["ids"]


# STRATA_E2E_SANITIZER (the sanitizer build, launch/sanitize.sh): perplexity
# over the first 8000 characters only, so the comparison with llama.cpp's
# figure (for the whole text) is left to the normal build.
SANITIZER = bool(os.environ.get("STRATA_E2E_SANITIZER"))


def ppl(model, text):
    p = run(["perplexity", "-m", model, "-f", text, "--ctx", "256", "--json", "-t", "2"])
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-300:])
    return json.loads(p.stdout)["ppl"]


with tempfile.TemporaryDirectory() as d:
    out = {t: os.path.join(d, f"smol-{t}.gguf") for t in ("f32", "bf16", "q8_0", "q4_k_m")}
    for t, path in out.items():
        p = run(["convert", HF, "-o", path, "--type", t])
        check(f"convert to {t}", p.returncode == 0 and os.path.exists(path) and "[326/326]" in p.stderr, p.stderr[-300:])

    mine_kv, mine_t = read_gguf(out["bf16"])
    ref_kv, ref_t = read_gguf(LLAMA_BF16)
    diff_keys = sorted(k for k in set(mine_kv) | set(ref_kv) if mine_kv.get(k) != ref_kv.get(k))
    check("bf16: metadata equals llama.cpp's converter's", not diff_keys, f"differing keys {diff_keys}")
    diff_t = sorted(n for n in set(mine_t) | set(ref_t) if n not in mine_t or n not in ref_t or mine_t[n] != ref_t[n])
    check("bf16: every tensor (name, shape, type, bytes) equals llama.cpp's", not diff_t and len(mine_t) == 326, str(diff_t[:5]))

    for t in ("f32", "bf16"):
        try:
            same = all(greedy(out[t], pr) == greedy(HF, pr) for pr in PROMPTS)
            check(f"{t} file continues prompts exactly as the HF directory", same)
        except Exception as e:  # noqa: BLE001
            check(f"{t} file continues prompts exactly as the HF directory", False, str(e))

    try:
        text = VAL
        if SANITIZER:
            text = os.path.join(d, "val-part.txt")
            open(text, "w").write(open(VAL).read()[:8000])
        base = ppl(out["bf16"], text)
        q8, q4 = ppl(out["q8_0"], text), ppl(out["q4_k_m"], text)
        check("q8_0 perplexity within 0.5% of bf16", abs(q8 / base - 1) <= 0.005, f"{q8:.4f} vs {base:.4f}")
        check("q4_k_m perplexity within 1.5% of bf16", abs(q4 / base - 1) <= 0.015, f"{q4:.4f} vs {base:.4f}")
        if not SANITIZER:
            want = REF["perplexity"]["q4_k_m"]
            check("q4_k_m perplexity within 1% of llama.cpp's Q4_K_M", abs(q4 / want - 1) <= 0.01, f"{q4:.4f} vs {want:.4f}")
    except Exception as e:  # noqa: BLE001
        check("perplexity of the converted files", False, str(e))

    # llama.cpp itself on strata's file.
    greedy_js = os.path.join(ROOT, "bench", "peer", "llamacpp-greedy.mjs")
    try:
        prompt_ids, ids = greedy(out["bf16"], PROMPTS[0])
        p = subprocess.run(["node", greedy_js, "-m", out["bf16"], "--ids", ",".join(map(str, prompt_ids)), "-n", str(len(ids))],
                           capture_output=True, text=True, timeout=300)
        theirs = json.loads(p.stdout)["ids"] if p.returncode == 0 else None
        check("llama.cpp (node-llama-cpp) loads strata's bf16 GGUF and continues as strata does", theirs == ids,
              f"llama.cpp {theirs} vs strata {ids}; {p.stderr[-300:]} (bench/peer/setup.sh installs node-llama-cpp)")
    except Exception as e:  # noqa: BLE001
        check("llama.cpp loads strata's bf16 GGUF", False, str(e))

    # quantize: from the bf16 GGUF, the same tensors as convert from HF.
    q = os.path.join(d, "quantized-q8_0.gguf")
    p = run(["quantize", out["bf16"], q, "--type", "q8_0"])
    _, qt = read_gguf(q) if p.returncode == 0 else ({}, {})
    _, ct = read_gguf(out["q8_0"])
    check("quantize bf16 -> q8_0 equals convert's q8_0 tensors", p.returncode == 0 and qt == ct, p.stderr[-300:])
    p = run(["quantize", out["q4_k_m"], q, "--type", "q8_0"])
    check("quantize refuses to re-quantize a quantized tensor", p.returncode == 1 and "--allow-requantize" in p.stderr
          and "token_embd.weight" in p.stderr, p.stderr[-300:])
    p = run(["quantize", out["q4_k_m"], q, "--type", "q8_0", "--allow-requantize"])
    check("quantize --allow-requantize works", p.returncode == 0 and greedy(q, PROMPTS[0], 4)[1] != [], p.stderr[-300:])

    # Bad inputs: one clear error, nothing left under the final name.
    missing = os.path.join(d, "no-such-dir")
    p = run(["convert", missing, "-o", os.path.join(d, "x.gguf"), "--type", "f16"])
    check("convert names a missing directory", p.returncode == 1 and "no-such-dir" in p.stderr, p.stderr[-300:])
    p = run(["convert", HF, "-o", os.path.join(d, "x.gguf"), "--type", "q3_k"])
    check("convert names a bad --type", p.returncode == 1 and "q3_k" in p.stderr and "q4_k_m" in p.stderr, p.stderr[-300:])
    bad = os.path.join(d, "gpt2")
    os.makedirs(bad)
    json.dump({"model_type": "gpt2"}, open(os.path.join(bad, "config.json"), "w"))
    p = run(["convert", bad, "-o", os.path.join(d, "x.gguf"), "--type", "f16"])
    check("convert names an unsupported architecture", p.returncode == 1 and "gpt2" in p.stderr, p.stderr[-300:])
    p = run(["convert", HF, "-o", os.path.join(d, "missing-dir", "x.gguf"), "--type", "f16"])
    check("convert names an unwritable output", p.returncode == 1 and "missing-dir" in p.stderr, p.stderr[-300:])
    p = run(["quantize", HF, q, "--type", "q8_0"])
    check("quantize refuses an HF directory and points to convert", p.returncode == 1 and "convert" in p.stderr, p.stderr[-300:])
    check("no partial files left", not os.path.exists(os.path.join(d, "x.gguf")) and not any(n.endswith(".tmp") for n in os.listdir(d)),
          str(os.listdir(d)))

harness.finish()
