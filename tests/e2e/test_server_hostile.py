#!/usr/bin/env python3
"""`strata serve` under hostile and sloppy clients (issue 24), with raw
sockets where an HTTP client would hide the bytes, on 127.0.0.1 (and other
127.x addresses as distinct clients):

- slow clients: SLOW connections sending their request one byte at a time
  from 10 addresses; meanwhile /health answers within 1 s and a completion
  gets its single-request answer; each slow one gets 408 at the header
  deadline (--header-timeout) and is closed;
- the per-address bound: the connection past --max-connections-per-client
  gets 503 at once, another address is served;
- request framing (RFC 9112): conflicting / invalid Content-Length and
  Transfer-Encoding -> 400 and the connection closed, at once; a declared
  body over --max-body -> 413 at once, also with Expect: 100-continue (no
  100); 100-continue and chunked bodies work;
- pipelined requests answered in order; a half-closed client answered; a
  client that resets its connection cancels its sequence;
- nothing silently ignored: unknown roles, response_format, logit_bias
  (a banned greedy token gives the reference's second choice; +100 forces a
  token), top_p 0 = greedy, the 2^64 message, a 5 MB model name not echoed;
- admission: with --parallel 2 --max-queue 4, 6 requests sent together are
  all admitted, 25 times over; 7 at once: exactly one 503;
- and under mpirun (2 ranks, the last stage samples): logit_bias, pipelining,
  a half-closed client.

Run by ctest: test_server_hostile.py BINARY SHARED_DIR. Prints 'N passed, N
failed' and one SLOW line with the figures (slow connections held, /health
latency). STRATA_SLOW_CLIENTS overrides the number of slow connections."""
import json, os, resource, socket, struct, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_client import RawConn, Server, http_request, split_responses, sse_events, stream_text  # noqa: E402

from harness import BIN, SHARED, as_list, check, finish  # noqa: E402
HF = os.path.join(SHARED, "models", "smol-shakespeare")
REF = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))
SLOW = int(os.environ.get("STRATA_SLOW_CLIENTS", "1000"))
HEADER_TIMEOUT = 3


PLAIN = [c for c in REF["cases"] if not c["prompt"].startswith("<|im_start|>")]
P0_IDS = as_list(PLAIN[0]["prompt_ids"])
P0_TOP5 = as_list(PLAIN[0]["top5_per_position"])[len(P0_IDS) - 1]  # the first generated token's candidates
GREEDY = {"prompt": PLAIN[0]["prompt"], "max_tokens": 12, "temperature": 0, "ignore_eos": True}

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < SLOW + 600:
    SLOW = max(50, hard - 600)  # a machine that allows fewer descriptors: fewer slow clients
    print(f"note: the open file limit is {hard}: {SLOW} slow clients", flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, SLOW + 600)), hard))


def first_status(data):
    rs = split_responses(data)
    return rs[0][0] if rs else None


def completion_text(srv, body):
    st, _, j = srv.post("/v1/completions", body)
    return j["choices"][0]["text"] if st == 200 else (st, j)


def check_slow_clients(srv):
    alone = completion_text(srv, GREEDY)
    request = http_request("POST", "/v1/completions", GREEDY)
    conns, t0 = [], time.time()
    for i in range(SLOW):
        try:
            conns.append(RawConn(srv.port, source=f"127.0.0.{2 + i % 10}"))
        except OSError as e:
            check(f"slow clients: connection {i} opened", False, repr(e))
            break
    opened = time.time() - t0
    # One byte each per round until the deadline has passed for all of them.
    health_ms, answer, sent, k = [], None, 0, 0
    while time.time() - t0 < HEADER_TIMEOUT + opened + 1.5 and k < len(request) - 1:
        for c in conns:
            try:
                c.send(request[k:k + 1])
                sent += 1
            except OSError:
                pass
        k += 1
        if k in (2, 4, 6):
            h0 = time.time()
            st, _, h = srv.request("GET", "/health", timeout=10)
            health_ms.append(round((time.time() - h0) * 1000, 1))
            if k == 4:
                answer = completion_text(srv, GREEDY)
        time.sleep(0.2)
    check(f"slow clients: /health answers within 1 s with {len(conns)} slow connections open ({health_ms} ms)",
          len(health_ms) == 3 and max(health_ms) < 1000, health_ms)
    check("slow clients: a completion meanwhile gets its single-request answer", answer == alone, (answer, alone))
    got_408 = 0
    for c in conns:
        data = c.read_all(HEADER_TIMEOUT + 10)
        got_408 += first_status(data) == 408 and c.closed
        c.close()
    check(f"slow clients: each gets 408 at the header deadline and is closed ({got_408} of {len(conns)})", got_408 == len(conns))
    ok, h = srv.wait_health(lambda h: h.get("connections", 99) <= 1, 15)
    check("slow clients: their connections are gone", ok, h)
    print("SLOW " + json.dumps({"slow_connections": len(conns), "health_ms": health_ms, "bytes_sent": sent}), flush=True)


def check_per_client_bound(srv, bound):
    held = [RawConn(srv.port, source="127.0.0.30") for _ in range(bound)]
    ok, h = srv.wait_health(lambda h: h.get("connections", 0) >= bound, 15)
    over = RawConn(srv.port, source="127.0.0.30")
    over.send(http_request("GET", "/health"))
    t0 = time.time()
    data = over.read_all(5)
    rs = split_responses(data)
    check(f"bound: connection {bound + 1} from one address gets 503 at once, naming --max-connections-per-client",
          ok and rs and rs[0][0] == 503 and b"--max-connections-per-client" in rs[0][2] and over.closed and time.time() - t0 < 2,
          (h, data[:300]))
    st, _, h = srv.request("GET", "/health")
    check("bound: another address is served meanwhile", st == 200, (st, h))
    for c in held + [over]:
        c.close()


def raw_exchange(srv, data, timeout=5, source="127.0.0.1"):
    c = RawConn(srv.port, source=source)
    c.send(data)
    t0 = time.time()
    out = c.read_all(timeout)
    took = time.time() - t0
    closed = c.closed
    c.close()
    return out, closed, took


def check_framing(srv):
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": 2, "temperature": 0})
    b = body.encode()
    head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    smuggled = http_request("GET", "/health")
    cases = [
        ("two different Content-Length", f"{head}Content-Length: {len(b)}\r\nContent-Length: {len(b) + 5}\r\n\r\n{body}", 400),
        ("Content-Length and Transfer-Encoding: chunked",
         f"{head}Content-Length: {len(b)}\r\nTransfer-Encoding: chunked\r\n\r\n{len(b):x}\r\n{body}\r\n0\r\n\r\n", 400),
        ("a header line without a colon", f"{head}NoColonHere\r\nContent-Length: {len(b)}\r\n\r\n{body}", 400),
        ("Content-Length: -5", f"{head}Content-Length: -5\r\n\r\n", 400),
        ("Transfer-Encoding: gzip", f"{head}Transfer-Encoding: gzip\r\n\r\n{body}", 400),
        ("Transfer-Encoding: gzip, chunked", f"{head}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("a declared body over --max-body", f"{head}Content-Length: 70000\r\n\r\n", 413),
        ("over --max-body with Expect: 100-continue", f"{head}Content-Length: 70000\r\nExpect: 100-continue\r\n\r\n", 413),
    ]
    for name, req, status in cases:
        out, closed, took = raw_exchange(srv, req.encode() + smuggled)
        rs = split_responses(out)
        ok = (len(rs) == 1 and rs[0][0] == status and closed and took < HEADER_TIMEOUT - 0.5
              and rs[0][1].get("connection") == "close" and json.loads(rs[0][2])["error"]["message"])
        check(f"framing: {name} -> {status} at once, connection closed, nothing after it read", ok, (took, out[:400]))
    # 100-continue within the limit: 100, then the body, then the answer.
    c = RawConn(srv.port)
    c.send(f"{head}Content-Length: {len(b)}\r\nExpect: 100-continue\r\n\r\n")
    first = c.read_until(lambda d: b"\r\n\r\n" in d, 5)
    c.send(b)
    rest = c.read_until(lambda d: b"text_completion" in d, 30)
    c.close()
    rs = split_responses(rest)
    check("framing: Expect: 100-continue -> 100, then the answer", first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
          and len(rs) == 2 and rs[1][0] == 200, rest[:300])
    # A chunked body.
    out, _, _ = raw_exchange(srv, (f"{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                   f"{10:x}\r\n{body[:10]}\r\n{len(b) - 10:x}\r\n{body[10:]}\r\n0\r\n\r\n").encode(), 30)
    rs = split_responses(out)
    check("framing: a chunked body is read", rs and rs[0][0] == 200 and json.loads(rs[0][2])["usage"]["completion_tokens"] == 2,
          out[:300])


def check_pipelining_and_half_close(srv, label):
    bodies = [dict(GREEDY, prompt=c["prompt"], max_tokens=6) for c in PLAIN] + [dict(GREEDY, max_tokens=3)]
    alone = [completion_text(srv, b) for b in bodies]
    data = b"".join(http_request("POST", "/v1/completions", b) for b in bodies) + http_request("GET", "/health", close=True)
    out, closed, _ = raw_exchange(srv, data, 60)
    rs = split_responses(out)
    texts = [json.loads(r[2])["choices"][0]["text"] if r[0] == 200 and b"choices" in r[2] else r for r in rs[:len(bodies)]]
    check(f"{label}: {len(bodies) + 1} pipelined requests written at once: every one answered, in order",
          len(rs) == len(bodies) + 1 and texts == alone and rs[-1][0] == 200 and b'"status"' in rs[-1][2] and closed,
          (texts, alone, len(rs)))
    # Half-closed after a complete request: answered (whole, and streamed).
    c = RawConn(srv.port)
    c.send(http_request("POST", "/v1/completions", bodies[0]))
    c.shutdown_write()
    out = c.read_all(60)
    c.close()
    rs = split_responses(out)
    check(f"{label}: a half-closed client gets its answer", rs and rs[0][0] == 200
          and json.loads(rs[0][2])["choices"][0]["text"] == alone[0], out[:300])
    c = RawConn(srv.port)
    c.send(http_request("POST", "/v1/completions", dict(bodies[0], stream=True)))
    c.shutdown_write()
    out = c.read_all(60)
    c.close()
    rs = split_responses(out)
    ev = sse_events(rs[0][2]) if rs else []
    check(f"{label}: a half-closed client gets its stream", rs and rs[0][0] == 200 and stream_text(ev, "content") == alone[0]
          and ev[-1] == "[DONE]", out[-300:])


def check_reset_cancels(srv):
    c = RawConn(srv.port)
    c.send(http_request("POST", "/v1/completions", dict(GREEDY, max_tokens=1500)))
    ok, h = srv.wait_health(lambda h: h.get("running") == 1, 30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> reset
    c.close()
    idle, h2 = srv.wait_idle(30)
    check("a client that resets its connection cancels its sequence", ok and idle, (h, h2))


def check_fields(srv, label):
    def err(body, path="/v1/chat/completions"):
        st, _, j = srv.post(path, body)
        return st, (j.get("error", {}) if isinstance(j, dict) else {})

    msg = [{"role": "user", "content": "Who art thou?"}]
    for role in ("wizard", "", "r" * (1 << 20)):
        st, e = err({"messages": [{"role": role, "content": "x"}]})
        check(f"{label}: role {role[:10]!r}{'...' if len(role) > 10 else ''} -> 400 naming messages[0].role",
              st == 400 and e.get("param") == "messages[0].role" and len(e.get("message", "")) < 300, (st, str(e)[:300]))
    for rf in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, {"type": "bogus"}, 5):
        st, e = err({"messages": msg, "response_format": rf})
        check(f"{label}: response_format {json.dumps(rf)[:40]} -> 400 naming it", st == 400 and e.get("param", "").startswith("response_format"),
              (st, e))
    for field, value in (("logit_bias", "x"), ("tool_choice", 5), ("parallel_tool_calls", "x"), ("metadata", 5), ("user", 5)):
        st, e = err({"messages": msg, field: value})
        check(f"{label}: {field}: {value!r} -> 400 naming it", st == 400 and e.get("param") == field, (st, e))
    st, e = err({"messages": [{"role": "user"}]})
    check(f"{label}: a user message without content -> 400", st == 400 and e.get("param") == "messages[0].content", (st, e))
    # logit_bias does what it says (on the stage that samples).
    one = {"prompt": P0_IDS, "max_tokens": 1, "temperature": 0}
    greedy_first = completion_text(srv, one)
    banned = completion_text(srv, dict(one, logit_bias={str(P0_TOP5[0]): -100}))
    second = completion_text(srv, dict(one, logit_bias={str(P0_TOP5[0]): -100, str(P0_TOP5[1]): -100}))
    check(f"{label}: logit_bias -100 on the greedy token: the reference's second choice", banned != greedy_first
          and banned == completion_text(srv, dict(one, logit_bias={str(P0_TOP5[1]): 100})) and second != banned,
          (greedy_first, banned, second))
    forced = completion_text(srv, {"prompt": PLAIN[0]["prompt"], "max_tokens": 3, "temperature": 0.8, "seed": 3,
                                   "logit_bias": {str(P0_TOP5[4]): 100}})
    check(f"{label}: logit_bias +100 forces a token (sampled, 3 times)", isinstance(forced, str) and forced and
          forced == forced[:len(forced) // 3] * 3, forced)
    greedy = completion_text(srv, GREEDY)
    top_p0 = completion_text(srv, dict(GREEDY, temperature=1.0, top_p=0, seed=5))
    check(f"{label}: top_p 0 = greedy", top_p0 == greedy, (top_p0, greedy))
    st, e = err(dict(GREEDY, top_p=1e-300), "/v1/completions")
    check(f"{label}: top_p 1e-300 is accepted (the top token)", st == 200, (st, e))
    for field in ("max_tokens", "seed"):
        st, e = err(dict(GREEDY, **{field: 2 ** 64}), "/v1/completions")
        check(f"{label}: {field} 2^64 -> 400 saying it is out of range", st == 400 and "18446744073709551616 is outside" in e.get("message", ""),
              (st, e))
    st, hdr, j = srv.post("/v1/completions", dict(GREEDY, model="m" * (5 << 20)))
    check(f"{label}: a 5 MB model name -> 404, not echoed", st == 404 and len(json.dumps(j)) < 600 and "5242880 bytes" in json.dumps(j),
          (st, json.dumps(j)[:300]))


def check_admission(srv):
    body = {"prompt": "ROMEO:", "max_tokens": 4, "temperature": 0}
    refused = []
    for rnd in range(25):
        barrier, out = threading.Barrier(6), [None] * 6

        def go(k):
            barrier.wait()
            out[k] = srv.post("/v1/completions", body)[0]

        ts = [threading.Thread(target=go, args=(k,)) for k in range(6)]
        [t.start() for t in ts]
        [t.join(120) for t in ts]
        if out != [200] * 6:
            refused.append((rnd, out))
        srv.wait_idle(30)
    check("admission: --parallel 2 --max-queue 4, 6 requests at once, 25 times: all admitted", not refused, refused)
    barrier, out = threading.Barrier(7), [None] * 7
    long_body = {"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0, "ignore_eos": True}

    def go7(k):
        barrier.wait()
        st, _, j = srv.post("/v1/completions", long_body)
        out[k] = (st, j.get("error", {}).get("message") if st != 200 else None)

    ts = [threading.Thread(target=go7, args=(k,)) for k in range(7)]
    [t.start() for t in ts]
    [t.join(300) for t in ts]
    codes = sorted(o[0] for o in out if o)
    check("admission: 7 at once: 6 answered, exactly one 503 (4 waiting)", codes == [200] * 6 + [503]
          and any(o[1] and "4 requests are already waiting" in o[1] for o in out if o), out)


# ── one rank ──
srv = Server(BIN, HF, ["--parallel", "2", "--max-queue", "4", "--ctx", "2048", "--max-body", "65536",
                       "--header-timeout", str(HEADER_TIMEOUT), "--max-connections", str(SLOW + 500),
                       "--max-connections-per-client", "200"])
try:
    check_admission(srv)
    check_slow_clients(srv)
    check_per_client_bound(srv, 200)
    check_framing(srv)
    check_pipelining_and_half_close(srv, "1 rank")
    check_reset_cancels(srv)
    st, _, h = srv.request("GET", "/health")
    check("1 rank: healthy after all of it", st == 200 and h.get("status") == "ok" and srv.proc.poll() is None, h)
finally:
    rc = srv.stop()
check("1 rank: exit 0", rc == 0, f"rc {rc}; " + "".join(srv.log)[-1500:])

# The fields need the default --max-body (the 5 MB model name).
srv = Server(BIN, HF, ["--ctx", "2048"])
try:
    check_fields(srv, "1 rank")
finally:
    rc = srv.stop()
check("1 rank (fields): exit 0", rc == 0, f"rc {rc}")

# ── two ranks under mpirun: the last stage samples ──
srv = Server(BIN, HF, ["--parallel", "2", "--ctx", "2048"], ranks=2, start_timeout=180)
try:
    check_fields(srv, "2 ranks")
    check_pipelining_and_half_close(srv, "2 ranks")
finally:
    rc = srv.stop(60)
check("2 ranks: exit 0", rc == 0, f"rc {rc}; " + "".join(srv.log)[-1500:])

finish()
