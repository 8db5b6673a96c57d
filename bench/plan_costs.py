#!/usr/bin/env python3
"""Measures what each weight type costs per byte, in decode and in prefill, on
this machine, with the kernel benches (bench/bench_kernels.cc), and prints the
table that coordinator/plan.cc's `auto` plan uses (kTypeCosts).

  decode  n tokens (1, 2, 4): BM_MatMulCold, weights streamed from DRAM as a
          decoding rank reads them;
  prefill 64 tokens: BM_MatMul;
both on 1 thread, in the layout a loaded stage keeps (row-interleaved for
Q4_K, Q6_K and Q8_0), averaged over SmolLM3-3B's two FFN shapes (2048 x 11008
and 11008 x 2048). Cost per byte counts the bytes of the model file, which is
what the planner knows.

  bench/plan_costs.py build/bin/strata_kernel_bench [--min-time 0.3] [--repetitions 3]

Times are CPU time of the benchmark's thread (a 1-thread pool computes on
the caller), not wall time: on a machine shared with other work, a wall
clock also counts the time the thread waits for a core. Each figure is the
fastest of the repetitions, which run in random order
(--benchmark_enable_random_interleaving): on a machine shared with other
work, the fastest run is the one least disturbed, and a disturbance spreads
over all types instead of landing on one.
"""
import json, subprocess, sys

BENCH = sys.argv[1] if len(sys.argv) > 1 else "build/bin/strata_kernel_bench"
MIN_TIME = sys.argv[sys.argv.index("--min-time") + 1] if "--min-time" in sys.argv else "0.3"
REPS = sys.argv[sys.argv.index("--repetitions") + 1] if "--repetitions" in sys.argv else "3"
# ggml type id -> (name, bits per weight in the file, the stage interleaves it)
TYPES = {0: ("F32", 32, False), 1: ("F16", 16, False), 30: ("BF16", 16, False), 8: ("Q8_0", 8.5, True),
         2: ("Q4_0", 4.5, False), 6: ("Q5_0", 5.5, False), 12: ("Q4_K", 4.5, True), 13: ("Q5_K", 5.5, False),
         14: ("Q6_K", 6.5625, True)}
SHAPES = [(2048, 11008), (11008, 2048)]


def run(name, n_toks):
    parts = []
    for t, (_, _, x8) in TYPES.items():
        for n_in, n_out in SHAPES:
            for n in n_toks:
                parts.append(f"{name}/type:{t}/n_in:{n_in}/n_out:{n_out}/n_tok:{n}/threads:1/x8:{int(x8)}/")
    flt = "^(" + "|".join(p.replace("/", "/") for p in parts) + ")"
    out = subprocess.run([BENCH, f"--benchmark_filter={flt}", f"--benchmark_min_time={MIN_TIME}",
                          f"--benchmark_repetitions={REPS}", "--benchmark_enable_random_interleaving=true",
                          "--benchmark_format=json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["benchmarks"]


def per_byte(benchmarks):
    """{(type, n_tok): ns per file byte, averaged over the shapes}"""
    best = {}
    for b in benchmarks:
        if b.get("run_type") == "aggregate":
            continue
        best[b["run_name"]] = min(best.get(b["run_name"], float("inf")), b["cpu_time"])
    acc = {}
    for b in benchmarks:
        if b.get("run_type") == "aggregate" or b["cpu_time"] != best[b["run_name"]]:
            continue
        best[b["run_name"]] = None  # one run per name
        f = dict(kv.split(":") for kv in b["name"].split("/")[1:] if ":" in kv)
        t, n_in, n_out, n = int(f["type"]), int(f["n_in"]), int(f["n_out"]), int(f["n_tok"])
        file_bytes = n_in * n_out * TYPES[t][1] / 8
        ns = b["cpu_time"] * {"us": 1e3, "ms": 1e6, "ns": 1.0}[b["time_unit"]]
        acc.setdefault((t, n), []).append(ns / file_bytes)
    return {k: sum(v) / len(v) for k, v in acc.items()}  # the two shapes


cold = per_byte(run("BM_MatMulCold", (1, 2, 4)))
hot = per_byte(run("BM_MatMul", (64,)))
print("// ns per byte of the file: decode of 1, 2, 4 tokens (BM_MatMulCold), prefill of 64 (BM_MatMul)")
for t, (name, _, _) in TYPES.items():
    vals = [cold.get((t, 1)), cold.get((t, 2)), cold.get((t, 4)), hot.get((t, 64))]
    if None in vals:
        print(f"// {name}: not measured", file=sys.stderr)
        continue
    print(f"    {{TensorType::k{name}, {{{vals[0]:.4f}, {vals[1]:.4f}, {vals[2]:.4f}}}, {vals[3]:.4f}}},")
