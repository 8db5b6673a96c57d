#!/usr/bin/env python3
"""strata on a cluster in miniature: links of chosen speeds, wire types, uneven hosts.

Needs root (launch/strata-cluster). Brings up a cluster of HOSTS hosts, runs
`strata bench` through `launch/strata-mpirun --cluster` (one rank per host, MPI
over TCP on the cluster's own subnet) and prints markdown tables; the cluster
is taken down at the end, on error and on Ctrl-C.

  links   for each link rate and wire type: prefill tok/s and time to first
          token of one P-token prompt, aggregate decode with --parallel 8,
          both bubbles, bytes sent per token per link.
  uneven  one host under a CPU quota: --split auto against --split measure,
          prefill and decode.

  bench/cluster_links.py links  MODEL [--links none,10gbit,1gbit,100mbit] [--wires f32,bf16,f16,q8_0,auto]
  bench/cluster_links.py uneven MODEL [--slow-cpus 0.5]
common: [--hosts 2] [--reps 3] [--prompt-tokens 512] [--parallel 8] [--json-out FILE] [--name NAME]
"""
import argparse
import json
import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "launch", "strata-cluster")
MPIRUN = os.path.join(REPO, "launch", "strata-mpirun")
STRATA = os.environ.get("STRATA_BIN", os.path.join(REPO, "build", "bin", "strata"))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def bench(name, model, extra, args):
    """One `strata bench --json` across the cluster (medians of --reps); returns its JSON."""
    cmd = [MPIRUN, "--cluster", name, "--", STRATA, "bench", "-m", model, "-t", "1",
           "--reps", str(args.reps), "--json"] + extra
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, text=True, capture_output=True, timeout=args.timeout)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"cluster_links: bench failed (exit {p.returncode}): {' '.join(cmd)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def prefill_and_decode(name, model, args, extra):
    """Prefill of one long prompt, then aggregate decode of --parallel sequences."""
    pre = bench(name, model, ["--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", "8",
                              "--parallel", "1"] + extra, args)
    dec = bench(name, model, ["--prompt-tokens", "32", "--gen-tokens", "32",
                              "--parallel", str(args.parallel)] + extra, args)
    return {
        "prefill_tok_s": pre["prefill_tok_s"]["median"],
        "ttft_ms": pre["ttft_ms"]["median"],
        "prefill_bubble_pct": pre["prefill_bubble_pct"],
        "prefill_bytes_per_token": pre["per_stage"][0]["prefill_bytes_sent_per_token"],
        "decode_tok_s": dec["decode_tok_s"]["median"],
        "decode_bubble_pct": dec["decode_bubble_pct"],
        "decode_bytes_per_token": dec["per_stage"][0]["decode_bytes_sent_per_token"],
        "layers": [s["layers"] for s in pre["per_stage"]],
        "decode_layers": [s["layers"] for s in dec["per_stage"]],
        "prefill_json": pre, "decode_json": dec,
    }


def set_links(name, hosts, rate):
    for i in range(1, hosts + 1):
        run([CLUSTER, "link", name, f"{name}-h{i}", "rate", rate], stdout=subprocess.DEVNULL)


def links(args):
    rows = []
    for rate in args.links.split(","):
        set_links(args.name, args.hosts, rate)
        for wire in args.wires.split(","):
            print(f"link {rate}, wire {wire}", file=sys.stderr, flush=True)
            r = prefill_and_decode(args.name, args.model, args, ["--wire", wire])
            # --wire auto: the type the link was given at start-up (each bench run probes it).
            chosen = {run["per_stage"][0].get("sends", "?") for run in (r["prefill_json"], r["decode_json"])}
            r.update(link=rate, wire=wire if wire != "auto" else "auto: " + "/".join(sorted(chosen)))
            rows.append(r)
    print(f"| link | wire | prefill tok/s | TTFT {args.prompt_tokens} tokens | decode tok/s (--parallel {args.parallel}) "
          "| bubble prefill / decode | bytes per token per link |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {'unlimited' if r['link'] == 'none' else r['link']} | {r['wire']} | {r['prefill_tok_s']:.1f} "
              f"| {r['ttft_ms'] / 1000:.2f} s | {r['decode_tok_s']:.1f} "
              f"| {r['prefill_bubble_pct']:.1f} / {r['decode_bubble_pct']:.1f} % | {r['decode_bytes_per_token']:.0f} |")
    return rows


def uneven(args):
    rows = []
    for split in ("auto", "measure"):
        print(f"split {split}", file=sys.stderr, flush=True)
        r = prefill_and_decode(args.name, args.model, args, ["--split", split])
        r.update(split=split)
        rows.append(r)
    print(f"| `--split` | layers (prefill run) | layers (decode run) | prefill tok/s | TTFT {args.prompt_tokens} tokens "
          f"| decode tok/s (--parallel {args.parallel}) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        lay = lambda ls: ", ".join(f"{a}-{b}" for a, b in ls)
        print(f"| {r['split']} | {lay(r['layers'])} | {lay(r['decode_layers'])} | {r['prefill_tok_s']:.1f} "
              f"| {r['ttft_ms'] / 1000:.2f} s | {r['decode_tok_s']:.1f} |")
    a, m = rows
    print(f"\nmeasure / auto: prefill {m['prefill_tok_s'] / a['prefill_tok_s']:.2f}x, "
          f"decode {m['decode_tok_s'] / a['decode_tok_s']:.2f}x")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["links", "uneven"])
    ap.add_argument("model")
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--links", default="none,10gbit,1gbit,100mbit")
    ap.add_argument("--wires", default="f32,bf16,f16,q8_0")
    ap.add_argument("--slow-cpus", default="0.5", help="uneven: the CPU share of the last host")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per bench run (medians reported)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per bench run")
    ap.add_argument("--name", default="sbench")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cluster_links: needs root (launch/strata-cluster)")
    if not os.path.isfile(args.model):
        raise SystemExit(f"cluster_links: model file not found: {args.model}")
    up = [CLUSTER, "up", args.name, "--hosts", str(args.hosts)]
    if args.what == "uneven":
        up += ["--cpus", f"{args.name}-h{args.hosts}={args.slow_cpus}"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run(up)
    try:
        rows = links(args) if args.what == "links" else uneven(args)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        subprocess.run([CLUSTER, "down", args.name])


if __name__ == "__main__":
    main()
