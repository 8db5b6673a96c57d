#!/usr/bin/env python3
"""Throughput tooling end to end: `strata make-model` writes a GGUF with a
preset's shapes, llama.cpp's Q4_K_M type mix and the Llama-3 vocabulary,
which strata loads and runs; `strata bench` reports its figures as JSON on 1
rank and under mpirun (per-stage counters, bytes sent per token = hidden x 4
with the f32 wire), and batched generation keeps every sequence's tokens.

Run by ctest: test_bench.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, tempfile

import harness
from harness import SHARED, check, run

MODEL = harness.SMALL_MODEL
VOCAB = os.path.join(SHARED, "tokenizer", "ggml-vocab-llama-bpe.gguf")


def spread_ok(s):
    return 0 < s["min"] <= s["median"] <= s["max"]


with tempfile.TemporaryDirectory() as d:
    tiny = os.path.join(d, "tiny-q4_k_m.gguf")
    p = run(["make-model", "--preset", "smollm3-tiny", "--type", "q4_k_m", "--vocab", VOCAB, "-o", tiny, "--seed", "3"])
    check("make-model writes a file", p.returncode == 0 and os.path.exists(tiny), p.stderr[-300:])
    p = run(["inspect", tiny, "--json"])
    try:
        j = json.loads(p.stdout)
        types = {t["name"]: t["type"] for t in j["tensors"]}
        # 4 layers: llama.cpp's Q4_K_M gives attn_v / ffn_down of layers 2 and 3 Q6_K.
        mix = (types["token_embd.weight"] == "Q6_K" and types["blk.0.attn_v.weight"] == "Q4_K"
               and types["blk.2.attn_v.weight"] == "Q6_K" and types["blk.3.ffn_down.weight"] == "Q6_K"
               and types["blk.1.ffn_down.weight"] == "Q4_K" and types["blk.0.attn_q.weight"] == "Q4_K"
               and types["blk.0.attn_norm.weight"] == "F32")
        check("make-model: Q4_K_M type mix and shapes", mix and j["config"]["vocab"] == 128256 and j["config"]["n_layers"] == 4,
              str({k: v for k, v in types.items() if "blk.0" in k or "blk.2" in k}))
    except Exception as e:  # noqa: BLE001
        check("make-model: Q4_K_M type mix and shapes", False, f"{e}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")
    p = run(["generate", "-m", tiny, "-p", "Hello world", "-n", "4", "--temp", "0", "--json"])
    try:
        j = json.loads(p.stdout)
        check("the made model runs with the Llama-3 vocabulary",
              p.returncode == 0 and j["prompt_ids"] == [128000, 9906, 1917] and len(j["ids"]) == 4, p.stdout[:300])
    except Exception as e:  # noqa: BLE001
        check("the made model runs", False, f"{e}: {p.stderr[-300:]!r}")
    again = os.path.join(d, "again.gguf")
    p = run(["make-model", "--preset", "smollm3-tiny", "--type", "q4_k_m", "--vocab", VOCAB, "-o", again, "--seed", "3", "-t", "1"])
    check("make-model is reproducible for a seed, whatever the threads",
          p.returncode == 0 and open(tiny, "rb").read() == open(again, "rb").read())
    p = run(["make-model", "--preset", "nope", "-o", again])
    check("make-model names a bad preset", p.returncode == 1 and "--preset 'nope'" in p.stderr, p.stderr[-300:])

    bench = ["bench", "-m", MODEL, "--prompt-tokens", "24", "--gen-tokens", "6", "--reps", "2", "-t", "1", "--json"]
    p = run(bench)
    try:
        j = json.loads(p.stdout)
        ok = (p.returncode == 0 and j["stages"] == 1 and all(spread_ok(j[k]) for k in ("prefill_tok_s", "decode_tok_s", "ttft_ms"))
              and len(j["per_stage"]) == 1 and j["per_stage"][0]["weight_bytes"] > 0 and j["per_stage"][0]["rss_bytes"] > 0
              and j["per_stage"][0]["rss_peak_bytes"] >= j["per_stage"][0]["rss_bytes"]
              and j["decode_fill_drain_pct"] == 0 == j["prefill_fill_drain_pct"])
        check("bench on 1 rank: JSON with prefill, TTFT, decode spreads and memory", ok, p.stdout[:400] + p.stderr[-300:])
    except Exception as e:  # noqa: BLE001
        check("bench on 1 rank", False, f"{e}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")

    p = run([*bench, "--parallel", "3", "--no-mmap"], ranks=2, timeout=300)  # the workers copy their slices too
    try:
        j = json.loads(p.stdout)
        st = j["per_stage"]
        ok = (p.returncode == 0 and j["stages"] == 2 and j["inflight"] == 2 and len(st) == 2 and st[1]["rank"] == 1
              and st[0]["layers"][0] == 0 and st[1]["layers"][1] == 35 and st[0]["layers"][1] + 1 == st[1]["layers"][0]
              # f32 activations of hidden 256 travel from stage 0 to stage 1; the last stage sends none on.
              and st[0]["decode_bytes_sent_per_token"] == 256 * 4 and st[1]["decode_bytes_sent_per_token"] == 0
              and 0 <= j["decode_bubble_pct"] <= 100 and spread_ok(j["decode_tok_s"])
              # both stages ran every micro-batch; filling and draining 2 stages idles each
              # for 1 of b + 1 slots (b: a repetition's micro-batches, 2 repetitions)
              and st[0]["decode_batches"] == st[1]["decode_batches"] > 0
              and abs(j["decode_fill_drain_pct"] - 100 / (st[0]["decode_batches"] / 2 + 1)) < 1
              and abs(j["prefill_fill_drain_pct"] - 100 / (st[0]["prefill_batches"] / 2 + 1)) < 1
              # each rank's own peak resident memory comes back with its counters
              and all(s["rss_peak_bytes"] >= s["rss_bytes"] > 0 for s in st)
              # the shared lm_head (auto, as decode fills the pipeline): the two stages' rows
              # cover the vocabulary (8192), rank 0's within the half it holds
              and st[0]["lm_head_rows"] + st[1]["lm_head_rows"] == 8192 and 0 <= st[0]["lm_head_rows"] <= 4096)
        check("bench on 2 ranks: per-stage counters, f32 wire bytes per token, lm_head rows", ok, p.stdout[:600] + p.stderr[-300:])
    except Exception as e:  # noqa: BLE001
        check("bench on 2 ranks", False, f"{e}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")

    p = run([*bench, "--parallel", "2", "--share-lm-head", "off"], ranks=2, timeout=300)
    try:
        st = json.loads(p.stdout)["per_stage"]
        check("bench --share-lm-head off: the last stage computes every lm_head row",
              p.returncode == 0 and st[0]["lm_head_rows"] == 0 and st[1]["lm_head_rows"] == 8192, p.stdout[:400] + p.stderr[-300:])
    except Exception as e:  # noqa: BLE001
        check("bench --share-lm-head off", False, f"{e}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")

    # Decode at depth: one run per repetition, the sequences' G tokens after their P-token prompts.
    p = run(["bench", "-m", MODEL, "--prompt-tokens", "40", "--gen-tokens", "5", "--reps", "1", "-t", "1", "--json",
             "--decode-at-depth", "--parallel", "2"], ranks=2, timeout=300)
    try:
        j = json.loads(p.stdout)
        st = j["per_stage"]
        ok = (p.returncode == 0 and j["decode_at_depth"] is True and spread_ok(j["prefill_tok_s"]) and spread_ok(j["decode_tok_s"])
              and all(0 < s["decode_busy_pct"] <= 100 for s in st)
              # the run's bytes over the tokens it ran (prompt and decoded), not over the decoded ones alone
              and st[0]["prefill_bytes_sent_per_token"] == 256 * 4 and st[0]["decode_bytes_sent_per_token"] == 256 * 4)
        check("bench --decode-at-depth on 2 ranks: prefill and decode from one run, busy shares within 0-100 %, "
              "f32 wire bytes per token", ok,
              p.stdout[:600] + p.stderr[-300:])
    except Exception as e:  # noqa: BLE001
        check("bench --decode-at-depth", False, f"{e}: {p.stdout[:300]!r} {p.stderr[-300:]!r}")

    p = run(["bench", "-m", MODEL, "--prompt-tokens", "99999", "--ctx", "512"])
    check("bench names a prompt that does not fit", p.returncode == 1 and "--ctx 512" in p.stderr, p.stderr[-300:])

harness.finish()
