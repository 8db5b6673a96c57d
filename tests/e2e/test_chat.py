#!/usr/bin/env python3
"""Chat end to end: `generate --chat` in thinking and non-thinking mode against
the shared reference's chat case (prompt ids, greedy ids, the reasoning /
answer split), `--show-thinking`, under mpirun, and the interactive
`strata chat` through a pseudo-terminal (history, /reset, /think, /no_think,
Ctrl-C stops an answer, Ctrl-D quits). Every child has a timeout.

Run by ctest: test_chat.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, pty, select, shutil, signal, tempfile, time

import harness
from harness import BIN, SHARED, as_list, check, run

HF = os.path.join(SHARED, "models", "smol-shakespeare")
REF = json.load(open(os.path.join(SHARED, "reference", "smol-shakespeare.hf.json")))
CASE = next(c for c in REF["cases"] if c["prompt"].startswith("<|im_start|>"))
QUESTION = CASE["prompt"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
IM_END = 8190
MPI_ENV = dict(harness.MPI_ENV, OMPI_MCA_mpi_yield_when_idle="1")



# What the reference's greedy text says, split as the chat templates split it.
ref_prompt_ids = as_list(CASE["prompt_ids"])
ref_ids = as_list(CASE["greedy_ids"])
ref_text = CASE["greedy_text"].split("<|im_end|>")[0]
ref_reasoning = ref_text.split("</think>")[0].split("<think>")[-1].strip("\n")
ref_answer = ref_text.split("</think>")[-1].lstrip("\n")
assert ref_reasoning and ref_answer, (ref_reasoning, ref_answer)
ref_until_eos = ref_ids[: ref_ids.index(IM_END) + 1]

# ── generate --chat, thinking ──
for label, flags in (("--think", ["--think"]), ("template default", [])):
    p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--temp", "0", "-n", "48", "--json"] + flags)
    try:
        j = json.loads(p.stdout)
    except ValueError:
        j = {}
    check(f"chat {label}: prompt ids == reference", j.get("prompt_ids") == ref_prompt_ids, p.stderr[-300:])
    check(f"chat {label}: ids == reference until <|im_end|>", j.get("ids") == ref_until_eos, str(j.get("ids")))
    check(f"chat {label}: reasoning split", j.get("reasoning") == ref_reasoning, repr(j.get("reasoning")))
    check(f"chat {label}: answer split", j.get("text") == ref_answer, repr(j.get("text")))
    check(f"chat {label}: finish_reason stop", j.get("finish_reason") == "stop", str(j.get("finish_reason")))

p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--think", "--temp", "0", "-n", "48", "--ignore-eos", "--json"])
j = json.loads(p.stdout) if p.returncode == 0 else {}
check("chat --ignore-eos: all 48 greedy ids == reference", j.get("ids") == ref_ids, p.stderr[-300:])

# The prompt text itself (strata template) is the reference's prompt.
with tempfile.TemporaryDirectory() as d:
    conv = os.path.join(d, "c.json")
    json.dump([{"role": "user", "content": QUESTION}], open(conv, "w"))
    p = run(["template", "-m", HF, "--messages", conv, "--think"])
    check("template -m HF --think == reference prompt", p.stdout == CASE["prompt"], p.stderr[-300:])

# Streamed text: the answer only, or reasoning + blank line + answer.
p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--think", "--temp", "0", "-n", "48"])
check("chat stream: answer only", p.returncode == 0 and p.stdout.strip() == ref_answer, repr(p.stdout))
p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--think", "--temp", "0", "-n", "48", "--show-thinking"])
check("chat stream --show-thinking", p.returncode == 0 and p.stdout.strip() == ref_reasoning + "\n\n" + ref_answer, repr(p.stdout))

# ── no-think: the template closes an empty think block in the prompt ──
p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--no-think", "--temp", "0", "-n", "32", "--json"])
j = json.loads(p.stdout) if p.returncode == 0 else {}
with tempfile.TemporaryDirectory() as d:
    conv = os.path.join(d, "c.json")
    json.dump([{"role": "user", "content": QUESTION}], open(conv, "w"))
    prompt = run(["template", "-m", HF, "--messages", conv, "--no-think"]).stdout
plain = run(["generate", "-m", HF, "-p", prompt, "--temp", "0", "-n", "32", "--json"])
pj = json.loads(plain.stdout) if plain.returncode == 0 else {}
check("no-think: prompt ends with an empty think block", prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n"), repr(prompt[-60:]))
check("no-think: prompt ids == the rendered template's tokens", j.get("prompt_ids") == pj.get("prompt_ids") and j.get("prompt_ids") != ref_prompt_ids)
check("no-think: same greedy ids as the plain prompt", j.get("ids") == pj.get("ids") and len(j.get("ids") or []) > 0)
check("no-think: no reasoning, the answer is the text", j.get("reasoning") == "" and j.get("text") == pj.get("text", "").split("<|im_end|>")[0]
      and j.get("text", "") != "", f"{j.get('reasoning')!r} {j.get('text')!r} vs {pj.get('text')!r}")
p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--system", "Be brief. /no_think", "--temp", "0", "-n", "32", "--json"])
j2 = json.loads(p.stdout) if p.returncode == 0 else {}
check("/no_think in the system prompt switches thinking off", j2.get("reasoning") == "" and j2.get("prompt_ids") != j.get("prompt_ids"), p.stderr[-200:])

# ── flags and models without a template ──
p = run(["generate", "-m", HF, "-p", "x", "--think"])
check("--think without --chat is a usage error", p.returncode == 2 and "--chat" in p.stderr, p.stderr)
p = run(["generate", "-m", HF, "--chat", "-p", "x", "--think", "--no-think"])
check("--think with --no-think is a usage error", p.returncode == 2, p.stderr)
with tempfile.TemporaryDirectory() as d:
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        os.symlink(os.path.join(HF, f), os.path.join(d, f))
    cfg = json.load(open(os.path.join(HF, "tokenizer_config.json")))
    cfg.pop("chat_template", None)
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    p = run(["generate", "-m", d, "--chat", "-p", "x"])
    check("model without a chat template: one clear error", p.returncode == 1 and "no chat template" in p.stderr
          and len(p.stderr.strip().splitlines()) == 1, p.stderr)

# ── under mpirun (rank 0 renders; the split is the same) ──
if shutil.which("mpirun"):
    p = run(["generate", "-m", HF, "--chat", "-p", QUESTION, "--think", "--temp", "0", "-n", "48", "--json"],
            ranks=2, env=MPI_ENV, timeout=180)
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    check("mpirun -np 2 chat: ids, reasoning and answer == reference",
          j.get("ids") == ref_until_eos and j.get("reasoning") == ref_reasoning and j.get("text") == ref_answer, p.stderr[-300:])
    p = run(["chat", "-m", HF, "--temp", "0", "-n", "48", "--think"], ranks=2, env=MPI_ENV, timeout=180,
            stdin=QUESTION + "\n/reset\n" + QUESTION + "\n")
    check("mpirun -np 2 strata chat (stdin on rank 0)", p.returncode == 0 and p.stdout.count(ref_answer) == 2
          and "(history cleared)" in p.stdout, f"exit {p.returncode} {p.stdout[-300:]!r} {p.stderr[-300:]!r}")


# ── interactive chat through a pseudo-terminal ──
class Pty:
    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(BIN, [BIN] + args)
        self.buf = b""

    def _read_while(self, waiting, timeout):
        """Reads into self.buf while waiting() holds: False on timeout or end of output."""
        end = time.time() + timeout
        while waiting():
            left = end - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    return False
                if not data:
                    return False
                self.buf += data
        return True

    def read_until(self, token, timeout=60):
        if not self._read_while(lambda: token.encode() not in self.buf, timeout):
            return None
        i = self.buf.index(token.encode()) + len(token)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out.decode("utf-8", "replace")

    def read_some(self, timeout=60):
        """Waits until text other than escape codes has arrived (not consumed)."""
        return self._read_while(lambda: not strip_ansi(self.buf.decode("utf-8", "replace")).strip(), timeout)

    def send(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                select.select([self.fd], [], [], 0.2)
                os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None


def strip_ansi(s):
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", s or "")


c = Pty(["chat", "-m", HF, "--temp", "0", "-n", "48", "--think"])
banner = c.read_until("> ")
check("pty chat: banner and prompt", banner is not None and "Ctrl-D" in banner, repr(banner))
c.send(QUESTION + "\n")
out = strip_ansi(c.read_until("\n> "))
check("pty chat: answer streamed, reasoning hidden", ref_answer in out and ref_reasoning not in out, repr(out))
c.send("/reset\n")
out = c.read_until("\n> ")
check("pty chat: /reset", out is not None and "history cleared" in out, repr(out))
c.send(QUESTION + "\n")
out = strip_ansi(c.read_until("\n> "))
check("pty chat: after /reset the first answer again", ref_answer in out, repr(out))
c.send("/no_think\n")
out = c.read_until("\n> ")
check("pty chat: /no_think", out is not None and "thinking off" in out, repr(out))
c.send("/think\n")
out = c.read_until("\n> ")
check("pty chat: /think", out is not None and "thinking on" in out, repr(out))
c.send("\x04")
code = c.wait()
check("pty chat: Ctrl-D quits with status 0", code == 0, str(code))

# Ctrl-C stops a (never-ending) answer, not the program.
c = Pty(["chat", "-m", HF, "--temp", "0", "-n", "1000000", "--ignore-eos"])
c.read_until("> ")
for turn in range(2):
    c.send("Tell me a long tale\n")
    got = c.read_until("Tell me a long tale\r\n", timeout=30)  # the terminal's echo
    streaming = c.read_some()  # the answer has started
    c.send("\x03")
    out = strip_ansi(c.read_until("\n> ", timeout=60))
    check(f"pty chat: Ctrl-C stops answer {turn + 1} and the prompt returns", streaming and out is not None
          and "[stopped]" in out and len(out.split("[stopped]")[0].strip()) > 0, repr(out)[-300:])
c.send("\x04")
code = c.wait()
check("pty chat: still alive after Ctrl-C, Ctrl-D exits 0", code == 0, str(code))

harness.finish()
