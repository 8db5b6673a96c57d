#!/usr/bin/env python3
"""Long context (ctest e2e_long_context, MPI label): KV cache types, YaRN, the context and memory limits.

- Perplexity of the shared bf16 GGUF at --ctx 2048 (the first chunks of shakespeare-val.txt) with each
  KV cache type: f16 within 0.1 %, bf16 and q8_0 within 0.5 % of f32.
- Any split is bit-identical for every cache type (perplexity on 1 and 3 ranks).
- llama.cpp (node-llama-cpp, bench/peer/setup.sh) with the same cache type over the shared long prompt
  (the first 9000 characters of shakespeare-val.txt): along llama.cpp's greedy tokens, each one is
  strata's best or within the cache type's own noise of it (teacher-forced, strata's dump logits).
- YaRN on SmolLM3: the shared checkpoint with rope_scaling yarn (factor 4 over 1024 tokens) in its
  config, as an HF directory and converted by strata to GGUF; the prompt crosses 1024 tokens.
  --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 1024 on the unscaled files gives the same bits;
  the GGUF carries smollm3.rope.scaling.* and llama.cpp's greedy tokens on it are strata's.
- One clear error for a --ctx beyond the trained context (unless --force-ctx), YaRN without a factor,
  an unknown KV type; `inspect --ctx 131072 --kv-type f16` sizes each rank's weights + cache and says
  whether it fits this host.

STRATA_E2E_SANITIZER (the sanitizer build, launch/sanitize.sh): the same code paths on less text (perplexity
on 6000 characters at --ctx 512, YaRN over 256 original tokens on a 1500-character prompt) and without
llama.cpp (the numbers are the release build's to check; the sanitizers look for memory errors).
"""
import json
import os
import subprocess
import tempfile

import numpy as np

import harness
from harness import ROOT, SHARED, check, run

HF = os.path.join(SHARED, "models", "smol-shakespeare")
BF16 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-bf16.gguf")
VAL = os.path.join(SHARED, "text", "shakespeare-val.txt")
GREEDY_JS = os.path.join(ROOT, "bench", "peer", "llamacpp-greedy.mjs")
KV_TYPES = ["f32", "f16", "bf16", "q8_0"]
PPL_BOUND = {"f16": 0.001, "bf16": 0.005, "q8_0": 0.005}  # relative to f32
N_GREEDY = 16
SANITIZER = bool(os.environ.get("STRATA_E2E_SANITIZER"))
LONG_CHARS = 1500 if SANITIZER else 9000       # the long prompt: 2340 tokens of 9000 characters
PPL_CHARS, PPL_CTX = (6000, 512) if SANITIZER else (30000, 2048)
YARN_ORIG = 256 if SANITIZER else 1024          # YaRN's original context, crossed by the long prompt

def perplexity(model, text, ctx, kv, ranks=0, extra=()):
    p = run(["perplexity", "-m", model, "-f", text, "--ctx", str(ctx), "--kv-type", kv, "--json", "-t", "1" if ranks else "2",
             *extra], ranks=ranks)
    if p.returncode != 0:
        raise RuntimeError(f"perplexity --kv-type {kv} on {ranks or 1} rank(s): {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)["ppl"]


def dump_logits(model, tmp, tag, kv="f32", prompt_file=None, ids=None, extra=()):
    """strata's logits at every position (and the prompt's ids) from `dump`."""
    d = os.path.join(tmp, "dump-" + tag)
    src = ["-f", prompt_file] if prompt_file else ["--ids", ",".join(map(str, ids))]
    p = run(["dump", "-m", model, *src, "-o", d, "--layers", "0-0", "--kv-type", kv, *extra])
    if p.returncode != 0:
        raise RuntimeError(f"strata dump -m {model} ({tag}): {p.stderr.strip()[-300:]}")
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    return np.load(os.path.join(d, "logits.npy")), manifest["prompt_ids"]


def llamacpp_greedy(gguf, ids, n, kv):
    p = subprocess.run(["node", GREEDY_JS, "-m", gguf, "--ids", ",".join(map(str, ids)), "-n", str(n), "--kv-type", kv, "-t", "2"],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"llama.cpp on {gguf}: {p.stderr.strip()[-300:]} (bench/peer/setup.sh installs node-llama-cpp)")
    return json.loads(p.stdout)["ids"]


def along_llamacpp(label, gguf, prompt_ids, kv, tmp, noise_kv="f32", extra=()):
    """llama.cpp's greedy tokens with cache type `kv`; strata's logits along them with the same cache.
    Each of llama.cpp's tokens must be strata's best or within the noise of this comparison: how far
    strata's own logits move between cache type `kv` and `noise_kv` at that step."""
    theirs = llamacpp_greedy(gguf, prompt_ids, N_GREEDY, kv)
    seq = prompt_ids + theirs[:-1]
    lg, _ = dump_logits(gguf, tmp, f"{label}-{kv}", kv=kv, ids=seq, extra=extra)
    ref, _ = dump_logits(gguf, tmp, f"{label}-{kv}-noise", kv=noise_kv, ids=seq, extra=extra)
    steps, ref_steps = lg[len(prompt_ids) - 1:], ref[len(prompt_ids) - 1:]
    exact = sum(int(np.argmax(steps[k])) == t for k, t in enumerate(theirs))
    bad = []
    for k, tok in enumerate(theirs):
        gap = float(steps[k].max() - steps[k][tok])
        noise = float(np.abs(steps[k] - ref_steps[k]).max())
        if gap > noise:
            bad.append((k, round(gap, 5), round(noise, 5)))
    check(f"{label}, --kv-type {kv}: llama.cpp's {N_GREEDY} greedy tokens after {len(prompt_ids)} are strata's "
          f"({exact} exactly, the rest within the cache's noise)", not bad and exact >= N_GREEDY // 2,
          f"exact {exact}/{N_GREEDY}; past the noise (step, gap, noise): {bad[:4]}")
    return lg


def yarn_checkpoint(tmp):
    """The shared checkpoint with YaRN in its config (factor 4 over an original YARN_ORIG tokens)."""
    d = os.path.join(tmp, "smol-yarn")
    os.makedirs(d)
    for name in os.listdir(HF):
        if name != "config.json":
            os.symlink(os.path.join(HF, name), os.path.join(d, name))
    cfg = json.load(open(os.path.join(HF, "config.json")))
    cfg["rope_parameters"] = {"rope_theta": cfg["rope_parameters"]["rope_theta"], "rope_type": "yarn", "factor": 4.0,
                              "original_max_position_embeddings": YARN_ORIG}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    return d


def main():
    with tempfile.TemporaryDirectory() as tmp:
        text = open(VAL, encoding="utf-8").read()
        long_prompt = os.path.join(tmp, "long.txt")
        open(long_prompt, "w", encoding="utf-8").write(text[:LONG_CHARS])
        prefix = os.path.join(tmp, "val-prefix.txt")  # 4 chunks of --ctx tokens
        open(prefix, "w", encoding="utf-8").write(text[:PPL_CHARS])
        short = os.path.join(tmp, "val-short.txt")
        open(short, "w", encoding="utf-8").write(text[:3000])

        # ── limits and bad input (fast) ──
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--ctx", "8192"])
        check("--ctx beyond the trained 4096 is refused, naming both and --force-ctx",
              p.returncode == 1 and "--ctx 8192" in p.stderr and "4096" in p.stderr and "--force-ctx" in p.stderr
              and p.stderr.count("error") == 1, p.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--ctx", "8192", "--force-ctx"])
        check("--force-ctx runs it with a warning", p.returncode == 0 and "--force-ctx" in p.stderr, p.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--ctx", "8192", "--rope-scaling", "yarn", "--rope-scale", "2"])
        check("YaRN x2 supports --ctx 8192", p.returncode == 0, p.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--ctx", "8192", "--rope-scaling", "yarn", "--rope-scale", "1.5"])
        check("YaRN x1.5 does not reach --ctx 8192", p.returncode == 1 and "6144" in p.stderr, p.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--rope-scaling", "yarn"])
        check("YaRN without a factor is one error naming --rope-scale", p.returncode == 1 and "--rope-scale" in p.stderr,
              p.stderr[-300:])
        for bad in ["0", "-2"]:
            p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--rope-scaling", "yarn", "--rope-scale", bad])
            check(f"--rope-scale {bad} is refused", p.returncode != 0 and "--rope-scale" in p.stderr, p.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--kv-type", "q4_0"])
        check("an unknown KV type is refused naming --kv-type", p.returncode != 0 and "--kv-type" in p.stderr, p.stderr[-300:])
        mini = os.path.join(SHARED, "models", "tiny", "tiny-ministral3")
        p = run(["generate", "-m", mini, "-p", "Hi", "-n", "2", "--ctx", "4096"])
        check("tiny-ministral3: --ctx past its YaRN context (2048) is refused", p.returncode == 1 and "YaRN" in p.stderr,
              p.stderr[-300:])
        p = run(["inspect", BF16, "--ranks", "4", "--ctx", "131072", "--kv-type", "f16", "--json"])
        j = json.loads(p.stdout) if p.returncode == 0 else None
        if j:
            ranks = j["plan"]["ranks"]
            kv_dim = j["config"]["n_kv_heads"] * j["config"]["head_dim"]
            want = [2 * 131072 * kv_dim * 2 * r["n_layers"] for r in ranks]
            check("inspect --ctx 131072 --kv-type f16: each rank's cache is 2 bytes per value",
                  [r["kv_bytes"] for r in ranks] == want, ([r["kv_bytes"] for r in ranks], want))
            check("inspect says whether each rank and all ranks fit this host",
                  j["plan"]["host_available_bytes"] > 0 and all("fits_host" in r for r in ranks)
                  and j["plan"]["need_bytes"] == sum(r["mapped_bytes"] + r["kv_bytes"] for r in ranks)
                  and j["plan"]["all_ranks_fit_host"] == (j["plan"]["need_bytes"] <= j["plan"]["host_available_bytes"]), j["plan"])
        else:
            check("inspect --ctx 131072 --kv-type f16", False, p.stderr[-300:])
        plain_j = run(["inspect", BF16, "--ctx", "8192", "--json"])
        yarn_j = run(["inspect", BF16, "--ctx", "8192", "--rope-scaling", "yarn", "--rope-scale", "2", "--json"])
        if plain_j.returncode == 0 and yarn_j.returncode == 0:
            a, b = json.loads(plain_j.stdout), json.loads(yarn_j.stdout)
            check("inspect --rope-scaling yarn --rope-scale 2: ctx 8192 is within the scaled context",
                  a["plan"]["ctx_exceeds_train"] and not b["plan"]["ctx_exceeds_train"]
                  and b["config"]["rope_scaling"]["type"] == "yarn" and b["config"]["n_ctx_train"] == 8192,
                  (a["plan"]["ctx_exceeds_train"], b["plan"]["ctx_exceeds_train"], b["config"]["rope_scaling"]))
        else:
            check("inspect with --rope-scaling", False, plain_j.stderr[-300:] + yarn_j.stderr[-300:])
        p = run(["generate", "-m", HF, "-p", "ROMEO:", "-n", "2", "--ctx", "4000000", "--force-ctx", "--kv-type", "f16"])
        check("a context whose cache does not fit is refused before loading, with weights and cache in GiB",
              p.returncode == 1 and "weights" in p.stderr and "KV cache (f16)" in p.stderr and "GiB" in p.stderr, p.stderr[-300:])

        # ── KV cache types: perplexity cost at --ctx 2048 ──
        ppl = {kv: perplexity(BF16, prefix, PPL_CTX, kv) for kv in KV_TYPES}
        print(f"perplexity at --ctx {PPL_CTX} (first {PPL_CHARS} characters): " +
              ", ".join(f"{k} {v:.4f}" for k, v in ppl.items()))
        for kv, bound in PPL_BOUND.items():
            rel = abs(ppl[kv] / ppl["f32"] - 1)
            check(f"--kv-type {kv}: perplexity within {bound:.1%} of f32", rel <= bound, f"{ppl[kv]} vs {ppl['f32']} ({rel:.4%})")

        # ── any split, the same bits, for every cache type ──
        for kv in KV_TYPES:
            one = perplexity(HF, short, 256, kv)
            three = perplexity(HF, short, 256, kv, ranks=3)
            check(f"--kv-type {kv}: perplexity on 1 and 3 ranks bit-identical", one == three, (one, three))

        # ── llama.cpp with the same cache type over the long prompt ──
        _, prompt_ids = dump_logits(BF16, tmp, "prompt", prompt_file=long_prompt)
        check(f"the long prompt crosses YaRN's original context ({YARN_ORIG})", len(prompt_ids) > YARN_ORIG, len(prompt_ids))
        if SANITIZER:
            print("sanitizer build: llama.cpp's greedy tokens are checked by the release build only")
        else:
            for kv in ["f16", "q8_0"]:
                along_llamacpp("bf16 GGUF", BF16, prompt_ids, kv, tmp)

        # ── YaRN ──
        yarn_hf = yarn_checkpoint(tmp)
        yarn_gguf = os.path.join(tmp, "smol-yarn-bf16.gguf")
        p = run(["convert", yarn_hf, "-o", yarn_gguf, "--type", "bf16"])
        check("convert writes the YaRN checkpoint", p.returncode == 0, p.stderr[-300:])
        p = run(["inspect", yarn_gguf, "--json"])
        scaling = json.loads(p.stdout)["config"]["rope_scaling"] if p.returncode == 0 else {}
        check(f"the GGUF says yarn, factor 4, original {YARN_ORIG}",
              scaling.get("type") == "yarn" and scaling.get("factor") == 4 and scaling.get("original_ctx") == YARN_ORIG, scaling)
        from_config, _ = dump_logits(yarn_hf, tmp, "yarn-hf", ids=prompt_ids)
        from_flags, _ = dump_logits(HF, tmp, "yarn-flags", ids=prompt_ids,
                                    extra=["--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", str(YARN_ORIG)])
        plain, _ = dump_logits(HF, tmp, "plain", ids=prompt_ids)
        check(f"--rope-scaling yarn --rope-scale 4 --yarn-orig-ctx {YARN_ORIG} == the YaRN config, bit for bit",
              np.array_equal(from_config, from_flags))
        moved = float(np.abs(from_config[YARN_ORIG:] - plain[YARN_ORIG:]).max())
        check("YaRN moves the logits past the original context (the check below is not vacuous)", moved > 0.05, moved)
        from_gguf, _ = dump_logits(yarn_gguf, tmp, "yarn-gguf", ids=prompt_ids)
        check("strata's YaRN GGUF == the YaRN checkpoint (top-1 at every position)",
              np.array_equal(from_gguf.argmax(axis=1), from_config.argmax(axis=1)),
              int((from_gguf.argmax(axis=1) != from_config.argmax(axis=1)).sum()))
        if not SANITIZER:
            along_llamacpp("YaRN GGUF", yarn_gguf, prompt_ids, "f16", tmp)

    harness.finish()


if __name__ == "__main__":
    main()
