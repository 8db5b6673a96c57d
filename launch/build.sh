#!/usr/bin/env bash
# Configures and builds strata into build/ (Release). Used by the quick-start scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
