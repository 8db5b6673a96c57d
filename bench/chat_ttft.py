#!/usr/bin/env python3
"""Time to first token of the 5th turn of a chat, with and without the
server's prefix cache (docs/serving.md has the figures). Starts
`strata serve` (under mpirun with --ranks N > 1), runs --reps chats of 5
turns (answers of --answer-tokens, greedy); the 5th turn is asked with
max_tokens 1, so its wall time is its time to the first token (the prompt's
prefill and one sampled token). Prints one JSON line per server.

  bench/chat_ttft.py --model ../shared/models/smol-shakespeare --ranks 1
  bench/chat_ttft.py --model /tmp/smollm3-3b-q4_k_m.gguf --api completions --ranks 2

--api chat uses the model's chat template (the shared model's SmolLM3 template
renders a long system prompt); --api completions (a model without a template)
builds the turns as plain text. Standard library only."""
import argparse, json, os, statistics, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from server_client import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["Who is Romeo?", "And Juliet?", "Where do they meet?", "What happens to Tybalt?", "How does it end?"]


def ask(srv, api, history, question, max_tokens, rep):
    """(answer text, usage, seconds) of one turn."""
    if api == "chat":
        first = [{"role": "user", "content": f"Chat {rep}. {question}"}] if not history else []
        messages = history + (first or [{"role": "user", "content": question}])
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0,
                "chat_template_kwargs": {"enable_thinking": False}}
        path = "/v1/chat/completions"
    else:
        prompt = (history[0] if history else f"Chat {rep}.\n") + f"USER: {question}\nASSISTANT:"
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        path = "/v1/completions"
    t0 = time.perf_counter()
    st, _, j = srv.post(path, body, timeout=600)
    dt = time.perf_counter() - t0
    if st != 200:
        raise RuntimeError(f"{path}: {st} {j}")
    c = j["choices"][0]
    text = c["message"]["content"] if api == "chat" else c["text"]
    if api == "chat":
        history = messages + [{"role": "assistant", "content": text}]
    else:
        history = [prompt + text + "\n"]
    return history, j["usage"], dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "strata"))
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--api", choices=["chat", "completions"], default="chat")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--answer-tokens", type=int, default=48)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--extra", default="", help="more `strata serve` flags, space-separated")
    a = ap.parse_args()
    for cache in (False, True):
        args = ["--ctx", str(a.ctx), "--parallel", "1"] + (["--cache-seqs", "0"] if not cache else []) + a.extra.split()
        srv = Server(a.binary, a.model, args, ranks=a.ranks, start_timeout=600)
        try:
            ttft, prompt, cached = [], [], []
            for rep in range(a.reps):
                history = []
                for turn, q in enumerate(QUESTIONS):
                    last = turn == len(QUESTIONS) - 1
                    history, usage, dt = ask(srv, a.api, history, q, 1 if last else a.answer_tokens, rep)
                if last:
                    ttft.append(dt)
                    prompt.append(usage["prompt_tokens"])
                    cached.append(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0))
        finally:
            srv.stop(60)
        print(json.dumps({"model": os.path.basename(a.model.rstrip("/")), "ranks": a.ranks, "cache": cache,
                          "turn5_prompt_tokens": prompt, "turn5_cached_tokens": cached,
                          "turn5_ttft_ms": [round(x * 1000, 1) for x in ttft],
                          "turn5_ttft_ms_median": round(statistics.median(ttft) * 1000, 1),
                          "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
