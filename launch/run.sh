#!/usr/bin/env bash
# Quick start, the main job: installs what strata needs, builds it, and
# generates text with the small model shipped in models/.
# Extra arguments are passed to `strata generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
exec build/bin/strata generate -m models/smol-shakespeare-q4_k_m.gguf \
  -p "First Citizen:
Before we proceed any further, hear me speak.
" -n 64 --temp 0 "$@"
