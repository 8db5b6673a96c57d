#!/usr/bin/env bash
# ASan + UBSan (+ LeakSanitizer) build of strata in build-asan/
# (STRATA_SANITIZE=ON, -O1 -g1: line tables are enough for the reports and
# build faster than full debug info) and its fast tests: every unit test
# (ctest -L unit, fuzz regressions included) and the bad-file end-to-end test.
# Any sanitizer report fails the run (-fno-sanitize-recover).
#
#   launch/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "sanitize: building build-asan/ (-fsanitize=address,undefined)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DSTRATA_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" --target strata strata_unit_tests strata_fuzz_replay
cd build-asan
# Every 7th byte of the truncation sweep (every byte in the normal build).
export STRATA_SWEEP_STRIDE=7
ctest --output-on-failure --timeout 900 -j2 -L unit
ctest --output-on-failure --timeout 900 -R "^e2e_bad_files$"
