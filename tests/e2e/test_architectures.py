#!/usr/bin/env python3
"""Every architecture end to end, against llama.cpp (node-llama-cpp,
installed by bench/peer/setup.sh) as the oracle for GGUF files:

- `strata convert` of each tiny HF model (../shared/models/tiny) to f32 and
  q8_0: llama.cpp loads strata's file; on f32 its greedy continuation is
  strata's, token for token; on q8_0 (where llama.cpp's activation
  quantization differs from strata's) every token llama.cpp picks is within
  the q8_0 format's own noise of strata's best (teacher-forced: strata's
  logits along llama.cpp's tokens; the noise is strata's q8_0 - f32 logits).
- `strata quantize` of the f32 file to q8_0 gives convert's q8_0 tensors.
- Qwen3-MoE, which has no HF model here: make-model's qwen3moe-tiny, the same
  checks against llama.cpp.
- Llama 3.1 rope scaling: the tiny Llama with rope_type llama3 (an original
  context of 64, crossed by the long prompt) gives the same greedy ids from
  its HF directory (transformers' formula), from strata's GGUF (llama.cpp's
  rope_freqs.weight divisors) and from llama.cpp; the scaling changes them.
- Under mpirun: perplexity of every tiny model on 1 and 3 ranks bit-identical,
  and inspect's layer kinds for LFM2.

Run by ctest: test_architectures.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, subprocess, sys, tempfile

try:
    import numpy as np
except ImportError:  # Debian's python3-numpy serves /usr/bin/python3
    if os.path.realpath(sys.executable) != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise

import harness
from harness import ROOT, check, run

SHARED = os.path.abspath(harness.SHARED)
TINY = os.path.join(SHARED, "models", "tiny")
GREEDY_JS = os.path.join(ROOT, "bench", "peer", "llamacpp-greedy.mjs")
MODELS = ["llama", "qwen2", "qwen3", "mistral", "ministral3", "mixtral", "lfm2"]


def reference(model):
    return json.load(open(os.path.join(SHARED, "reference", "tiny", f"tiny-{model}.json")))


def llamacpp_greedy(gguf, ids, n):
    p = subprocess.run(["node", GREEDY_JS, "-m", gguf, "--ids", ",".join(map(str, ids)), "-n", str(n)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"llama.cpp on {gguf}: {p.stderr.strip()[-300:]} (bench/peer/setup.sh installs node-llama-cpp)")
    return json.loads(p.stdout)["ids"]


def logits_along(model, ids, tmp, tag):
    """strata's logits at every position of `ids` (dump --ids)."""
    d = os.path.join(tmp, "dump-" + tag)
    p = run(["dump", "-m", model, "--ids", ",".join(map(str, ids)), "-o", d])
    if p.returncode != 0:
        raise RuntimeError(f"strata dump -m {model}: {p.stderr.strip()[-300:]}")
    return np.load(os.path.join(d, "logits.npy"))


def greedy_from_logits(model, prompt_ids, n, tmp, tag):
    """strata's greedy continuation of prompt_ids: generate with the prompt given as text would
    re-tokenize, so extend the ids with the argmax of dump's last logits, n times (the full
    recompute every step is what a KV cache must reproduce; the unit tests check that it does)."""
    ids = list(prompt_ids)
    for k in range(n):
        lg = logits_along(model, ids, tmp, f"{tag}-{k}")
        ids.append(int(np.argmax(lg[-1])))
    return ids[len(prompt_ids):]


def compare_with_llamacpp(label, gguf, noise_ref, prompt_ids, n, tmp):
    """f32 (noise_ref None): llama.cpp's greedy ids are strata's. Quantized: along llama.cpp's
    tokens, each one is within the format's own noise (|logits - noise_ref's logits|) of strata's max."""
    theirs = llamacpp_greedy(gguf, prompt_ids, n)
    lg = logits_along(gguf, prompt_ids + theirs[:-1], tmp, label)
    steps = lg[len(prompt_ids) - 1:]
    ours_first = [int(np.argmax(r)) for r in steps]
    if noise_ref is None:
        same = 0
        while same < n and ours_first[same] == theirs[same]:
            same += 1
        check(f"{label}: llama.cpp's greedy ids are strata's", same == n,
              f"{same}/{n} equal; llama.cpp {theirs[:8]}..., strata {ours_first[:8]}...")
        return
    ref_lg = logits_along(noise_ref, prompt_ids + theirs[:-1], tmp, label + "-ref")[len(prompt_ids) - 1:]
    worst = []
    for k, tok in enumerate(theirs):
        gap = float(steps[k].max() - steps[k][tok])
        noise = float(np.abs(steps[k] - ref_lg[k]).max())
        worst.append((gap - noise, gap, noise, k))
    bad = [w for w in worst if w[0] > 0]
    check(f"{label}: every token llama.cpp picks is within the format's noise of strata's best", not bad,
          f"steps past the noise (gap, noise, step): {[(round(g, 5), round(x, 5), k) for _, g, x, k in bad[:4]]}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for m in MODELS:
            hf = os.path.join(TINY, f"tiny-{m}")
            ids = reference(m)["cases"][0]["prompt_ids"]
            files = {}
            for t in ("f32", "q8_0"):
                files[t] = os.path.join(tmp, f"{m}-{t}.gguf")
                p = run(["convert", hf, "-o", files[t], "--type", t])
                check(f"convert tiny-{m} --type {t}", p.returncode == 0 and os.path.exists(files[t]), p.stderr.strip()[-300:])
            if not all(os.path.exists(f) for f in files.values()):
                continue
            try:
                compare_with_llamacpp(f"tiny-{m} f32", files["f32"], None, ids, 24, tmp)
                compare_with_llamacpp(f"tiny-{m} q8_0", files["q8_0"], files["f32"], ids, 24, tmp)
            except RuntimeError as e:
                check(f"tiny-{m} against llama.cpp", False, str(e))
            # quantize f32 -> q8_0 equals convert's q8_0 (the same rows quantized the same way).
            requant = os.path.join(tmp, f"{m}-q8_0-requant.gguf")
            p = run(["quantize", files["f32"], requant, "--type", "q8_0"])
            same = p.returncode == 0
            if same:
                a = logits_along(requant, ids, tmp, m + "-rq")
                b = logits_along(files["q8_0"], ids, tmp, m + "-cv")
                same = same and np.array_equal(a, b)
            check(f"tiny-{m}: quantize f32 -> q8_0 gives convert's q8_0", same, p.stderr.strip()[-300:])

        # Qwen3-MoE: make-model's tiny preset (random weights, the Llama-3 vocabulary).
        moe = {t: os.path.join(tmp, f"qwen3moe-{t}.gguf") for t in ("f32", "q8_0")}
        for t, path in moe.items():
            p = run(["make-model", "--preset", "qwen3moe-tiny", "--type", t, "-o", path,
                     "--vocab", os.path.join(SHARED, "tokenizer", "ggml-vocab-llama-bpe.gguf")])
            check(f"make-model qwen3moe-tiny --type {t}", p.returncode == 0, p.stderr.strip()[-300:])
        moe_ids = [128000, 3442, 6903, 25, 856, 38031, 198]  # "<|begin_of_text|>ROMEO: my lord\n"
        try:
            compare_with_llamacpp("qwen3moe-tiny f32", moe["f32"], None, moe_ids, 16, tmp)
            compare_with_llamacpp("qwen3moe-tiny q8_0", moe["q8_0"], moe["f32"], moe_ids, 16, tmp)
        except RuntimeError as e:
            check("qwen3moe-tiny against llama.cpp", False, str(e))

        # Llama 3.1 rope scaling on the tiny Llama.
        scaled = os.path.join(tmp, "tiny-llama3")
        os.makedirs(scaled)
        for f in os.listdir(os.path.join(TINY, "tiny-llama")):
            if f != "config.json":
                os.symlink(os.path.join(TINY, "tiny-llama", f), os.path.join(scaled, f))
        cfg = json.load(open(os.path.join(TINY, "tiny-llama", "config.json")))
        cfg["rope_parameters"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 64, "rope_theta": cfg["rope_parameters"]["rope_theta"]}
        json.dump(cfg, open(os.path.join(scaled, "config.json"), "w"))
        scaled_gguf = os.path.join(tmp, "llama3-f32.gguf")
        p = run(["convert", scaled, "-o", scaled_gguf, "--type", "f32"])
        check("convert a llama3-scaled Llama (writes rope_freqs.weight)", p.returncode == 0 and "rope_freqs.weight" in p.stderr,
              p.stderr.strip()[-300:])
        long_ids = reference("llama")["cases"][1]["prompt_ids"]
        try:
            theirs = llamacpp_greedy(scaled_gguf, long_ids, 8)
            from_hf = greedy_from_logits(scaled, long_ids, 8, tmp, "l3hf")
            from_gguf = greedy_from_logits(scaled_gguf, long_ids, 8, tmp, "l3gguf")
            plain = greedy_from_logits(os.path.join(TINY, "tiny-llama"), long_ids, 8, tmp, "plain")
            check("llama3 scaling: HF directory, strata's GGUF and llama.cpp give the same greedy ids",
                  from_hf == from_gguf == theirs, f"hf {from_hf} gguf {from_gguf} llama.cpp {theirs}")
            check("llama3 scaling changes the answer (it is applied)", from_hf != plain, f"{from_hf} vs unscaled {plain}")
        except RuntimeError as e:
            check("llama3 scaling against llama.cpp", False, str(e))

        # Any split: perplexity of every tiny model on 1 and 3 ranks.
        text = os.path.join(tmp, "val.txt")
        open(text, "w").write(open(os.path.join(SHARED, "text", "shakespeare-val.txt")).read()[:3000])
        for m in MODELS:
            hf = os.path.join(TINY, f"tiny-{m}")
            ppl = {}
            for ranks in (0, 3):
                p = run(["perplexity", "-m", hf, "-f", text, "--ctx", "128", "--json"], ranks=ranks, timeout=300)
                lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
                ppl[ranks] = json.loads(lines[-1])["ppl"] if p.returncode == 0 and lines else p.stderr.strip()[-200:]
            check(f"tiny-{m}: perplexity on 1 rank equals 3 ranks", isinstance(ppl[0], float) and ppl[0] == ppl[3], str(ppl))

        p = run(["inspect", os.path.join(TINY, "tiny-lfm2"), "--json"])
        kinds = json.loads(p.stdout)["config"]["layer_kinds"] if p.returncode == 0 else p.stderr
        check("inspect names LFM2's layer kinds", kinds == ["conv", "conv", "attention", "conv", "attention", "conv"], str(kinds))

    harness.finish()


if __name__ == "__main__":
    main()
