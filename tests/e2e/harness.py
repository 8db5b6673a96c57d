"""What the end-to-end scripts share: their arguments, running strata (alone
or under mpirun, always with a timeout), recording checks and the summary
line ctest reads. Standard library only; the scripts import it from their own
folder (as the server tests import server_client).

Every script is run by ctest as `SCRIPT BINARY SHARED_DIR [FAULTS_BINARY]`:

    import harness
    from harness import BIN, SHARED, check, run

    p = run(["generate", "-m", MODEL, "-p", "ROMEO:", "-n", "4"], ranks=2)
    check("2 ranks generate", p.returncode == 0, p.stderr[-300:])
    harness.finish()   # prints 'N passed, N failed', exits 1 when any failed
"""
import json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Run by hand without arguments: this checkout's build and the shared folder beside it.
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bin", "strata")
SHARED = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(ROOT), "shared")
FAULTS = sys.argv[3] if len(sys.argv) > 3 else None  # the strata_faults test binary, for the scripts given it
SMALL_MODEL = os.path.join(ROOT, "models", "smol-shakespeare-q4_k_m.gguf")

# mpirun as root, more ranks than cores, no binding (the tests share 2 cores).
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]

results = []
quiet = False  # True: print failures only (scripts with hundreds of checks)


def check(name, ok, detail=""):
    """Records one check; prints PASS or FAIL with `detail` on failure."""
    results.append(bool(ok))
    if not ok or not quiet:
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail and not ok else ''}", flush=True)


def run(args, ranks=0, binary=None, timeout=300, env=None, stdin=None, prefix=(), text=True):
    """`binary` (default BIN) with `args`, under mpirun with `ranks` ranks when
    ranks > 0 (MPI_ENV unless `env`); output captured; raises
    subprocess.TimeoutExpired past `timeout` seconds."""
    cmd = [binary or BIN, *args]
    if ranks:
        cmd = [*MPIRUN, "-np", str(ranks), *cmd]
        env = env or MPI_ENV
    return subprocess.run([*prefix, *cmd], capture_output=True, text=text, timeout=timeout, env=env, input=stdin)


def as_list(v):
    """A reference field stored as a JSON list or as a string of one."""
    return json.loads(v) if isinstance(v, str) else v


def finish():
    """Prints the summary line and exits: 0 when every check passed (and at least one ran)."""
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and passed == len(results) else 1)


def rank_pids(matches):
    """pid by MPI rank (OMPI_COMM_WORLD_RANK) of each process whose command line
    (a list of bytes arguments) `matches` accepts."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if not cmd or not matches(cmd):
                continue
            for e in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    out[int(e.split(b"=")[1])] = int(pid)
        except OSError:
            pass
    return out
