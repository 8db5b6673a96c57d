#!/usr/bin/env bash
# Quick start, the tests: installs what strata needs, builds it, and runs
# every test (unit tests, end-to-end checks against ../shared/reference, the
# acceptance script, llama.cpp loading strata's GGUF files), then the
# sanitizer build's tests and a short fuzzing run. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
# llama.cpp (node-llama-cpp's prebuilt CPU binary) for the tests that check
# llama.cpp loads strata's GGUF files, and for bench/peer.
bench/peer/setup.sh
# The official OpenAI client (npm openai) for tests/e2e/test_openai_client.py.
tests/e2e/openai_client/setup.sh
(cd build && ctest --output-on-failure --timeout 1800 -j2)
# Hostile and broken files (issue 8): the ASan + UBSan build and its fast
# tests, then each libFuzzer target for a short fixed time
# (STRATA_FUZZ_SECONDS, default 25 s per target).
launch/sanitize.sh
fuzz/run.sh "${STRATA_FUZZ_SECONDS:-25}"
