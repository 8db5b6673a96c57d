#!/usr/bin/env python3
"""What a lost rank costs `strata serve --supervise` (docs/reliability.md):
time from the failure to the first token after recovery, split into
detection, teardown, relaunch + load and re-prefill, as the number and length
of the sequences in flight grow.

For each N in --sequences: N streaming clients (greedy, ignore_eos), each
with a prompt of about --prompt-words words; once every stream has
--tokens-before tokens, rank 1 of the job gets SIGKILL (or SIGSTOP with
--stop); the script prints the split the front logged and the wall time from
the signal to the first token after the pause. One front serves every run.

    python3 bench/supervise_recovery.py --model ../shared/models/smol-shakespeare.llamacpp-q4_k_m.gguf \\
        --sequences 1,4,8 --tokens-before 50,200
"""
import argparse, http.client, json, os, re, signal, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from server_client import Server  # noqa: E402

os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_mpi_yield_when_idle="1")
WORDS = ("Now is the winter of our discontent made glorious summer by this sun of York and all the clouds that "
         "lour'd upon our house in the deep bosom of the ocean buried").split()


def job_rank_pid(tag, rank):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if b"--front" not in cmd or tag.encode() not in cmd:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                return int(pid)
        except OSError:
            pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "build", "bin", "strata"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--sequences", default="1,4,8")
    ap.add_argument("--tokens-before", default="50", help="tokens each stream has when the rank is lost (list)")
    ap.add_argument("--prompt-words", type=int, default=20)
    ap.add_argument("--ctx", default="1791")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--stop", action="store_true", help="SIGSTOP instead of SIGKILL (found by --stage-timeout 3)")
    a = ap.parse_args()
    # SIGTERM (a `timeout` around the script) still stops the front and its job.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    seqs = [int(x) for x in a.sequences.split(",")]
    befores = [int(x) for x in a.tokens_before.split(",")]
    srv = Server(a.binary, a.model, ["--supervise", "--np", str(a.ranks), "--mpirun-args=--oversubscribe --bind-to none",
                                     "--ctx", a.ctx, "--parallel", str(max(seqs)), "-t", a.threads, "--stage-timeout", "3",
                                     "--max-host-failures", "1000", "--request-timeout", "3000"], start_timeout=600)
    print("sequences  tokens-before  prompt  detection  teardown  relaunch+load  re-prefill (tokens)  "
          "failure->first token", flush=True)
    try:
        for before in befores:
            for n in seqs:
                counts = [0] * n
                times = [[] for _ in range(n)]

                def client(i):
                    words = (WORDS * 50)[i: i + a.prompt_words]
                    body = {"prompt": " ".join(words), "max_tokens": before + 30, "temperature": 0, "ignore_eos": True,
                            "stream": True}
                    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=3000)
                    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    for line in r:
                        if line.startswith(b"data: {"):
                            counts[i] += 1
                            times[i].append(time.time())
                    c.close()

                threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
                for t in threads:
                    t.start()
                while min(counts) < before:
                    time.sleep(0.01)
                pid = job_rank_pid(a.ctx, 1)
                t0 = time.time()
                os.kill(pid, signal.SIGSTOP if a.stop else signal.SIGKILL)
                for t in threads:
                    t.join()
                firsts = []
                for ts in times:
                    gaps = [(ts[k] - ts[k - 1], ts[k]) for k in range(1, len(ts)) if ts[k] > t0]
                    if gaps:
                        firsts.append(max(gaps)[1])
                took = min(firsts) - t0
                log = "".join(srv.log)
                m = re.findall(r"teardown ([0-9.]+) s, relaunch \+ load ([0-9.]+) s, re-prefill ([0-9.]+) s "
                               r"\((\d+) sequence\(s\), (\d+) token", log)[-1]
                ft = float(re.findall(r"first tokens ([0-9.]+) s after the failure was detected", log)[-1])
                print(f"{n:9d}  {before:13d}  {a.prompt_words:6d}w  {took - ft:8.2f}s  {float(m[0]):7.2f}s  "
                      f"{float(m[1]):12.2f}s  {float(m[2]):8.2f}s ({m[4]:>5})  {took:8.2f}s", flush=True)
    finally:
        srv.stop(60)


if __name__ == "__main__":
    main()
