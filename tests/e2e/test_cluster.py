#!/usr/bin/env python3
"""strata across hosts for real: a cluster of network namespaces made by
launch/strata-cluster, run with launch/strata-mpirun --cluster (the README's
"Running across nodes" commands).

- 2, 3 and 4 hosts over TCP give the ids and the perplexity of one process,
  bit for bit, for every model of MODELS (adding a model is one line there),
  and 3 hosts for one tiny model of each other family (OTHER_FAMILIES);
- two ranks per host (slots=2: shared memory inside a host, TCP across): same ids;
- a host whose link goes down mid-generation: the job ends within
  --stage-timeout + 10 s, non-zero, naming the stage, rank and host, and nothing
  is left running on the hosts still reachable;
- a slow host (CPU quota) changes nothing but speed, and `--split measure`
  gives it fewer layers;
- a host without the model file, or with another one: refused at start, naming it;
- a link of 100 Mbit/s (tc on both ends of that host's cable only): same ids;
  `--wire auto` measures it (~12.5 MB/s) and sends q8_0 on it, and keeps f32
  (same ids) on unlimited links;
- the harness: refuses without root, `up` is idempotent, `run` cleans up after
  Ctrl-C, and no namespace, cgroup, mount, file or process is left behind; this
  machine's own interfaces are untouched.

Needs root (CI has it); without root it exits 77, which ctest reports as
skipped. Run by ctest: test_cluster.py BINARY SHARED_DIR. Every command has a
timeout. Prints 'N passed, N failed'."""
import json, os, re, signal, subprocess, sys, tempfile, time

BIN, SHARED = os.path.abspath(sys.argv[1]), sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "launch", "strata-cluster")
MPIRUN = os.path.join(ROOT, "launch", "strata-mpirun")
Q4 = os.path.join(ROOT, "models", "smol-shakespeare-q4_k_m.gguf")
VAL = os.path.join(SHARED, "text", "shakespeare-val.txt")
TINY = os.path.join(SHARED, "models", "tiny")

# The models every host count runs: (name, path). One line per model; each
# must generate with the ids of one process and give its perplexity exactly.
MODELS = [
    ("SmolLM3 (HF)", os.path.join(SHARED, "models", "smol-shakespeare")),
    ("SmolLM3 Q4_K_M", Q4),
    ("tiny-llama", os.path.join(TINY, "tiny-llama")),
]
# One model of each other family: the same checks on 3 hosts only (the host
# count changes nothing a family does; 3 gives a middle stage).
OTHER_FAMILIES = [(f"tiny-{f}", os.path.join(TINY, f"tiny-{f}"))
                  for f in ("qwen2", "qwen3", "mistral", "ministral3", "mixtral", "lfm2")]

PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
SANITIZER = bool(os.environ.get("STRATA_E2E_SANITIZER"))
NAME = f"ct{os.getpid() % 100000}"  # this run's cluster
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def run(cmd, timeout, **kw):
    """(returncode or None on timeout, stdout, stderr, seconds)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err + f"\n[timed out after {timeout} s]", time.time() - t0
    return p.returncode, out, err, time.time() - t0


def harness(*args, timeout=60):
    return run([HARNESS, *args], timeout)


def cluster_mpirun(args, extra=(), timeout=240):
    return run([MPIRUN, "--cluster", NAME, *extra, "--", BIN, *args], timeout)


def last_json(out):
    lines = [l for l in out.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def namespaces():
    return sorted(l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                  if l.startswith(f"strata-{NAME}-"))


def ns_pids(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def strata_pids():
    """pids of strata processes of this test (their command line names BIN)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0] == BIN.encode():
            out.append(int(pid))
    return out


def gen_args(model, n=16, extra=()):
    return ["generate", "-m", model, "-p", PROMPT, "-n", str(n), "--temp", "0", "--ignore-eos", "--json", "-t", "1", *extra]


if os.geteuid() != 0:
    print("SKIP: the cluster harness needs root (network namespaces, tc, cgroups)")
    sys.exit(77)

root_links_before = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
root_addrs_before = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
tmp = tempfile.TemporaryDirectory()
part = os.path.join(tmp.name, "part.txt")
open(part, "w").write(open(VAL).read()[:2000 if SANITIZER else 6000])

try:
    # --- the harness itself ------------------------------------------------
    rc, out, err, _ = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", HARNESS, "up", NAME], 30)
    check("the harness refuses to run without root", rc == 2 and "needs root" in err and not namespaces(), err[-300:])

    rc, out, err, _ = harness("up", NAME, "--hosts", "4")
    check("up: 4 hosts", rc == 0 and len(namespaces()) == 5, err[-500:])
    created = open(f"/run/strata-cluster/{NAME}/created").read()
    rc, out, err, _ = harness("up", NAME, "--hosts", "4")
    check("up again: idempotent (nothing new created)", rc == 0 and len(namespaces()) == 5 and
          open(f"/run/strata-cluster/{NAME}/created").read() == created, err[-300:])
    rc, out, err, _ = harness("exec", NAME, f"{NAME}-h3", "--", "sh", "-c", "hostname; ip -o -4 addr show dev eth0")
    check("a host has its own hostname and address", rc == 0 and out.startswith(f"{NAME}-h3\n") and "10.213.0.3/24" in out,
          out + err[-300:])
    # mpirun runs on host 1 and enters the others with the rsh agent: what it
    # starts there lands in that host's cgroup (its CPU share), not host 1's.
    agent = f"/run/strata-cluster/{NAME}/agent"
    rc, out, err, _ = harness("exec", NAME, f"{NAME}-h1", "--", agent, f"{NAME}-h2", "cat /proc/self/cgroup; hostname")
    check("the rsh agent, called on host 1, runs in host 2's cgroup", rc == 0 and f"strata-cluster-{NAME}/{NAME}-h2\n" in out
          and out.endswith(f"{NAME}-h2\n"), out + err[-300:])

    # --- the same numbers on 2, 3 and 4 hosts -------------------------------
    ppl_args = lambda m: ["perplexity", "-m", m, "-f", part, "--ctx", "128", "--json", "-t", "1"]
    base = {}
    for name, model in MODELS + OTHER_FAMILIES:
        g = subprocess.run([BIN, *gen_args(model)], capture_output=True, text=True, timeout=180)
        p = subprocess.run([BIN, *ppl_args(model)], capture_output=True, text=True, timeout=300)
        ok = g.returncode == 0 and p.returncode == 0
        base[name] = (last_json(g.stdout)["ids"], last_json(p.stdout)["ppl"]) if ok else None
        check(f"{name}: one process runs (the reference)", ok, g.stderr[-300:] + p.stderr[-300:])

    for hosts in (4, 3, 2):
        if hosts != 4:  # also shows that `up` shrinks a cluster in place
            rc, out, err, _ = harness("up", NAME, "--hosts", str(hosts))
            check(f"up --hosts {hosts} (from {hosts + 1})", rc == 0 and len(namespaces()) == hosts + 1, err[-300:])
        for name, model in MODELS + (OTHER_FAMILIES if hosts == 3 else []):
            if base[name] is None:
                continue
            rc, out, err, _ = cluster_mpirun(gen_args(model))
            j = last_json(out) if rc == 0 else None
            hosts_named = all(f"rank {r} ({NAME}-h{r + 1})" in err for r in range(hosts))
            check(f"{name}, {hosts} hosts: ids identical to one process", j is not None and j["ids"] == base[name][0] and hosts_named,
                  err[-600:])
            rc, out, err, _ = cluster_mpirun(ppl_args(model))
            j = last_json(out) if rc == 0 else None
            check(f"{name}, {hosts} hosts: perplexity identical", j is not None and j["ppl"] == base[name][1],
                  f"{j and j['ppl']} vs {base[name][1]}: {err[-400:]}")

    # --- two ranks per host: shared memory inside, TCP across ---------------
    rc, out, err, _ = harness("hostfile", NAME, "--slots", "2")
    hostfile = out.strip()
    rc, out, err, _ = cluster_mpirun(gen_args(Q4), ["--hostfile", hostfile, "-v"])
    j = last_json(out) if rc == 0 else None
    q4_ids = base["SmolLM3 Q4_K_M"][0] if base.get("SmolLM3 Q4_K_M") else None
    placed = all(f"rank {r} ({NAME}-h{r // 2 + 1})" in err for r in range(4))
    check("2 hosts x 2 slots (vader inside, tcp across): ids identical", j is not None and j["ids"] == q4_ids and placed
          and "self,vader,tcp" in err, err[-600:])

    # --- a slow host changes nothing but speed ------------------------------
    rc, out, err, _ = harness("up", NAME, "--hosts", "2", "--cpus", f"{NAME}-h2=0.25")
    cg = f"/sys/fs/cgroup/cpu/strata-cluster-{NAME}/{NAME}-h2/"
    # The quota over its period (10 ms: a slower CPU rather than one that freezes).
    quota = (open(cg + "cpu.cfs_quota_us").read().strip() + "/" + open(cg + "cpu.cfs_period_us").read().strip()) \
        if os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") else "2500/10000"
    rc, out, err, _ = cluster_mpirun(gen_args(Q4, extra=("--stage-timeout", "60")))
    j = last_json(out) if rc == 0 else None
    check("a host at 0.25 CPU: same ids", quota == "2500/10000" and j is not None and j["ids"] == q4_ids,
          f"quota {quota}: {err[-400:]}")
    # ... and the measured plan gives it fewer layers: each rank times its
    # layers at start-up, rank 0 balances their time. At 0.1 CPU, so that the
    # host stays the slower one even when other work shares this machine.
    harness("up", NAME, "--hosts", "2", "--cpus", f"{NAME}-h2=0.1")
    rc, out, err, _ = cluster_mpirun(gen_args(Q4, extra=("--stage-timeout", "60", "--split", "measure")))
    j = last_json(out) if rc == 0 else None
    m = [re.search(rf"rank {r} \({NAME}-h{r + 1}\): layers (\d+)-(\d+)", err) for r in (0, 1)]
    n = [int(x.group(2)) - int(x.group(1)) + 1 for x in m] if all(m) else None
    check("--split measure with a host at 0.1 CPU: the slow host gets fewer layers, same ids",
          j is not None and j["ids"] == q4_ids and n is not None and n[1] < n[0] and "measured plan" in err,
          f"layers {n}: {err[-900:]}")

    # --- a slow link: shaped both ways, same ids ------------------------------
    # (rates are configuration here; what they do to speed is strata bench's.)
    rc, out, err, _ = harness("up", NAME, "--hosts", "2", "--link", f"{NAME}-h2=100mbit")
    # tbf carries the rate on its qdisc, the htb fallback on its class.
    qd = lambda ns, dev: "".join(subprocess.run(["tc", "-n", ns, what, "show", "dev", dev], capture_output=True, text=True).stdout
                                 for what in ("qdisc", "class"))
    shaped = [qd(f"strata-{NAME}-h2", "eth0"), qd(f"strata-{NAME}-switch", "h2"), qd(f"strata-{NAME}-h1", "eth0")]
    check("--link HOST=100mbit shapes that host's cable at both ends, not the others",
          rc == 0 and all(re.search(r"rate 100Mbit", q) for q in shaped[:2]) and "Mbit" not in shaped[2], str(shaped) + err[-300:])
    rc, out, err, _ = cluster_mpirun(gen_args(Q4))
    j = last_json(out) if rc == 0 else None
    check("over a 100 Mbit/s link: same ids", j is not None and j["ids"] == q4_ids, err[-400:])
    # --wire auto measures the link at start-up: at 100 Mbit/s a token's f32
    # activations take a large share of this small model's decode step.
    rc, out, err, _ = cluster_mpirun(gen_args(Q4, extra=("--wire", "auto")))
    j = last_json(out) if rc == 0 else None
    probed = re.search(rf"rank 0 \({NAME}-h1\) -> rank 1 \({NAME}-h2\): ([\d.]+) MB/s.*: (\w+)$", err, re.M)
    check("--wire auto over a 100 Mbit/s link: measures about 12.5 MB/s, sends q8_0",
          j is not None and len(j["ids"]) == 16 and probed is not None and 5 < float(probed.group(1)) < 14
          and probed.group(2) == "q8_0" and "sends q8_0" in err, err[-900:])
    harness("up", NAME, "--hosts", "3")  # links and CPU shares back to unlimited, a third host
    check("up without --link: the link is unlimited again", "Mbit" not in qd(f"strata-{NAME}-h2", "eth0"))
    rc, out, err, _ = cluster_mpirun(gen_args(Q4, extra=("--wire", "auto")))
    j = last_json(out) if rc == 0 else None
    check("--wire auto on unlimited links: every link keeps f32, ids identical",
          j is not None and j["ids"] == q4_ids and err.count(": f32\n") == 2 and "sends q8_0" not in err, err[-900:])

    # --- a host's link goes down mid-generation -----------------------------
    timeout_s = 5
    p = subprocess.Popen([MPIRUN, "--cluster", NAME, "--", BIN, *gen_args(Q4, n=100000, extra=("--stage-timeout", str(timeout_s)))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t_start = time.time()
    while time.time() - t_start < 60 and len(strata_pids()) < 3:
        time.sleep(0.2)
    time.sleep(3)  # generating by now
    running = p.poll() is None and len(strata_pids()) == 3
    harness("link", NAME, f"{NAME}-h2", "down")
    t_down = time.time()
    try:
        out, err = p.communicate(timeout=timeout_s + 60)
        took = time.time() - t_down
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        took = None
    check(f"link of host 2 down: the job ends non-zero within --stage-timeout {timeout_s} + 10 s",
          running and took is not None and took <= timeout_s + 10 and p.returncode not in (None, 0),
          f"running {running}, rc {p.returncode}, took {took}: {err[-600:]}")
    check("... naming the stage, rank and host that stopped answering",
          re.search(rf"not answering: stage 1 on rank 1 \({NAME}-h2\)", err) is not None, err[-600:])
    time.sleep(1)
    left = {h: ns_pids(f"strata-{NAME}-{h}") for h in ("h1", "h3")}
    check("... and nothing is left running on the hosts still reachable", not any(left.values()), str(left))
    harness("link", NAME, f"{NAME}-h2", "up")

    # --- a host without the model, or with another one ----------------------
    local = f"/run/strata-cluster/{NAME}/local/model.gguf"
    for h in ("h1", "h3"):
        subprocess.run(["cp", Q4, f"/run/strata-cluster/{NAME}/disk/{NAME}-{h}/model.gguf"], check=True)
    rc, out, err, took = cluster_mpirun(gen_args(local), timeout=120)
    check("a host without the model file: refused at start, naming the host",
          rc not in (None, 0) and f"rank 1 ({NAME}-h2)" in err and "model.gguf" in err and took < 60, err[-500:])
    other = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-bf16.gguf")
    subprocess.run(["cp", other, f"/run/strata-cluster/{NAME}/disk/{NAME}-h2/model.gguf"], check=True)
    rc, out, err, took = cluster_mpirun(gen_args(local), timeout=120)
    check("a host with a different model file: refused at start, naming the host",
          rc not in (None, 0) and f"rank 1 ({NAME}-h2) opened a different model file" in err and took < 60, err[-500:])

finally:
    rc, out, err, _ = harness("down", NAME)
    check("down removes the cluster", rc == 0, err[-300:])

# --- nothing left behind ---------------------------------------------------
leftovers = []
if namespaces():
    leftovers.append(f"namespaces {namespaces()}")
for path in (f"/run/strata-cluster/{NAME}", f"/sys/fs/cgroup/cpu/strata-cluster-{NAME}", f"/etc/netns/strata-{NAME}-h1"):
    if os.path.exists(path):
        leftovers.append(path)
if strata_pids():
    leftovers.append(f"strata processes {strata_pids()}")
mounts = [l for l in open("/proc/self/mounts").read().splitlines() if f"/strata-cluster/{NAME}/" in l]
if mounts:
    leftovers.append(f"mounts {mounts}")
check("no namespace, cgroup, mount, file or process left behind", not leftovers, "; ".join(leftovers))
root_links_after = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
root_addrs_after = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
check("this machine's own interfaces and addresses are untouched", root_links_before == root_links_after and
      root_addrs_before == root_addrs_after, root_links_after)

# --- `run` cleans up after Ctrl-C ----------------------------------------------
name2 = f"cr{os.getpid() % 100000}"
p = subprocess.Popen([HARNESS, "run", name2, "--hosts", "2", "--", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, start_new_session=True)
t0 = time.time()
while time.time() - t0 < 30 and not os.path.exists(f"/run/strata-cluster/{name2}/agent"):
    time.sleep(0.1)
up = os.path.exists(f"/run/strata-cluster/{name2}/agent")
time.sleep(0.5)
os.killpg(p.pid, signal.SIGINT)
try:
    p.communicate(timeout=30)
except subprocess.TimeoutExpired:
    os.killpg(p.pid, signal.SIGKILL)
gone = not os.path.exists(f"/run/strata-cluster/{name2}") and not any(
    l.startswith(f"strata-{name2}-") for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines())
check("run: Ctrl-C ends the command and removes the cluster", up and gone and p.returncode != 0, f"up {up}, gone {gone}, rc {p.returncode}")
if not gone:
    harness("down", name2)

tmp.cleanup()
passed = sum(results)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
