#!/usr/bin/env python3
"""Layer-split debugging end to end: `strata dump` of the shared HF model
diffs against transformers' hidden states within 1e-4 relative L2 at every
layer; dumps from 1 rank and 4 ranks are identical; a deliberately broken
layer (rank 2 perturbs the activations it receives, in the strata_faults
test binary) is found by `strata diff`, which names rank 2's first layer and
that rank; numpy loads the dumped files.

Run by ctest: test_dump.py BINARY SHARED_DIR FAULTS_BINARY. Prints 'N passed, N failed'."""
import json, os, subprocess, tempfile

import harness
from harness import FAULTS, SHARED, check, run

HF = os.path.join(SHARED, "models", "smol-shakespeare")
REF = os.path.join(SHARED, "reference", "smol-shakespeare.hidden_states.npy")


prompt = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))["cases"][0]["prompt"]
with tempfile.TemporaryDirectory() as d:
    pfile = os.path.join(d, "prompt.txt")
    open(pfile, "w").write(prompt)
    one, four, bad = (os.path.join(d, n) for n in ("one", "four", "bad"))
    p = run(["dump", "-m", HF, "-f", pfile, "-o", one, "-t", "1"])
    check("dump on 1 rank", p.returncode == 0 and os.path.exists(os.path.join(one, "manifest.json")), p.stderr[-300:])

    p = run(["diff", one, REF, "--json"])
    try:
        j = json.loads(p.stdout)
        worst = max(e["rel_l2"] for e in j["entries"])
        check("dump vs transformers hidden states: every layer rel L2 <= 1e-4",
              p.returncode == 0 and j["ok"] and len(j["entries"]) == 37 and worst <= 1e-4, f"worst {worst}, rc {p.returncode}")
    except Exception as e:  # noqa: BLE001
        check("dump vs transformers hidden states", False, f"{e}: {p.stdout[:200]!r} {p.stderr[-200:]!r}")

    p = run(["dump", "-m", HF, "-f", pfile, "-o", four, "-t", "1", "--split", "0-4,5-19,20-30,31-35"], ranks=4)
    check("dump on 4 ranks", p.returncode == 0, p.stderr[-300:])
    p = run(["diff", one, four, "--json", "--tol", "0"])
    try:
        j = json.loads(p.stdout)
        zero = all(e["max_abs"] == 0 for e in j["entries"])
        check("1-rank and 4-rank dumps identical (diff reports zero)", p.returncode == 0 and zero and len(j["entries"]) == 39,
              p.stdout[:300])
    except Exception as e:  # noqa: BLE001
        check("1-rank and 4-rank dumps identical", False, f"{e}: {p.stdout[:200]!r} {p.stderr[-200:]!r}")
    man = json.load(open(os.path.join(four, "manifest.json")))
    check("manifest names the rank of each layer", man["layers"]["20"]["rank"] == 2 and man["prompt_ids"][:3] == [650, 1131, 268]
          and len(man["plan"]) == 4, str(man.get("plan")))

    p = run(["--fault", "perturb-input@2", "dump", "-m", HF, "-f", pfile, "-o", bad, "-t", "1", "--split", "0-4,5-19,20-30,31-35"],
            ranks=4, binary=FAULTS)
    check("dump with a broken layer", p.returncode == 0, p.stderr[-300:])
    p = run(["diff", bad, one, "--json"])
    try:
        j = json.loads(p.stdout)
        fb = j["first_bad"]
        check("diff names the broken layer and its rank", p.returncode == 1 and fb["name"] == "layer_020" and fb["rank"] == 2,
              str(fb))
    except Exception as e:  # noqa: BLE001
        check("diff names the broken layer and its rank", False, f"{e}: {p.stdout[:200]!r}")
    p = run(["diff", bad, one])
    check("diff text names the first divergence", p.returncode == 1 and "layer_020" in p.stdout and "rank 2" in p.stdout,
          p.stdout[-300:])

    numpy = "/usr/bin/python3"
    if os.path.exists(numpy):
        code = (f"import numpy; a=numpy.load('{one}/layer_010.npy'); l=numpy.load('{one}/logits.npy'); "
                "assert a.shape==(13,256) and a.dtype==numpy.float32 and l.shape==(13,8192); print('ok')")
        p = subprocess.run([numpy, "-c", code], capture_output=True, text=True, timeout=60)
        check("numpy.load reads the dump", p.returncode == 0 and "ok" in p.stdout, p.stderr[-300:])

    # A trace of a 4-rank bench: valid trace-event JSON, every rank and span kind.
    trace = os.path.join(d, "trace.json")
    p = run(["bench", "-m", HF, "--prompt-tokens", "16", "--gen-tokens", "4", "--parallel", "2", "--reps", "1", "-t", "1",
             "--trace", trace], ranks=4)
    try:
        events = json.load(open(trace))["traceEvents"]
        spans = {(e["pid"], e["cat"]) for e in events if e["ph"] == "X"}
        names = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
        want = {(r, c) for r in range(4) for c in ("compute", "send", "recv", "wait")}
        layers = {e["name"] for e in events if e["ph"] == "X" and e["cat"] == "compute"}
        ok = (p.returncode == 0 and want <= spans and names == {0, 1, 2, 3} and {f"layer {i}" for i in range(36)} <= layers
              and all(e["dur"] >= 0 and e["ts"] >= 0 for e in events if e["ph"] == "X")
              and sum("trace: rank" in l for l in p.stderr.splitlines()) == 4)
        check("4-rank trace: valid trace-event JSON with every rank and span kind", ok, f"missing {want - spans}, {p.stderr[-300:]}")
    except Exception as e:  # noqa: BLE001
        check("4-rank trace: valid trace-event JSON with every rank and span kind", False, f"{e}: {p.stderr[-300:]}")

harness.finish()
