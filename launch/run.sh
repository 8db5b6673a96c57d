#!/usr/bin/env bash
# Quick start, the main job: installs what strata needs, builds it, and runs
# the small model shipped in models/ as a pipeline of 4 MPI ranks (rank 0:
# coordinator + layers of stage 0; the last rank: final layers, lm_head,
# sampling). Extra arguments are passed to `strata generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
exec launch/strata-mpirun -np 4 -- build/bin/strata generate -m models/smol-shakespeare-q4_k_m.gguf \
  -p "First Citizen:
Before we proceed any further, hear me speak.
" -n 64 --temp 0 "$@"
