#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, STRATA_FUZZ=ON) into
# build-fuzz/ and runs each for SECONDS (default 30): gguf, safetensors,
# tokenizer, json_config, chat_template. The corpus grows in
# build-fuzz/corpus/<target>/, seeded from the shared model files (small ones
# whole, big ones' headers), the shared chat templates (each with a small
# conversation, after a NUL byte) and the built-in seeds of fuzz/entries.cc;
# fuzz/regressions/<target>/ is replayed first. A crash leaves its input in
# build-fuzz/artifacts/<target>/: fix the bug, then keep the input in
# fuzz/regressions/<target>/.
# Writes a summary (seconds, executions, corpus size per target) to
# build-fuzz/summary.txt. Exit status 1 when any target found a crash.
#
#   fuzz/run.sh 30
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
root=$(pwd)
shared=$(cd .. && pwd)/shared
targets=(gguf safetensors tokenizer json_config chat_template)

command -v clang++ >/dev/null || { echo "fuzz: needs the Debian package 'clang' (launch/setup.sh)" >&2; exit 1; }
echo "fuzz: building build-fuzz/ (clang, -fsanitize=fuzzer,address,undefined)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DSTRATA_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target strata_fuzz_replay $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

# Seeds: built-in small files, then the shared ones.
seeds=build-fuzz/seeds
rm -rf "$seeds"
build-fuzz/bin/strata_fuzz_replay --seeds "$seeds"
for t in "${targets[@]}"; do mkdir -p "$seeds/$t"; done
gguf_header() {  # the first bytes of a big GGUF (its fixed header and first keys)
  [ -f "$1" ] && head -c 65536 "$1" > "$seeds/gguf/$(basename "$1").head" || true
}
gguf_header "$shared/models/smol-shakespeare.llamacpp-q4_k_m.gguf"
gguf_header "$root/models/smol-shakespeare-q4_k_m.gguf"
gguf_header "$shared/tokenizer/ggml-vocab-llama-bpe.gguf"
st="$shared/models/smol-shakespeare/model.safetensors"
if [ -f "$st" ]; then  # its header, as a file with no tensor data
  python3 - "$st" "$seeds/safetensors/shared.header" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(8); n = struct.unpack("<Q", b)[0]
open(sys.argv[2], "wb").write(open(sys.argv[1], "rb").read(8 + n))
PY
fi
for f in "$shared/tokenizer/ggml-vocab-llama-bpe.gguf.inp" "$root/README.md"; do
  [ -f "$f" ] && head -c 4096 "$f" > "$seeds/tokenizer/$(basename "$f")" || true
done
printf 'caf\xc3\xa9 \xff\xfe <|begin_of_text|>\xe2\x82 1234567 don'"'"'t\r\n\t  x' > "$seeds/tokenizer/mixed"
hf="$shared/models/smol-shakespeare"
for pair in 0:config.json 1:generation_config.json 2:tokenizer_config.json; do
  kind=${pair%%:*} file=${pair#*:}
  [ -f "$hf/$file" ] && { printf "\\x0$kind"; cat "$hf/$file"; } > "$seeds/json_config/shared_$file" || true
done
# Chat templates: the shared ones and the model's, each with a conversation
# (template, NUL, JSON: see ChatTemplateEntry).
conv='{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
 {"role": "assistant", "content": "<think>\nr\n</think>\n\nHello.", "tool_calls": [{"type": "function",
  "function": {"name": "f", "arguments": {"x": 1}}}]}, {"role": "tool", "content": "42"},
 {"role": "user", "content": "Thanks"}],
 "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object",
  "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]}'
for f in "$shared"/templates/*.jinja "$hf/chat_template.jinja"; do
  [ -f "$f" ] && { cat "$f"; printf '\0%s' "$conv"; } > "$seeds/chat_template/$(basename "$(dirname "$f")")_$(basename "$f")" || true
done

status=0
summary=build-fuzz/summary.txt
printf '%-14s %8s %12s %10s %8s\n' target seconds executions exec/s corpus > "$summary"
for t in "${targets[@]}"; do
  bin=build-fuzz/bin/fuzz_$t
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/artifacts/$t"
  reg=fuzz/regressions/$t
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    "$bin" -runs=0 "$reg"/* > "build-fuzz/$t.replay.log" 2>&1 || { echo "fuzz: $t: a regression input fails (build-fuzz/$t.replay.log)" >&2; status=1; }
  fi
  log=build-fuzz/$t.log
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="build-fuzz/artifacts/$t/" "build-fuzz/corpus/$t" "$seeds/$t" > "$log" 2>&1; then
    :
  else
    echo "fuzz: $t: CRASH, input in build-fuzz/artifacts/$t/ (log: $log)" >&2
    grep -m5 -E "ERROR|runtime error|Check failed|SUMMARY" "$log" >&2 || true
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  corpus=$(ls "build-fuzz/corpus/$t" | wc -l)
  printf '%-14s %8s %12s %10s %8s\n' "$t" "$secs" "$execs" "$rate" "$corpus" >> "$summary"
done
cat "$summary"
exit $status
