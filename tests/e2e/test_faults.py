#!/usr/bin/env python3
"""Dead, stuck and misbehaving ranks end the job promptly with a message
that says what happened: a worker killed with SIGKILL mid-generation (job
ends non-zero within 10 s naming the rank, no orphan processes); a stopped
worker (SIGSTOP: invisible to MPI) is found by --stage-timeout, which names
its stage and aborts the job; a worker that is merely slow changes nothing;
SIGTERM to mpirun stops every rank; malformed headers are reported by the
receiving rank; a rank that stops between a header and its payload is found
by --stage-timeout; a KV cache that cannot fit is refused before allocation;
a prompt longer than the context is an error unless --truncate. The faults a
rank cannot be made to commit from outside (a corrupt header, a stop between
header and payload) come from the strata_faults test binary
(worker/fault_injection.h).

Run by ctest: test_faults.py BINARY SHARED_DIR FAULTS_BINARY. Prints 'N passed, N failed'."""
import json, os, signal, subprocess, sys, tempfile, time

BIN, SHARED, FAULTS = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "smol-shakespeare-q4_k_m.gguf")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def mpirun(n, args, binary=BIN):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(n), binary, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)


def rank_pids(tag):
    """pid of each strata rank whose command line contains `tag`, by MPI rank."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if not cmd or not cmd[0].endswith((b"/strata", b"/strata_faults")) or tag.encode() not in b" ".join(cmd):
                continue
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    out[int(e.split(b"=")[1])] = int(pid)
        except OSError:
            pass
    return out


def wait_ranks(tag, n, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        pids = rank_pids(tag)
        if len(pids) == n:
            return pids
        time.sleep(0.2)
    return rank_pids(tag)


def finish(p, timeout):
    t0 = time.time()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err, time.time() - t0
    return p.returncode, out, err, time.time() - t0


def no_orphans(tag):
    time.sleep(1)
    left = rank_pids(tag)
    for pid in left.values():  # clean up whatever is left, so later tests run
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return not left


def long_generate(tag, extra=()):
    # --ctx doubles as a tag that finds this job's processes.
    return ["generate", "-m", MODEL, "-p", "ROMEO:", "-n", "100000", "--ignore-eos", "--temp", "0", "-t", "1",
            "--ctx", tag, *extra]


# 1. SIGKILL of a worker mid-generation.
tag = "4001"
p = mpirun(3, long_generate(tag))
pids = wait_ranks(tag, 3)
time.sleep(3)
if 2 in pids:
    os.kill(pids[2], signal.SIGKILL)
    rc, out, err, took = finish(p, 30)
    check("SIGKILL of rank 2: the job ends non-zero within 10 s", rc not in (None, 0) and took <= 10, f"rc {rc}, {took:.1f} s")
    check("... and the output names the dead rank", "rank 2" in err, err[-400:])
else:
    finish(p, 5)
    check("SIGKILL test found the ranks", False, str(pids))
check("... and no rank is left behind", no_orphans(tag))

# 2. A stopped rank: --stage-timeout names it and aborts the job.
tag = "4002"
p = mpirun(3, long_generate(tag, ["--stage-timeout", "3"]))
pids = wait_ranks(tag, 3)
time.sleep(3)
if 1 in pids:
    os.kill(pids[1], signal.SIGSTOP)
    rc, out, err, took = finish(p, 40)
    check("SIGSTOP of rank 1: --stage-timeout 3 ends the job non-zero", rc not in (None, 0) and took <= 20, f"rc {rc}, {took:.1f} s")
    check("... naming the stage that stopped answering", "not answering: stage 1 on rank 1" in err, err[-400:])
else:
    finish(p, 5)
    check("SIGSTOP test found the ranks", False, str(pids))
check("... and no rank is left behind", no_orphans(tag))

# 3. A slow rank under the deadline changes nothing.
args = ["generate", "-m", MODEL, "-p", "ROMEO:", "-n", "200", "--ignore-eos", "--temp", "0", "-t", "1", "--json",
        "--stage-timeout", "30"]
base = mpirun(2, [*args, "--ctx", "4003"])
rc0, out0, err0, _ = finish(base, 120)
tag = "4004"
p = mpirun(2, [*args, "--ctx", tag])
pids = wait_ranks(tag, 2)
time.sleep(1)
if 1 in pids and p.poll() is None:
    os.kill(pids[1], signal.SIGSTOP)
    time.sleep(2)
    os.kill(pids[1], signal.SIGCONT)
rc, out, err, _ = finish(p, 120)
try:
    same = rc == 0 and rc0 == 0 and json.loads(out)["ids"] == json.loads(out0)["ids"]
except Exception:  # noqa: BLE001
    same = False
check("a rank paused 2 s under --stage-timeout 30: same tokens", same, err[-300:] + err0[-300:])

# 4. SIGTERM to mpirun stops every rank.
tag = "4005"
p = mpirun(3, long_generate(tag))
pids = wait_ranks(tag, 3)
time.sleep(2)
p.send_signal(signal.SIGTERM)
rc, out, err, took = finish(p, 30)
check("SIGTERM to mpirun: the job ends within 10 s", rc is not None and took <= 10, f"rc {rc}, {took:.1f} s")
check("... and no rank is left behind", no_orphans(tag))

# 5. Malformed headers are reported by the receiving rank, the job ends cleanly.
for kind, words in (("hidden", "hidden size 255"), ("n_tok", "n_tok"), ("payload", "activation payload"), ("dtype", "wire dtype")):
    p = mpirun(2, ["--fault", f"corrupt-{kind}@0", "generate", "-m", MODEL, "-p", "ROMEO:", "-n", "4", "-t", "1"], binary=FAULTS)
    rc, out, err, took = finish(p, 60)
    check(f"malformed header ({kind}): rank 1 reports it, exit 1", rc == 1 and f"rank 1" in err and words in err
          and "strata: error" in err, err[-300:])

# 6. The last stage stops (SIGSTOP, invisible to MPI) after the header of its
# first result and before the logits that follow it: rank 0's wait for the
# payload has the deadline of the header's, so --stage-timeout ends the job.
tag = "4006"
with tempfile.TemporaryDirectory() as d:
    text = os.path.join(d, f"ppl-{tag}.txt")
    open(text, "w").write("ROMEO: But, soft! what light through yonder window breaks? " * 20)
    p = mpirun(2, ["--fault", "stop-after-header@1", "perplexity", "-m", MODEL, "-f", text, "--ctx", "64", "-t", "1",
                   "--stage-timeout", "3"], binary=FAULTS)
    rc, out, err, took = finish(p, 120)
check("a rank stopped between header and payload: --stage-timeout ends the job non-zero", rc not in (None, 0),
      f"rc {rc}, {took:.1f} s, {err[-400:]}")
check("... naming the stage that stopped answering", "not answering: stage 1 on rank 1" in err, err[-400:])
check("... and no rank is left behind", no_orphans(tag))

# 7. Memory and context limits.
p = subprocess.run([BIN, "bench", "-m", MODEL, "--ctx", "16000000", "--force-ctx", "--parallel", "1000", "--reps", "1"], capture_output=True,
                   text=True, timeout=60)
check("a KV cache that cannot fit is refused with its size", p.returncode == 1 and "KV cache" in p.stderr and "GiB" in p.stderr,
      p.stderr[-300:])
long_prompt = "ROMEO: " * 400
p = subprocess.run([BIN, "generate", "-m", MODEL, "-p", long_prompt, "--ctx", "128", "-n", "4"], capture_output=True, text=True, timeout=60)
check("a prompt longer than --ctx is an error", p.returncode == 1 and "--ctx" in p.stderr, p.stderr[-300:])
p = subprocess.run([BIN, "generate", "-m", MODEL, "-p", long_prompt, "--ctx", "128", "-n", "4", "--truncate", "--json", "--temp", "0"],
                   capture_output=True, text=True, timeout=60)
try:
    j = json.loads(p.stdout)
    check("--truncate keeps the end of the prompt", p.returncode == 0 and len(j["prompt_ids"]) == 124 and len(j["ids"]) == 4,
          p.stdout[:200])
except Exception as e:  # noqa: BLE001
    check("--truncate keeps the end of the prompt", False, f"{e} {p.stderr[-300:]}")

passed = sum(results)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
