"""A small client for `strata serve` used by the server tests: starts a
server (optionally under mpirun) on a free port, and sends requests with
Python's http.client (non-streaming JSON, SSE streams, raw bodies,
disconnects). Standard library only."""
import http.client, json, os, re, signal, socket, subprocess, time

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
        import threading
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

    def wait_idle(self, timeout):
        """Polls /health until nothing runs or waits; returns (idle, last health)."""
        deadline = time.time() + timeout
        h = None
        while time.time() < deadline:
            st, _, h = self.request("GET", "/health")
            if st == 200 and h.get("running") == 0 and h.get("queued") == 0:
                return True, h
            time.sleep(0.1)
        return False, h

    def post(self, path, body, timeout=120):
        return self.request("POST", path, body, timeout=timeout)

    def stream(self, path, body, timeout=120, stop_after=None):
        """POSTs with stream: true; returns (status, events) where events are
        the parsed JSON of each `data:` line and the string '[DONE]'. With
        stop_after=N the connection is closed after N events (a disconnect)."""
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
            if stop_after is not None and len(events) >= stop_after:
                c.sock.shutdown(socket.SHUT_RDWR)
                c.close()
                return r.status, events
            if payload == "[DONE]":
                break
        c.close()
        return r.status, events


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
