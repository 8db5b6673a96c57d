#!/usr/bin/env python3
"""Dead, stuck and misbehaving ranks end the job with a message that says
what happened: a worker killed with SIGKILL mid-generation (the job ends
non-zero naming the rank, no orphan processes); a stopped worker (SIGSTOP:
invisible to MPI) is found by --stage-timeout, which names its stage and
aborts the job; a worker paused mid-generation under the deadline changes
nothing;
SIGTERM to mpirun stops every rank; malformed headers are reported by the
receiving rank; a rank that stops between a header and its payload is found
by --stage-timeout; a KV cache that cannot fit is refused before allocation;
a prompt longer than the context is an error unless --truncate. The faults a
rank cannot be made to commit from outside (a corrupt header, a stop between
header and payload) come from the strata_faults test binary
(worker/fault_injection.h). The tests wait on events (the first token, a
rank's stopped state, the job's end), never on the clock: a job that hangs
fails when a generous bound passes; how long an ending took is printed.

Run by ctest: test_faults.py BINARY SHARED_DIR FAULTS_BINARY. Prints 'N passed, N failed'."""
import json, os, select, signal, subprocess, tempfile, time

import harness
from harness import BIN, FAULTS, check

MODEL = harness.SMALL_MODEL


class Job:
    """An mpirun job whose output is read as it comes: its first streamed
    token is the event that says every stage is computing."""

    def __init__(self, n, args, binary=BIN):
        cmd = [*harness.MPIRUN, "-np", str(n), binary, *args]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=harness.MPI_ENV,
                                  start_new_session=True)
        self.out, self.err = b"", b""
        self.open = [self.p.stdout, self.p.stderr]

    def _pump(self, until):
        """Reads what the job writes until `until()` or both pipes close."""
        while self.open and not until():
            ready, _, _ = select.select(self.open, [], [], 0.5)
            for f in ready:
                data = os.read(f.fileno(), 65536)
                if not data:
                    self.open.remove(f)
                elif f is self.p.stdout:
                    self.out += data
                else:
                    self.err += data

    def started(self, timeout=120):
        """Waits for the first generated text; False when the job ends or `timeout` passes first."""
        end = time.time() + timeout
        self._pump(lambda: self.out or time.time() > end)
        return bool(self.out)

    def finish(self, timeout):
        """(exit status or None when killed at `timeout` as hung, stdout, stderr, seconds taken)."""
        t0 = time.time()
        self._pump(lambda: time.time() - t0 > timeout)
        try:
            rc = self.p.wait(timeout=max(0.1, timeout - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            rc = None
        return rc, self.out.decode(errors="replace"), self.err.decode(errors="replace"), time.time() - t0


def rank_pids(tag):
    """pid of each strata rank whose command line contains `tag`, by MPI rank."""
    return harness.rank_pids(lambda cmd: cmd[0].endswith((b"/strata", b"/strata_faults")) and tag.encode() in b" ".join(cmd))


def wait_ranks(tag, n, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        pids = rank_pids(tag)
        if len(pids) == n:
            return pids
        time.sleep(0.2)
    return rank_pids(tag)


def stopped(pid, timeout=10):
    """Waits until the kernel reports `pid` stopped (state T)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T":
                return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


def no_orphans(tag, timeout=30):
    """Waits for every rank of the job to be gone; kills (and reports) any left after `timeout`."""
    end = time.time() + timeout
    while rank_pids(tag) and time.time() < end:
        time.sleep(0.2)
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


# Each job below gets a generous bound only to catch a hang (it then fails);
# how long an ending took is printed, not asserted.

# 1. SIGKILL of a worker mid-generation.
tag = "4001"
job = Job(3, long_generate(tag))
pids = wait_ranks(tag, 3)
if 2 in pids and job.started():
    os.kill(pids[2], signal.SIGKILL)
    rc, out, err, took = job.finish(60)
    print(f"INFO SIGKILL of rank 2: the job ended in {took:.1f} s", flush=True)
    check("SIGKILL of rank 2 mid-generation: the job ends non-zero", rc not in (None, 0), f"rc {rc}, {took:.1f} s")
    check("... and the output names the dead rank", "rank 2" in err, err[-400:])
else:
    job.finish(5)
    check("SIGKILL test: the 3 ranks started generating", False, str(pids))
check("... and no rank is left behind", no_orphans(tag))

# 2. A stopped rank: --stage-timeout names it and aborts the job.
tag = "4002"
job = Job(3, long_generate(tag, ["--stage-timeout", "3"]))
pids = wait_ranks(tag, 3)
if 1 in pids and job.started():
    os.kill(pids[1], signal.SIGSTOP)
    rc, out, err, took = job.finish(120)
    print(f"INFO SIGSTOP of rank 1 under --stage-timeout 3: the job ended in {took:.1f} s", flush=True)
    check("SIGSTOP of rank 1 mid-generation: --stage-timeout 3 ends the job non-zero", rc not in (None, 0),
          f"rc {rc}, {took:.1f} s")
    check("... naming the stage that stopped answering", "not answering: stage 1 on rank 1" in err, err[:1200])
else:
    job.finish(5)
    check("SIGSTOP test: the 3 ranks started generating", False, str(pids))
check("... and no rank is left behind", no_orphans(tag))

# 3. A slow rank under the deadline changes nothing: rank 1 is stopped for
# 2 s once the tokens flow (a stopped stage holds the job, so the pause
# cannot miss the run) and the text is the one of a run left alone.
args = ["generate", "-m", MODEL, "-p", "ROMEO:", "-n", "200", "--ignore-eos", "--temp", "0", "-t", "1",
        "--stage-timeout", "30"]
rc0, out0, err0, _ = Job(2, [*args, "--ctx", "4003"]).finish(180)
tag = "4004"
job = Job(2, [*args, "--ctx", tag])
pids = wait_ranks(tag, 2)
paused = False
if 1 in pids and job.started():
    os.kill(pids[1], signal.SIGSTOP)
    paused = stopped(pids[1]) and job.p.poll() is None
    time.sleep(2)  # the pause itself
    paused = paused and job.p.poll() is None
    os.kill(pids[1], signal.SIGCONT)
rc, out, err, _ = job.finish(180)
check("rank 1 was paused 2 s while the job generated", paused, str(pids))
check("... under --stage-timeout 30 the tokens are the same", rc == 0 and rc0 == 0 and out == out0 and len(out) > 200,
      f"rc {rc} / {rc0}: {out[-200:]!r} vs {out0[-200:]!r} {err[-300:]}")

# 4. SIGTERM to mpirun stops every rank.
tag = "4005"
job = Job(3, long_generate(tag))
pids = wait_ranks(tag, 3)
check("SIGTERM test: the 3 ranks started generating", len(pids) == 3 and job.started(), str(pids))
job.p.send_signal(signal.SIGTERM)
rc, out, err, took = job.finish(60)
print(f"INFO SIGTERM to mpirun: the job ended in {took:.1f} s", flush=True)
check("SIGTERM to mpirun: the job ends", rc is not None, f"rc {rc}, {took:.1f} s")
check("... and no rank is left behind", no_orphans(tag))

# 5. Malformed headers are reported by the receiving rank, the job ends cleanly.
for kind, words in (("hidden", "hidden size 255"), ("n_tok", "n_tok"), ("payload", "activation payload"), ("dtype", "wire dtype")):
    job = Job(2, ["--fault", f"corrupt-{kind}@0", "generate", "-m", MODEL, "-p", "ROMEO:", "-n", "4", "-t", "1"], binary=FAULTS)
    rc, out, err, took = job.finish(60)
    check(f"malformed header ({kind}): rank 1 reports it, exit 1", rc == 1 and "rank 1" in err and words in err
          and "strata: error" in err, err[-300:])

# 6. The last stage stops (SIGSTOP, invisible to MPI) after the header of its
# first result and before the logits that follow it: rank 0's wait for the
# payload has the deadline of the header's, so --stage-timeout ends the job.
tag = "4006"
with tempfile.TemporaryDirectory() as d:
    text = os.path.join(d, f"ppl-{tag}.txt")
    open(text, "w").write("ROMEO: But, soft! what light through yonder window breaks? " * 20)
    job = Job(2, ["--fault", "stop-after-header@1", "perplexity", "-m", MODEL, "-f", text, "--ctx", "64", "-t", "1",
                  "--stage-timeout", "3"], binary=FAULTS)
    rc, out, err, took = job.finish(120)
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

harness.finish()
