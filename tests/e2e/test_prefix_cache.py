#!/usr/bin/env python3
"""The server's prefix cache end to end: two 5-turn chats (one greedy, one
seeded at temperature 0.8, their turns interleaved; 3 turns under
STRATA_E2E_SANITIZER) against `strata serve`
with the cache (--parallel 2, so 2 kept sequences) and the same requests
against a fresh server without it (--cache-seqs 0), on 1 rank and on 2 ranks
under mpirun. Every answer (text, finish, token counts) must equal the
fresh server's; from the second turn on, usage.prompt_tokens_details.
cached_tokens must cover at least the previous turn's whole prompt (the
state of the previous turn was reused), and the fresh server never serves
a token from a cache. A request with "cache_prompt": false is computed
whole and still gives the same answer; the server's closing log line counts
the hits. Timing-free: no check depends on how fast the machine is.

Run by ctest: test_prefix_cache.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_client import Server  # noqa: E402

from harness import BIN, SHARED, check, finish  # noqa: E402

HF = os.path.join(SHARED, "models", "smol-shakespeare")
QUESTIONS = ["Who is Romeo?", "And Juliet?", "Where do they meet?", "What happens to Tybalt?", "How does it end?"]
# The sanitizer build (launch/sanitize.sh): the same checks over 3 turns of shorter answers.
SANITIZER = bool(os.environ.get("STRATA_E2E_SANITIZER"))
TURNS = 3 if SANITIZER else len(QUESTIONS)
ANSWER_TOKENS = 10 if SANITIZER else 20
CONVERSATIONS = {"greedy": {"temperature": 0}, "seeded": {"temperature": 0.8, "seed": 1234}}


def body(messages, sampling, **extra):
    return dict({"messages": messages, "max_tokens": ANSWER_TOKENS, "chat_template_kwargs": {"enable_thinking": False}}, **sampling,
                **extra)


def answer(srv, b):
    st, _, j = srv.post("/v1/chat/completions", b)
    if st != 200 or not isinstance(j, dict) or "choices" not in j:
        return None, {}
    c = j["choices"][0]
    u = j.get("usage", {})
    return (c["message"].get("content"), c["finish_reason"], u.get("prompt_tokens"), u.get("completion_tokens")), u


def run(ranks):
    label = f"{ranks} rank{'s' if ranks > 1 else ''}"
    cached = Server(BIN, HF, ["--parallel", "2", "--ctx", "2048"], ranks=ranks, start_timeout=180)
    try:
        fresh = Server(BIN, HF, ["--parallel", "2", "--ctx", "2048", "--cache-seqs", "0"], ranks=ranks, start_timeout=180)
    except Exception:
        cached.kill()
        raise
    hits = 0
    served_total = 0
    try:
        history = {name: [] for name in CONVERSATIONS}
        last_prompt = {name: 0 for name in CONVERSATIONS}
        for turn in range(TURNS):
            for name, sampling in CONVERSATIONS.items():
                messages = history[name] + [{"role": "user", "content": QUESTIONS[turn]}]
                got, usage = answer(cached, body(messages, sampling))
                want, fresh_usage = answer(fresh, body(messages, sampling))
                where = f"{label}, {name} turn {turn + 1}"
                check(f"{where}: answer == a fresh server's", got is not None and got == want, (got, want))
                if got is None:
                    return
                served = usage.get("prompt_tokens_details", {}).get("cached_tokens")
                check(f"{where}: the fresh server served nothing from a cache",
                      fresh_usage.get("prompt_tokens_details", {}).get("cached_tokens") == 0, fresh_usage)
                if turn > 0:
                    # The previous turn's prompt (and, when its answer re-tokenizes
                    # the same, its answer) came from the cache.
                    check(f"{where}: cached_tokens {served} >= the previous prompt's {last_prompt[name]} (of {got[2]})",
                          isinstance(served, int) and last_prompt[name] <= served < got[2], usage)
                    hits += 1
                served_total += served if isinstance(served, int) else 0
                print(f"{where}: prompt {got[2]} tokens, {served} from the cache", flush=True)
                last_prompt[name] = got[2]
                history[name] = messages + [{"role": "assistant", "content": got[0]}]
        # /metrics counts what the responses said: every prompt looked up, the
        # hits, the tokens served from the cache, and the sequences kept now.
        st, _, text = cached.request("GET", "/metrics")
        metric = {}
        for line in (text if isinstance(text, str) else "").splitlines():
            if line.startswith("strata_prompt_"):
                name, value = line.rsplit(" ", 1)
                metric[name] = float(value)
        check(f"{label}: /metrics: {2 * TURNS} lookups, >= {hits} hits, {served_total} tokens from the cache, kept sequences",
              st == 200 and metric.get("strata_prompt_cache_lookups_total") == 2 * TURNS
              and metric.get("strata_prompt_cache_hits_total", -1) >= hits
              and metric.get("strata_prompt_tokens_cached_total") == served_total
              and metric.get("strata_prompt_cache_sequences", 0) >= 1 and metric.get("strata_prompt_cache_bytes", 0) > 0, metric)
        # cache_prompt: false computes the whole prompt, same answer.
        messages = history["greedy"] + [{"role": "user", "content": "Thanks."}]
        got, usage = answer(cached, body(messages, CONVERSATIONS["greedy"], cache_prompt=False))
        want, _ = answer(fresh, body(messages, CONVERSATIONS["greedy"]))
        check(f"{label}: cache_prompt false: answer == a fresh server's", got is not None and got == want, (got, want))
        check(f"{label}: cache_prompt false: nothing served from the cache",
              usage.get("prompt_tokens_details", {}).get("cached_tokens") == 0, usage)
        st, _, j = cached.post("/v1/chat/completions", body(messages, {"temperature": 0}, cache_prompt="no"))
        check(f"{label}: cache_prompt must be a boolean (400 naming it)",
              st == 400 and j.get("error", {}).get("param") == "cache_prompt", (st, j))
    finally:
        rc_cached = cached.stop(60)
        rc_fresh = fresh.stop(60)
    check(f"{label}: both servers exit cleanly", rc_cached == 0 and rc_fresh == 0, (rc_cached, rc_fresh))
    log = "".join(cached.log)
    m = re.search(r"prefix cache: (\d+) of (\d+) prompts hit, (\d+) of (\d+) prompt tokens served from it", log)
    check(f"{label}: the closing log counts the hits", m is not None and int(m.group(1)) >= hits
          and int(m.group(2)) == 2 * TURNS and 0 < int(m.group(3)) < int(m.group(4)), log[-600:])
    if m:
        print(f"{label}: {m.group(0)}", flush=True)


run(1)
run(2)  # under mpirun
finish()
