#!/usr/bin/env bash
# Quick start, the tests: installs what strata needs, builds it, and runs
# every test (unit tests, end-to-end checks against ../shared/reference, the
# acceptance script, llama.cpp loading strata's GGUF files). Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
# llama.cpp (node-llama-cpp's prebuilt CPU binary) for the tests that check
# llama.cpp loads strata's GGUF files, and for bench/peer.
bench/peer/setup.sh
cd build
ctest --output-on-failure --timeout 1800 -j2
