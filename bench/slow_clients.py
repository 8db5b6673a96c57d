#!/usr/bin/env python3
"""How many slow clients a server on 127.0.0.1 holds while /health still
answers: opens CONNECTIONS connections (from 127.0.0.2-11, ten client
addresses) that each send a request one byte every 0.5 s, then times
GET /health (from 127.0.0.1, a new connection each time) once a second for
SECONDS; prints one JSON line: connections opened and still open at the
end, /health latencies (ms; null = no answer within 5 s), and the server's
resident memory before and after (with --pid).

  bench/slow_clients.py --port 8080 --connections 10000 --seconds 10 --pid $(pgrep -f 'strata serve')

Standard library only. Raise `ulimit -n` above CONNECTIONS for this process."""
import argparse, json, resource, socket, time


def rss_kib(pid):
    if not pid:
        return None
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def health_ms(port):
    t0 = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return round((time.time() - t0) * 1000, 1) if data.startswith(b"HTTP/1.1 ") else None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--pid", type=int, default=0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.connections + 256)), hard))
    rss_before = rss_kib(a.pid)
    body = b'{"prompt": "' + b"x" * 200 + b'"}'
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    conns, t0 = [], time.time()
    for i in range(a.connections):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.0.{2 + i % 10}", 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", a.port))
        conns.append(s)
    opened = time.time() - t0
    time.sleep(0.5)
    latencies, k, start, next_health = [], 0, time.time(), time.time()
    while time.time() - start < a.seconds:
        for s in conns:
            try:
                s.send(request[k:k + 1])
            except OSError:
                pass
        k = (k + 1) % (len(request) - 1)  # never the whole request
        if time.time() >= next_health:
            latencies.append(health_ms(a.port))
            next_health += 1
        time.sleep(0.5)
    rss_after = rss_kib(a.pid)
    # Still open and unanswered: nothing to read (an answer or a close would be).
    still = 0
    for s in conns:
        try:
            s.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"connections": len(conns), "open_s": round(opened, 2), "still_open": still, "health_ms": latencies,
                      "rss_before_kib": rss_before, "rss_after_kib": rss_after}))


if __name__ == "__main__":
    main()
