#!/usr/bin/env python3
"""End-to-end tests that launch mpirun: the pipeline gives the same ids and
perplexity for any split, rejects bad plans and mismatched models before
loading, and ends the whole job promptly when a rank fails.

Run by ctest: test_mpi.py BINARY SHARED_DIR. Every mpirun has a timeout.
Prints 'N passed, N failed'."""
import json, os, subprocess, tempfile, time

import harness
from harness import BIN, SHARED, check

HF = os.path.join(SHARED, "models", "smol-shakespeare")
Q4 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-q4_k_m.gguf")
BF16 = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-bf16.gguf")
VAL = os.path.join(SHARED, "text", "shakespeare-val.txt")
ENV = dict(harness.MPI_ENV, OMPI_MCA_mpi_yield_when_idle="1")
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def mpirun(ranks, args, mpi_args=(), timeout=240, mpmd=None):
    cmd = [*harness.MPIRUN, *mpi_args]
    if mpmd:  # one program line per rank group: [(n, args), ...]
        for i, (n, a) in enumerate(mpmd):
            cmd += ([":"] if i else []) + ["-np", str(n), BIN, *a]
    else:
        cmd += ["-np", str(ranks), BIN, *args]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        return None, f"timed out after {timeout}s: {(e.stderr or b'')[-400:]!r}", timeout
    return p, p.stderr, time.time() - t0


def ids_of(p):
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])["ids"]


def gen_args(model, extra=()):
    return ["generate", "-m", model, "-p", PROMPT, "-n", "16", "--temp", "0", "--ignore-eos", "--json", "-t", "1", *extra]


base = json.loads(subprocess.run([BIN, *gen_args(Q4)], capture_output=True, text=True, timeout=120).stdout)["ids"]

# Same ids for 1..4 ranks, auto and explicit plans, TCP, coordinator-only.
cases = [
    ("1 rank", 1, (), ()),
    ("2 ranks auto", 2, (), ()),
    ("3 ranks auto", 3, (), ()),
    ("4 ranks auto", 4, (), ()),
    ("3 ranks uneven plan", 3, ("--split", "0-4,5-30,31-35"), ()),
    ("4 ranks one-layer stages", 4, ("--split", "0,1-33,34,35"), ()),
    ("2 ranks over TCP", 2, (), ("--mca", "btl", "tcp,self")),
    ("3 ranks coordinator-only", 3, ("--coordinator-only",), ()),
    # The lm_head shared by rank 0 and the last stage (fixed shares; auto
    # shares only when decode can fill the pipeline: test_bench.py, and
    # test_server.py's concurrent sampled requests on 2 ranks).
    ("2 ranks, half the lm_head on rank 0", 2, ("--share-lm-head", "0.5"), ()),
    ("3 ranks, all the lm_head on rank 0", 3, ("--share-lm-head", "1"), ()),
]
for name, ranks, extra, mpi in cases:
    p, err, _ = mpirun(ranks, gen_args(Q4, extra), mpi)
    ok = p is not None and p.returncode == 0 and ids_of(p) == base
    check(f"ids identical: {name}", ok, err[-400:] if not ok else "")

# A shared lm_head samples from both parts' candidates: the same tokens as
# one process with top-k, top-p, min-p, temperature, penalty and bias on,
# with a share that is not a whole number of interleaved groups, and on an
# f32 model (rows not interleaved).
sampled = ["--temp", "0.9", "--top-k", "30", "--top-p", "0.9", "--min-p", "0.02", "--repeat-penalty", "1.2", "--seed", "11"]
for model, share in ((Q4, "0.37"), (os.path.join(SHARED, "models", "tiny", "tiny-qwen3-f32.gguf"), "0.6")):
    args = ["generate", "-m", model, "-p", PROMPT, "-n", "24", "--ignore-eos", "--json", "-t", "1", *sampled]
    one = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    p, err, _ = mpirun(2, args + ["--share-lm-head", share])
    ok = one.returncode == 0 and p is not None and p.returncode == 0 and ids_of(p) == ids_of(one) and "lm_head rows" in err
    check(f"sampled ids identical with {share} of the lm_head on rank 0 ({os.path.basename(model)})", ok, err[-400:] if not ok else "")

p, err, _ = mpirun(2, gen_args(HF))
check("HF directory on 2 ranks", p is not None and p.returncode == 0 and len(ids_of(p)) == 16, err[-300:])

# Perplexity bit-identical for 1 and 3 ranks (a part of the text, for time).
with tempfile.TemporaryDirectory() as d:
    part = os.path.join(d, "part.txt")
    # STRATA_E2E_SANITIZER (the sanitizer build, launch/sanitize.sh): same checks, less text.
    open(part, "w").write(open(VAL).read()[:3000 if os.environ.get("STRATA_E2E_SANITIZER") else 20000])
    ppl_args = ["perplexity", "-m", Q4, "-f", part, "--ctx", "256", "--json", "-t", "1"]
    one = subprocess.run([BIN, *ppl_args], capture_output=True, text=True, timeout=300, env=ENV)
    p, err, _ = mpirun(3, ppl_args)
    try:
        a = json.loads(one.stdout.splitlines()[-1])["ppl"]
        b = json.loads(p.stdout.splitlines()[-1])["ppl"]
        check("perplexity identical on 1 and 3 ranks", a == b, f"{a} vs {b}")
    except Exception as e:  # noqa: BLE001
        check("perplexity identical on 1 and 3 ranks", False, f"{e}: {err[-300:]}")
    # Smaller wire types run and cost little accuracy (not bit-identical).
    for w in ("bf16", "q8_0"):
        p, err, _ = mpirun(2, ppl_args + ["--wire", w])
        try:
            got = json.loads(p.stdout.splitlines()[-1])["ppl"]
            check(f"--wire {w} perplexity within 1%", abs(got - a) / a < 0.01, f"{got} vs f32 {a}")
        except Exception as e:  # noqa: BLE001
            check(f"--wire {w} perplexity within 1%", False, f"{e}: {err[-300:]}")


def expect_failure(name, ranks, args, words, mpmd=None, limit=30):
    p, err, secs = mpirun(ranks, args, mpmd=mpmd, timeout=60)
    ok = p is not None and p.returncode != 0 and all(w in err for w in words) and secs < limit
    check(name, ok, f"rc {p and p.returncode}, {secs:.1f}s, stderr {err[-500:]!r}")


# Invalid plans are rejected before loading, naming the problem.
expect_failure("plan with a gap", 2, gen_args(Q4, ("--split", "0-10,12-35")), ["11"])
expect_failure("overlapping plan", 2, gen_args(Q4, ("--split", "0-20,20-35")), ["layer 20", "in both"])
expect_failure("plan with too few ranges", 3, gen_args(Q4, ("--split", "0-17,18-35")), ["2 ranges", "3 stages"])
expect_failure("plan out of range", 2, gen_args(Q4, ("--split", "0-17,18-40")), ["40"])
expect_failure("a share of the lm_head past 1", 2, gen_args(Q4, ("--share-lm-head", "1.5")), ["--share-lm-head", "1.5", "0 to 1"])
# Two nodes with different model files: the handshake stops every rank.
expect_failure("mismatched model files", 2, None, ["rank 1", "different model"],
               mpmd=[(1, gen_args(Q4)), (1, gen_args(BF16))])
# A rank that fails to load: the error (with its rank) reaches rank 0, the job ends.
with tempfile.TemporaryDirectory() as d:
    broken = os.path.join(d, "broken.gguf")
    open(broken, "wb").write(open(Q4, "rb").read()[:1 << 20])
    expect_failure("a rank that fails to load", 3, None, ["rank 2", broken],
                   mpmd=[(2, gen_args(Q4)), (1, gen_args(broken))])

harness.finish()
