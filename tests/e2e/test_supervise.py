"""`strata serve --supervise` (issue 23): a front process outside the MPI job
that survives the loss of a rank and resumes every answer.

Against a plain 2-rank `mpirun ... strata serve` that never fails (the
reference answers), a supervised front with a 2-rank job serves 4 streaming
and 4 non-streaming clients (greedy and seeded) while a rank is lost mid-answer:
  1. SIGKILL of the worker rank (1);
  2. SIGKILL of the job's rank 0;
  3. SIGSTOP of the worker (found by --stage-timeout 3);
each time every client gets a complete answer equal to the reference, no
5xx, streams see keep-alive comments and no error, the recovery time is
printed. Then
  a job lost while idle shows in /health and is relaunched by the next request;
  4. a fifth failure of the one host within the window (--max-host-failures 5)
     excludes it: the requests in flight end with 503 and a message naming
     the excluded host, /health says so; after the backoff the front tries
     every host again and answers;
  5. a host that cannot be reached (a hostfile naming a host ssh cannot
     resolve) is blamed at each launch, excluded after --max-host-failures 2,
     and the job runs on the host left with a new plan (3 slots -> 2 ranks);
  6. a job that can never start (mpirun refuses its options): every request
     gets 503 with the reason at once, /health answers 503 "unavailable", no
     hang, SIGTERM ends the front with status 0;
  7. on the cluster harness (3 network namespaces), host 2's link goes down
     mid-answer: host 2 is excluded, the job re-planned on hosts 1 and 3, and
     both streams (greedy, seeded) complete equal to the reference;
and no rank, mpirun or port is left behind.
"""
import http.client, json, os, re, signal, socket, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
from harness import BIN, SHARED, check
from server_client import MPI_ENV, Server

# The front starts mpirun itself: it inherits what mpirun needs here.
os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_mpi_yield_when_idle="1")
MODEL = os.path.join(SHARED, "models", "smol-shakespeare.llamacpp-q4_k_m.gguf")
CTX = "1793"  # tags the supervised job's ranks (their command line carries --ctx 1793)
MPIRUN_ARGS = "--mpirun-args=--oversubscribe --bind-to none"
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo", "First Citizen:\nBefore we proceed", "KING RICHARD III:\nNow is the winter"]
LOGPROBS_BODY = {"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0, "logprobs": 3}
MAX_TOKENS = 400  # with ignore_eos: every answer is long enough to be cut by the fault


def bodies():
    """8 requests: for each prompt a greedy and a seeded one; even ones stream."""
    out = []
    for k, p in enumerate(PROMPTS):
        out.append({"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True})
        out.append({"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0.9, "seed": 100 + k, "ignore_eos": True})
    return out


def stream_raw(port, body, timeout=120):
    """A streamed completion; returns (status, text, finish_reason, [(time, kind)], error events, keep-alives)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        data = r.read().decode("utf-8", "replace")
        c.close()
        return r.status, data, None, [], [], 0
    text, finish, times, errors, keepalive = "", None, [], [], 0
    while True:
        line = r.fp.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            keepalive += 1
            continue
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        if payload == "[DONE]":
            break
        ev = json.loads(payload)
        if "error" in ev:
            errors.append(ev)
            continue
        times.append(time.time())
        ch = ev["choices"][0]
        text += ch.get("text", "")
        finish = ch.get("finish_reason") or finish
    c.close()
    return 200, text, finish, times, errors, keepalive


def post(port, body, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read().decode("utf-8", "replace")
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data


def health(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/health")
        r = c.getresponse()
        h = json.loads(r.read())
        c.close()
        return r.status, h
    except (OSError, ValueError) as e:
        return None, {"error": repr(e)}


def run_clients(port, on_started=None):
    """The 8 requests at once; `on_started()` runs once a stream has 8 tokens.
    Returns a list of (status, text, finish, times, errors, keepalive)."""
    reqs = bodies()
    results = [None] * len(reqs)
    started = threading.Event()

    def one(i):
        b = reqs[i]
        if i % 2 == 0:
            # A stream: the fault comes once it is well under way.
            results[i] = stream_raw(port, b)
        else:
            st, j = post(port, b)
            if st == 200:
                results[i] = (st, j["choices"][0]["text"], j["choices"][0]["finish_reason"], [], [], 0)
            else:
                results[i] = (st, j, None, [], [], 0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    if on_started is not None:
        on_started()
    for t in threads:
        t.join(300)
    return results


def job_pids():
    """pid by MPI rank of the supervised job's strata ranks."""
    return harness.rank_pids(lambda cmd: cmd[0].endswith(b"/strata") and b"--front" in cmd and CTX.encode() in cmd)


def leftovers():
    """Any process left of a supervised job: a rank or its mpirun."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"--front" in cmd and CTX.encode() in cmd:
            left.append((int(pid), b" ".join(cmd)[:120].decode(errors="replace")))
    return left


def wait_for_tokens(port, n=8, timeout=60):
    """Until the front's running requests have produced about n tokens each
    (judged from /health's running count and a short sleep)."""
    end = time.time() + timeout
    while time.time() < end:
        st, h = health(port)
        if h.get("running", 0) >= 8:
            break
        time.sleep(0.05)
    time.sleep(0.4)


def front(args, start_timeout=180):
    return Server(BIN, MODEL, ["--supervise", "--np", "2", MPIRUN_ARGS, "--ctx", CTX, "--parallel", "8", "-t", "1",
                               "--stage-timeout", "3", *args], start_timeout=start_timeout)


def log_of(srv):
    return "".join(srv.log)


# ── the reference: a plain 2-rank server that never fails ──
ref = None
try:
    plain = Server(BIN, MODEL, ["--ctx", CTX, "--parallel", "8", "-t", "1"], ranks=2)
    ref = run_clients(plain.port)
    check("plain mpirun 2-rank serve: 8 answers", all(r and r[0] == 200 and len(r[1]) > 0 for r in ref), ref)
    ref_lp = post(plain.port, LOGPROBS_BODY)
    check("plain serve: logprobs", ref_lp[0] == 200 and len(ref_lp[1]["choices"][0]["logprobs"]["token_logprobs"]) == 8, ref_lp)
    check("plain serve stops on SIGTERM", plain.stop(30) == 0)
except Exception as e:
    check("plain 2-rank server", False, repr(e))
    harness.finish()

# ── the supervised front: three failures, each recovered ──
srv = None
try:
    srv = front(["--max-host-failures", "5", "--failure-window", "600"])
    st, h = health(srv.port)
    check("supervised front: /health ok with the job up", st == 200 and h["supervisor"]["state"] == "up", h)
    pids = job_pids()
    check("supervised front: a 2-rank job of its own", sorted(pids) == [0, 1], pids)
    front_pid = srv.proc.pid
    check("the front is not a rank", front_pid not in pids.values())
    # Log-probabilities come through the front's link as through the pipeline.
    lp = post(srv.port, LOGPROBS_BODY)
    check("supervised front: logprobs equal the plain server's", lp[0] == 200 and
          lp[1]["choices"][0]["logprobs"] == ref_lp[1]["choices"][0]["logprobs"], (lp, ref_lp))
    # /metrics reads the job's stages through the link: both, with the tokens they ran.
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("GET", "/metrics")
    r = c.getresponse()
    text = r.read().decode("utf-8", "replace")
    c.close()
    stage_tokens = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("strata_stage_tokens_total{")]
    check("supervised front: /metrics has both stages' counters", r.status == 200 and len(stage_tokens) == 2
          and all(t > 0 for t in stage_tokens), stage_tokens or text[-800:])
    # Without a failure the supervised answers equal the plain server's.
    same = run_clients(srv.port)
    check("no failure: 8 answers equal the plain server's", [r[:3] for r in same] == [r[:3] for r in ref],
          [(a[:2], b[:2]) for a, b in zip(same, ref) if a[:3] != b[:3]])

    for n, (what, rank, sig) in enumerate([("SIGKILL of worker rank 1", 1, signal.SIGKILL),
                                          ("SIGKILL of the job's rank 0", 0, signal.SIGKILL),
                                          ("SIGSTOP of worker rank 1 (--stage-timeout 3)", 1, signal.SIGSTOP)]):
        fault = {}

        def strike():
            wait_for_tokens(srv.port)
            p = job_pids()
            fault["pid"] = p.get(rank)
            fault["t"] = time.time()
            if fault["pid"]:
                os.kill(fault["pid"], sig)

        got = run_clients(srv.port, strike)
        check(f"{what}: the rank was there to fail", fault.get("pid") is not None, job_pids())
        statuses = [r[0] if r else None for r in got]
        check(f"{what}: every client 200, no 5xx", statuses == [200] * 8, statuses)
        diff = [(i, a[1][:60] if a else a, b[1][:60]) for i, (a, b) in enumerate(zip(got, ref)) if not a or a[1:3] != b[1:3]]
        check(f"{what}: every answer complete and equal to the never-failed server's", not diff, diff)
        errors = [r[4] for r in got if r and r[4]]
        check(f"{what}: no error event in any stream", not errors, errors)
        keepalive = sum(r[5] for r in got if r)
        # The first token after the pause: the one that ends each stream's
        # longest silence after the fault.
        after = []
        for r in got:
            ts = [t for t in (r[3] if r else [])]
            gaps = [(ts[k] - ts[k - 1], ts[k]) for k in range(1, len(ts)) if ts[k] > fault.get("t", 0)]
            if gaps:
                after.append(max(gaps)[1])
        took = (min(after) - fault["t"]) if after and "t" in fault else -1
        m = re.findall(r"job \d+ up with .*?teardown ([0-9.]+) s, relaunch \+ load ([0-9.]+) s, re-prefill ([0-9.]+) s "
                       r"\((\d+) sequence\(s\), (\d+) token", log_of(srv))
        ft = re.findall(r"first tokens ([0-9.]+) s after the failure was detected", log_of(srv))
        detect = took - float(ft[-1]) if ft and took > 0 else -1
        print(f"INFO {what}: failure -> first streamed token after recovery {took:.2f} s = detection {detect:.2f} s + "
              f"the front's {ft[-1] if ft else '?'} s (teardown, relaunch + load, re-prefill, sequences, tokens: "
              f"{m[-1] if m else '?'}); {keepalive} keep-alive comment(s)", flush=True)
        # The first launch is logged the same way: n + 2 jobs up.
        check(f"{what}: the front recovered (logged with its timings)", len(m) == n + 2 and int(m[-1][3]) == 8, m)
        if sig == signal.SIGSTOP:
            check(f"{what}: streams got SSE keep-alive comments during the pause", keepalive > 0, keepalive)
            try:
                os.kill(fault["pid"], 0)
                check(f"{what}: the stopped rank was killed", False, fault["pid"])
            except ProcessLookupError:
                check(f"{what}: the stopped rank was killed", True)
        st, h = health(srv.port)
        check(f"{what}: /health ok, {n + 1} recoveries", st == 200 and h["supervisor"]["recoveries"] == n + 1, h)
        check(f"{what}: a new 2-rank job runs", sorted(job_pids()) == [0, 1], job_pids())

    # A job lost while idle: /health says so; the next request relaunches it.
    p = job_pids()
    os.kill(p[1], signal.SIGKILL)
    ok, h = False, {}
    end = time.time() + 20
    while time.time() < end and not ok:
        st, h = health(srv.port)
        ok = h.get("supervisor", {}).get("state") == "lost"
        time.sleep(0.1)
    check("a job lost while idle: /health says 'lost'", ok and h.get("status") == "recovering", h)
    st, j = post(srv.port, bodies()[1])
    check("a job lost while idle: the next request relaunches it and is answered", st == 200 and
          j["choices"][0]["text"] == ref[1][1], (st, str(j)[:300]))

    # 4. The fifth failure of the one host within the window excludes it:
    # nothing can run, the requests in flight end with 503 and a message.
    fault = {}

    def strike4():
        wait_for_tokens(srv.port)
        p = job_pids()
        fault["t"] = time.time()
        if p.get(1):
            os.kill(p[1], signal.SIGKILL)
        # Detection and teardown take their time on a loaded machine; once
        # given up, the front stays 'down' until a request comes after the backoff.
        end = time.time() + 20
        while time.time() < end:
            fault["health"] = health(srv.port)
            if fault["health"][1].get("supervisor", {}).get("state") == "down":
                break
            time.sleep(0.1)

    got = run_clients(srv.port, strike4)
    statuses = [r[0] if r else None for r in got]
    # Streams already begun end with an error event; the others get a 503.
    ended = [r[0] == 503 or bool(r[4]) for r in got if r]
    check("5th failure: every request in flight ends with 503 (or an error event in its stream)", all(ended) and len(ended) == 8,
          statuses)
    msgs = [json.dumps(r[1] if r[0] == 503 else r[4]) for r in got if r]
    check("5th failure: the message names the excluded host", all("excluded: localhost" in m for m in msgs), msgs[:2])
    check("5th failure: the log says the host is excluded", "the host is excluded from the next launches" in log_of(srv))
    hs, h = fault.get("health", (None, {}))
    check("5th failure: /health 503 'unavailable', the host excluded", hs == 503 and h.get("status") == "unavailable"
          and h["supervisor"]["excluded_hosts"] == ["localhost"], (hs, h))
    # After the backoff every host is tried again.
    time.sleep(float(h.get("supervisor", {}).get("retry_in_s", 1.0)) + 0.5)
    st, j = post(srv.port, bodies()[0])
    check("after the backoff: the front starts a job again and answers", st == 200 and j["choices"][0]["text"] == ref[0][1],
          (st, str(j)[:300]))
    rc = srv.stop(30)
    check("supervised front: SIGTERM exits 0", rc == 0, rc)
except Exception as e:
    check("supervised front", False, repr(e) + ("\n" + log_of(srv)[-3000:] if srv else ""))
finally:
    if srv:
        srv.kill()
time.sleep(0.5)
left = leftovers()
check("nothing of the jobs left (no rank, no mpirun)", not left, left)
if srv and srv.port:
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        check("the front's port is closed", False)
    except OSError:
        check("the front's port is closed", True)

# 5. A host that cannot be reached (ssh cannot resolve it): blamed at each
# launch, excluded after --max-host-failures 2, and the job runs on the hosts
# left with a new plan (3 slots -> 2 ranks); the answers are the same.
unreach = None
hostfile = f"/tmp/strata-supervise-hosts.{os.getpid()}"
try:
    with open(hostfile, "w") as f:
        f.write("localhost slots=2\nstrata-no-such-host slots=1\n")
    unreach = Server(BIN, MODEL, ["--supervise", "--hostfile", hostfile, MPIRUN_ARGS, "--ctx", CTX, "--parallel", "8",
                                  "-t", "1", "--max-host-failures", "2"], start_timeout=120)
    st, h = health(unreach.port)
    sup = h.get("supervisor", {})
    check("unreachable host: excluded, the job runs on the rest", st == 200 and sup.get("state") == "up" and
          sup.get("excluded_hosts") == ["strata-no-such-host"] and sup.get("hosts") == ["localhost"], h)
    log = log_of(unreach)
    check("unreachable host: the log blames it twice and excludes it",
          "blamed on host 'strata-no-such-host': 2 failure(s)" in log and "the host is excluded" in log, log[-1500:])
    check("unreachable host: relaunched with 2 ranks (3 slots before)", "launch 3 on 1 host(s), 2 rank(s)" in log and
          "launch 1 on 2 host(s), 3 rank(s)" in log, re.findall(r"launch \d+ on .*? rank\(s\)", log))
    got = run_clients(unreach.port)
    check("unreachable host: the 8 answers equal the reference", [r[:3] for r in got] == [r[:3] for r in ref],
          [r[:2] for r in got])
    check("unreachable host: SIGTERM exits 0", unreach.stop(30) == 0)
except Exception as e:
    check("front with an unreachable host", False, repr(e) + ("\n" + log_of(unreach)[-3000:] if unreach else ""))
finally:
    if unreach:
        unreach.kill()
    if os.path.exists(hostfile):
        os.unlink(hostfile)

# 6. A job that can never start: 503 with the reason, no hang, clean SIGTERM.
bad = None
try:
    bad = Server(BIN, MODEL, ["--supervise", "--np", "2", "--mpirun-args=--no-such-mpirun-option", "--ctx", CTX,
                              "--max-host-failures", "2", "--job-start-timeout", "20"], start_timeout=120)
    t0 = time.time()
    st, j = post(bad.port, bodies()[0], timeout=60)
    took = time.time() - t0
    check("no job can start: 503 at once", st == 503 and took < 15, (st, took))
    check("no job can start: the message says why", "no job can run the model" in json.dumps(j), j)
    r = stream_raw(bad.port, bodies()[0], timeout=60)
    # 503 before its header, or (when it had left the queue) an error event and [DONE].
    check("no job can start: a stream gets 503 or an error event with the reason",
          (r[0] == 503 and "no job can run the model" in r[1]) or (r[0] == 200 and r[1] == "" and
                                                                  "no job can run the model" in json.dumps(r[4])), r)
    hs, h = health(bad.port)
    check("no job can start: /health 503 'unavailable' with the failure", hs == 503 and h.get("status") == "unavailable"
          and "last_failure" in h.get("supervisor", {}), (hs, h))
    t0 = time.time()
    rc = bad.stop(30)
    print(f"INFO no job can start: SIGTERM -> exit in {time.time() - t0:.2f} s", flush=True)
    check("no job can start: SIGTERM exits 0", rc == 0, rc)
except Exception as e:
    check("front with no job", False, repr(e) + ("\n" + log_of(bad)[-3000:] if bad else ""))
finally:
    if bad:
        bad.kill()
time.sleep(0.5)
left = leftovers()
check("nothing left after the front with no job", not left, left)

# 7. On the cluster harness (launch/strata-cluster: 3 hosts, each a network
# namespace): the front runs on host 1, the job on all three; host 2's link
# goes down mid-answer. The job's stage deadline names rank 1 on host 2, the
# front excludes it (--max-host-failures 1) and relaunches on hosts 1 and 3
# with a new plan; the answers are complete and equal to the reference.
CLUSTER = "supv23"
HARNESS = os.path.join(harness.ROOT, "launch", "strata-cluster")
cfront = None
try:
    up = subprocess.run([HARNESS, "up", CLUSTER, "--hosts", "3"], capture_output=True, text=True, timeout=120)
    check("cluster: 3 hosts up", up.returncode == 0, up.stderr[-500:])
    cdir = f"/run/strata-cluster/{CLUSTER}"
    net = "10.213.0.0/24"
    for line in open(f"{cdir}/config"):
        if line.startswith("subnet="):
            net = line.split("=", 1)[1].strip()
    h1 = net.rsplit(".", 1)[0] + ".1"
    mpirun_args = (f"--mpirun-args=--bind-to none --mca pml ob1 --mca btl self,vader,tcp --mca btl_tcp_if_include {net} "
                   f"--mca oob_tcp_if_include {net} --mca plm_rsh_agent {cdir}/agent -x OMPI_MCA_mpi_yield_when_idle "
                   "-x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")
    in_h1 = [HARNESS, "exec", CLUSTER, f"{CLUSTER}-h1", "--"]
    cfront = subprocess.Popen([*in_h1, BIN, "serve", "-m", MODEL, "--supervise", "--hostfile", f"{cdir}/hostfile",
                               "--front-address", h1, "--host", h1, "--port", "18023", mpirun_args, "--ctx", CTX,
                               "--parallel", "8", "-t", "1", "--stage-timeout", "5", "--max-host-failures", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    clog = []
    threading.Thread(target=lambda: [clog.append(l) for l in cfront.stderr], daemon=True).start()
    end = time.time() + 120
    while time.time() < end and not any("listening on" in l for l in clog):
        time.sleep(0.2)
    check("cluster: the front on host 1 serves a 3-rank job", any("launch 1 on 3 host(s), 3 rank(s)" in l for l in clog) and
          any("listening on" in l for l in clog), "".join(clog)[-1500:])
    # Two streams (greedy, seeded), read by a client on host 1 (its lines as they come).
    client = ("import http.client, sys\n"
              "c = http.client.HTTPConnection(sys.argv[1], 18023, timeout=200)\n"
              "c.request('POST', '/v1/completions', body=sys.argv[2], headers={'Content-Type': 'application/json'})\n"
              "for line in c.getresponse():\n"
              "    sys.stdout.write(line.decode()); sys.stdout.flush()\n")
    curls = [subprocess.Popen([*in_h1, sys.executable, "-c", client, h1, json.dumps(dict(b, stream=True))],
                              stdout=subprocess.PIPE, text=True)
             for b in bodies()[:2]]
    lines = [[], []]
    readers = [threading.Thread(target=lambda k=k: [lines[k].append(l) for l in curls[k].stdout], daemon=True) for k in range(2)]
    for r in readers:
        r.start()
    end = time.time() + 60
    while time.time() < end and min(sum(l.startswith("data: {") for l in ls) for ls in lines) < 40:
        time.sleep(0.02)  # until both answers are under way (400 tokens each)
    subprocess.run([HARNESS, "link", CLUSTER, f"{CLUSTER}-h2", "down"], capture_output=True, timeout=60)
    t_down = time.time()
    for c in curls:
        c.wait(timeout=240)
    for r in readers:
        r.join(30)
    outs = ["".join(ls) for ls in lines]
    texts, errs = [], []
    for o in outs:
        t = ""
        for line in o.splitlines():
            if line.startswith("data: {"):
                ev = json.loads(line[6:])
                if "error" in ev:
                    errs.append(ev)
                else:
                    t += ev["choices"][0].get("text", "")
        texts.append(t)
    log = "".join(clog)
    print(f"INFO cluster, host 2's link down: both streams done {time.time() - t_down:.1f} s later; "
          + "; ".join(l.strip() for l in clog if "job 2 up" in l or "first tokens" in l), flush=True)
    check("cluster: host 2 blamed and excluded", "blamed on host 'supv23-h2'" in log and "the host is excluded" in log, log[-2000:])
    check("cluster: relaunched on hosts 1 and 3 with a new plan (2 ranks)", "launch 2 on 2 host(s), 2 rank(s)" in log and
          re.search(r"job 2 up with 2 stage\(s\) \(rank 0 on supv23-h1, rank 1 on supv23-h3\)", log) is not None, log[-2000:])
    check("cluster: both streams complete, no error, equal to the reference", not errs and texts == [ref[0][1], ref[1][1]],
          (errs, [t[:80] for t in texts]))
    hc = subprocess.run([*in_h1, sys.executable, "-c", "import http.client, sys\nc = http.client.HTTPConnection(sys.argv[1], 18023)\n"
                         "c.request('GET', '/health')\nprint(c.getresponse().read().decode())", h1],
                        capture_output=True, text=True, timeout=30)
    h = json.loads(hc.stdout or "{}")
    check("cluster: /health names the excluded host", h.get("supervisor", {}).get("excluded_hosts") == ["supv23-h2"], h)
    subprocess.run([HARNESS, "link", CLUSTER, f"{CLUSTER}-h2", "up"], capture_output=True, timeout=60)
    os.killpg(cfront.pid, signal.SIGTERM)
    try:
        check("cluster: the front ends on SIGTERM", cfront.wait(30) is not None)
    except subprocess.TimeoutExpired:
        check("cluster: the front ends on SIGTERM", False)
    time.sleep(1)
    left = {hh: subprocess.run(["ip", "netns", "pids", f"strata-{CLUSTER}-{hh}"], capture_output=True, text=True).stdout.split()
            for hh in ("h1", "h2", "h3")}
    check("cluster: nothing left on any host", not any(left.values()), left)
except Exception as e:
    check("cluster", False, repr(e))
finally:
    if cfront and cfront.poll() is None:
        os.killpg(cfront.pid, signal.SIGKILL)
    down = subprocess.run([HARNESS, "down", CLUSTER], capture_output=True, text=True, timeout=120)
    check("cluster: down", down.returncode == 0, down.stderr[-300:])
harness.finish()
