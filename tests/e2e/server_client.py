"""A small client for `strata serve` used by the server tests: starts a
server (optionally under mpirun) on a free port, and sends requests with
Python's http.client (non-streaming JSON, SSE streams, raw bodies,
disconnects), or as raw bytes on a socket where http.client would hide them
(RawConn). Standard library only."""
import http.client, json, os, re, select, signal, socket, subprocess, threading, time

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_mpi_yield_when_idle="1")


class Server:
    """`strata serve` on 127.0.0.1 with --port 0; the port is read from its log."""

    def __init__(self, binary, model, args=(), ranks=1, start_timeout=120):
        cmd = [binary, "serve", "-m", model, "--port", "0"] + list(args)
        env = None
        if ranks > 1:
            cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
            env = MPI_ENV
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.log = []
        self.port = None
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://[0-9.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.kill()
            raise RuntimeError("the server did not start: " + "".join(self.log)[-2000:])
        # Keep draining stderr so the server never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def pid_of_server(self):
        """The strata process that listens (rank 0 under mpirun)."""
        if self.proc.args[0] != "mpirun":
            return self.proc.pid
        out = subprocess.run(["pgrep", "-f", "-P", str(self.proc.pid), "serve"], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                env = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                continue
            if b"OMPI_COMM_WORLD_RANK=0\0" in env:
                return int(pid)
        return int(out[0]) if out else None

    def rss_kib(self):
        pid = self.pid_of_server()
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def signal(self, sig):
        os.kill(self.pid_of_server(), sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM to the listening process; returns the exit status (None: it hung and was killed)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
        return rc

    # ── requests ──
    def conn(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict, parsed JSON or raw text)."""
        c = self.conn(timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        c.close()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return r.status, dict(r.getheaders()), data

    def wait_health(self, pred, timeout):
        """Polls /health (every 20 ms) until pred(health) holds; returns (held, last health)."""
        deadline = time.time() + timeout
        h = None
        while time.time() < deadline:
            try:
                st, _, h = self.request("GET", "/health", timeout=10)
            except OSError as e:
                h = {"error": repr(e)}
            if isinstance(h, dict) and pred(h):
                return True, h
            time.sleep(0.02)
        return False, h

    def wait_idle(self, timeout):
        """Polls /health until nothing runs or waits; returns (idle, last health)."""
        return self.wait_health(lambda h: h.get("status") == "ok" and h.get("running") == 0 and h.get("queued") == 0, timeout)

    def post(self, path, body, timeout=120):
        return self.request("POST", path, body, timeout=timeout)

    def stream(self, path, body, timeout=120, stop_after=None, on_event=None):
        """POSTs with stream: true; returns (status, events) where events are
        the parsed JSON of each `data:` line and the string '[DONE]'. With
        stop_after=N the connection is closed after N events (a disconnect);
        on_event(event) is called as each one arrives."""
        body = dict(body, stream=True)
        c = self.conn(timeout)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            data = r.read().decode("utf-8", "replace")
            c.close()
            return r.status, [json.loads(data)] if data.startswith("{") else [data]
        events = []
        while True:
            line = r.fp.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
            if on_event is not None:
                on_event(events[-1])
            if stop_after is not None and len(events) >= stop_after:
                c.sock.shutdown(socket.SHUT_RDWR)
                c.close()
                return r.status, events
            if payload == "[DONE]":
                break
        c.close()
        return r.status, events


class RawConn:
    """A raw TCP connection to the server (from `source`, any 127.x.y.z)."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        self.source = source
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.data = b""
        self.closed = False

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_until(self, pred, timeout):
        """Reads until pred(all bytes so far) holds, the server closes, or
        `timeout`; returns the bytes."""
        deadline = time.time() + timeout
        poller = select.poll()  # not select(): descriptors past 1024 (many connections)
        poller.register(self.sock, select.POLLIN)
        while not pred(self.data) and not self.closed and time.time() < deadline:
            if not poller.poll(max(1, int(min(0.2, deadline - time.time()) * 1000))):
                continue
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.data += chunk
        return self.data

    def read_all(self, timeout):
        """Reads until the server closes (or `timeout`); returns the bytes."""
        return self.read_until(lambda d: False, timeout)

    def close(self):
        self.sock.close()


def http_request(method, path, body=b"", headers=None, close=False):
    """The bytes of an HTTP/1.1 request with a Content-Length."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    body = body.encode() if isinstance(body, str) else body
    h = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(len(body))}
    if close:
        h["Connection"] = "close"
    h.update(headers or {})
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body


def split_responses(data):
    """Parses HTTP/1.1 responses (Content-Length or chunked bodies) from
    `data`: a list of (status, headers dict (lower-case names), body bytes)."""
    out = []
    while data.startswith(b"HTTP/1."):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        if status // 100 == 1:
            data = rest
            out.append((status, hdr, b""))
            continue
        if "content-length" in hdr:
            n = int(hdr["content-length"])
            out.append((status, hdr, rest[:n]))
            data = rest[n:]
        elif hdr.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0] or b"0", 16)
                if n == 0:
                    rest = rest[2:]
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            out.append((status, hdr, body))
            data = rest
        else:
            out.append((status, hdr, rest))
            data = b""
    return out


def sse_events(body):
    """The parsed `data:` events of an SSE body ('[DONE]' as a string)."""
    events = []
    for line in body.decode("utf-8").split("\n"):
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def stream_text(events, field):
    """Concatenates delta[field] (chat) or text (completions) over stream events."""
    out = []
    for e in events:
        if not isinstance(e, dict):
            continue
        for ch in e.get("choices", []):
            if "delta" in ch:
                out.append(ch["delta"].get(field) or "")
            elif field == "content":
                out.append(ch.get("text") or "")
    return "".join(out)


def finish_of(events):
    for e in events:
        if isinstance(e, dict):
            for ch in e.get("choices", []):
                if ch.get("finish_reason"):
                    return ch["finish_reason"]
    return None
