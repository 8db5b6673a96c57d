#!/usr/bin/env python3
"""Server under load: 8 concurrent clients x 50 requests each against
`strata serve` on 127.0.0.1, mixing streaming and non-streaming completions
and chat completions (seeded sampling and greedy), malformed requests,
mid-stream disconnects, clients that send their request slowly (in pieces
over about a second) and clients that half-close their side after the
request; meanwhile 100 more connections from other addresses trickle a byte
every half second and are cut at the header deadline (and open again).
Every well-formed request must get a complete answer equal to the answer the
same request got alone; every malformed one a 4xx with an OpenAI-style
error; the server must stay up; and its resident memory must come back to
the level it had after a warm-up (the same requests, alone and concurrently:
the allocator's arenas are warm), within 10 % + 4 MiB, waited for up to 10 s
after the server is idle. Then the same against a 2-rank server under mpirun.

Prints the figures (requests, errors, disconnects, p50 / p99 latency,
requests/s, RSS) as one JSON line per server for the README.

Run by ctest: test_server_load.py BINARY SHARED_DIR [CLIENTS REQUESTS].
Prints 'N passed, N failed'."""
import json, os, re, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_client import RawConn, Server, finish_of, http_request, split_responses, stream_text  # noqa: E402

BIN, SHARED = sys.argv[1], sys.argv[2]
CLIENTS = int(sys.argv[3]) if len(sys.argv) > 3 else 8
# STRATA_E2E_SANITIZER (the sanitizer build, launch/sanitize.sh): 10 requests
# per client, and no RSS check (ASan keeps freed memory in quarantine; its
# LeakSanitizer checks the server's memory at exit instead).
SANITIZER = bool(os.environ.get("STRATA_E2E_SANITIZER"))
PER_CLIENT = int(sys.argv[4]) if len(sys.argv) > 4 else (10 if SANITIZER else 50)
HF = os.path.join(SHARED, "models", "smol-shakespeare")
REF = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail)[:800] if detail and not ok else ''}", flush=True)


PROMPTS = [c["prompt"] for c in REF["cases"] if not c["prompt"].startswith("<|im_start|>")] + [
    "ROMEO:\n", "JULIET:\nO Romeo, Romeo,", "KING HENRY:\nOnce more unto the breach,"]
CHAT_Q = ["What say you to my suit?", "Who art thou?", "Speak, speak."]

# The well-formed requests: (path, body). Seeded sampling and greedy, short answers.
GOOD = []
for i, p in enumerate(PROMPTS):
    GOOD.append(("/v1/completions", {"prompt": p, "max_tokens": 16, "temperature": 0.8, "seed": 1000 + i}))
    GOOD.append(("/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0}))
for i, q in enumerate(CHAT_Q):
    GOOD.append(("/v1/chat/completions", {"messages": [{"role": "user", "content": q}], "max_tokens": 24,
                                          "temperature": 0.6, "seed": 77 + i,
                                          "chat_template_kwargs": {"enable_thinking": i % 2 == 0}}))
BAD = [
    ("/v1/completions", '{"prompt": "a", "max_tokens": '),
    ("/v1/completions", {"prompt": "a", "temperature": "warm"}),
    ("/v1/chat/completions", {"messages": []}),
    ("/v1/chat/completions", {"messages": [{"role": 3, "content": "x"}]}),
    ("/v1/completions", {"prompt": "a", "model": "nope"}),
    ("/v1/completions", {"prompt": "a", "max_tokens": -5}),
    ("/v1/completions", b'\xff\xfe\x00'),
]


def answer(srv, path, body, stream):
    """(text, reasoning, finish_reason) or an error tuple."""
    if stream:
        st, ev = srv.stream(path, body)
        if st != 200 or not ev or ev[-1] != "[DONE]":
            return ("error", st, ev[-2:])
        return (stream_text(ev, "content"), stream_text(ev, "reasoning_content"), finish_of(ev))
    st, _, j = srv.post(path, body)
    if st != 200:
        return ("error", st, j)
    ch = j["choices"][0]
    if "message" in ch:
        return (ch["message"]["content"], ch["message"].get("reasoning_content", ""), ch["finish_reason"])
    return (ch["text"], "", ch["finish_reason"])


def raw_answer(srv, path, body, slow):
    """The answer over a raw socket: sent in 10 pieces 100 ms apart (slow),
    or at once and then half-closed (shutdown of the sending side)."""
    data = http_request("POST", path, body)
    c = RawConn(srv.port, timeout=120)
    try:
        if slow:
            step = (len(data) + 9) // 10
            for i in range(0, len(data), step):
                c.send(data[i:i + step])
                time.sleep(0.1)
        else:
            c.send(data)
            c.shutdown_write()
        out = c.read_until(lambda d: bool(split_responses(d)) and len(split_responses(d)[0][2]) ==
                           int(split_responses(d)[0][1].get("content-length", -1)), 120)
    finally:
        c.close()
    rs = split_responses(out)
    if not rs or rs[0][0] != 200:
        return ("error", rs[0][0] if rs else None, out[:200])
    ch = json.loads(rs[0][2])["choices"][0]
    if "message" in ch:
        return (ch["message"]["content"], ch["message"].get("reasoning_content", ""), ch["finish_reason"])
    return (ch["text"], "", ch["finish_reason"])


class Tricklers:
    """`n` connections from 127.0.0.2-6 that send a request one byte every
    0.5 s; each one the server cuts (408 at the header deadline) is opened again."""

    def __init__(self, srv, n):
        self.srv, self.n, self.stop_flag, self.cut = srv, n, threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        req = http_request("POST", "/v1/completions", {"prompt": "x" * 200})
        conns = [[RawConn(self.srv.port, source=f"127.0.0.{2 + i % 5}"), 0] for i in range(self.n)]
        while not self.stop_flag.wait(0.5):
            for entry in conns:
                c, k = entry
                try:
                    c.send(req[k:k + 1])
                    entry[1] = (k + 1) % (len(req) - 1)
                except OSError:
                    self.cut += 1
                    source = c.source
                    c.close()
                    entry[0], entry[1] = RawConn(self.srv.port, source=source), 0
        for c, _ in conns:
            c.close()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(30)


def scrape_metrics(srv):
    """GET /metrics as {series: value}."""
    st, _, text = srv.request("GET", "/metrics")
    out = {}
    for line in (text if st == 200 and isinstance(text, str) else "").splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def settled_rss(srv, bound_kib, timeout=10):
    """RSS once the server is idle: polled until within bound_kib (or timeout); the last reading."""
    deadline = time.time() + timeout
    rss = srv.rss_kib()
    while rss > bound_kib and time.time() < deadline:
        time.sleep(0.25)
        rss = srv.rss_kib()
    return rss


def run_load(srv, label):
    # The single-request answers (nothing else running), both ways.
    single = [answer(srv, p, b, False) for p, b in GOOD]
    check(f"{label}: single answers", all(a[0] != "error" for a in single), single)
    streamed = [answer(srv, p, b, True) for p, b in GOOD]
    check(f"{label}: streamed single answers == non-streamed", streamed == single,
          [(a, b) for a, b in zip(streamed, single) if a != b])
    if not SANITIZER:
        # Warm the allocator the way the load will use it (for the RSS check):
        # the same requests, concurrently.
        warm = [None] * len(GOOD)
        ts = [threading.Thread(target=lambda i=i: warm.__setitem__(i, answer(srv, *GOOD[i], i % 2 == 0))) for i in range(len(GOOD))]
        [t.start() for t in ts]
        [t.join(300) for t in ts]
        check(f"{label}: concurrent warm-up answers == single answers", warm == single,
              [(a, b) for a, b in zip(warm, single) if a != b])
    srv.wait_idle(30)
    time.sleep(0.5)
    rss_warm = srv.rss_kib()
    before = scrape_metrics(srv)
    tricklers = Tricklers(srv, 100)

    lat, wrong, bad_ok, errors, disconnects, raw = [], [], [], [], [0], {"slow": 0, "half-closed": 0}
    lock = threading.Lock()

    def client(c):
        for k in range(PER_CLIENT):
            kind = (c + k) % 8
            t0 = time.time()
            try:
                if kind == 0:  # malformed
                    path, body = BAD[(c * PER_CLIENT + k) % len(BAD)]
                    st, _, j = srv.request("POST", path, body)
                    ok = 400 <= st < 500 and isinstance(j, dict) and j.get("error", {}).get("message")
                    with lock:
                        (bad_ok if ok else errors).append((st, j) if not ok else st)
                    continue
                if kind == 1:  # disconnect mid-stream
                    path, body = GOOD[(c + k) % len(GOOD)]
                    srv.stream(path, dict(body, max_tokens=400, ignore_eos=True), stop_after=2)
                    with lock:
                        disconnects[0] += 1
                    continue
                i = (c * 7 + k) % len(GOOD)
                path, body = GOOD[i]
                if kind in (6, 7):  # slow, or half-closed
                    got = raw_answer(srv, path, body, slow=kind == 6)
                    with lock:
                        raw["slow" if kind == 6 else "half-closed"] += 1
                else:
                    got = answer(srv, path, body, stream=kind in (2, 3))
                with lock:
                    lat.append(time.time() - t0)
                    if got != single[i]:
                        wrong.append((i, got, single[i]))
            except Exception as e:  # noqa: BLE001 - any failure is a finding
                with lock:
                    errors.append(repr(e))

    t0 = time.time()
    ts = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    [t.start() for t in ts]
    [t.join(900) for t in ts]
    wall = time.time() - t0
    tricklers.stop()
    check(f"{label}: every client finished", not any(t.is_alive() for t in ts))
    check(f"{label}: the server is still up", srv.proc.poll() is None, "".join(srv.log)[-2000:])
    check(f"{label}: every well-formed answer == its single-request answer ({len(lat)} requests)", not wrong, wrong[:3])
    check(f"{label}: every malformed request got a 4xx with an error ({len(bad_ok)})", not errors, errors[:5])
    # Idle again: nothing running, memory back to the warm level.
    idle, h = srv.wait_idle(30)
    check(f"{label}: idle after the load (disconnected sequences ended)", idle, h)
    # /metrics counted what the clients sent: every answer by endpoint and
    # status (disconnects as 499), a first token for each well-formed one.
    after = scrape_metrics(srv)
    delta = lambda pred: sum(v - before.get(k, 0) for k, v in after.items() if pred(k))  # noqa: E731
    ok200 = delta(lambda k: k.startswith("strata_requests_total{") and 'status="200"' in k and "completions" in k)
    bad4xx = delta(lambda k: k.startswith("strata_requests_total{") and re.search(r'status="4(?!99)\d\d"', k))
    gone = delta(lambda k: k.startswith("strata_requests_total{") and 'status="499"' in k)
    check(f"{label}: /metrics: {len(lat)} answers 200, {len(bad_ok)} malformed 4xx, {disconnects[0]} disconnects 499",
          ok200 == len(lat) and bad4xx == len(bad_ok) and gone == disconnects[0], (ok200, bad4xx, gone))
    check(f"{label}: /metrics: the cut trickling connections are counted as timed out",
          delta(lambda k: k == "strata_http_requests_timed_out_total") >= tricklers.cut,
          (after.get("strata_http_requests_timed_out_total"), tricklers.cut))
    check(f"{label}: /metrics: a first token per answer at least; idle: nothing queued or running",
          delta(lambda k: k == "strata_time_to_first_token_seconds_count") >= len(lat)
          and after.get("strata_queue_length") == 0 and after.get("strata_running_sequences") == 0,
          {k: after.get(k) for k in ("strata_time_to_first_token_seconds_count", "strata_queue_length", "strata_running_sequences")})
    # The server trims the allocator when it goes idle; allow its arenas a
    # little slack, but not growth with the number of requests.
    bound = rss_warm * 1.10 + 4 * 1024
    rss_after = settled_rss(srv, bound)
    if not SANITIZER:
        check(f"{label}: memory back to its idle level (RSS {rss_warm} KiB after warm-up, {rss_after} KiB after)",
              rss_after <= bound, (rss_warm, rss_after))
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None  # noqa: E731
    total = CLIENTS * PER_CLIENT
    figures = {"server": label, "clients": CLIENTS, "requests": total, "well_formed": len(lat), "malformed_4xx": len(bad_ok),
               "disconnects": disconnects[0], "slow": raw["slow"], "half_closed": raw["half-closed"],
               "trickling_connections": tricklers.n, "trickling_cut": tricklers.cut, "wrong_answers": len(wrong), "errors": len(errors),
               "p50_ms": pct(0.50), "p99_ms": pct(0.99), "wall_s": round(wall, 1), "requests_per_s": round(total / wall, 1),
               "rss_warm_mib": round(rss_warm / 1024, 1), "rss_after_mib": round(rss_after / 1024, 1)}
    print("LOAD " + json.dumps(figures), flush=True)


srv = Server(BIN, HF, ["--parallel", "4", "--ctx", "2048", "--header-timeout", "3"])
try:
    run_load(srv, "1 rank")
finally:
    rc = srv.stop(60)
check("1 rank: clean exit after the load", rc == 0, f"rc {rc}")

srv = Server(BIN, HF, ["--parallel", "4", "--ctx", "2048", "--header-timeout", "3"], ranks=2, start_timeout=180)
try:
    run_load(srv, "2 ranks")
finally:
    rc = srv.stop(60)
check("2 ranks: clean exit after the load", rc == 0, f"rc {rc}")

print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
