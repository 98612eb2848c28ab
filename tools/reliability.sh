#!/usr/bin/env bash
# The reliability harness (issue 8) on a clang AddressSanitizer + UndefinedBehaviorSanitizer build with libFuzzer
# targets: faults injected and survived, bad inputs rejected, parsers fuzzed. The summary line is printed last.
#   bash tools/reliability.sh          # CI: a few minutes (20 s of fuzzing per target)
#   bash tools/reliability.sh --long   # ctest label reliability-long: more kills, 10 minutes per fuzz target
# Needs clang, libclang-rt-14-dev and libomp-dev (tools/install-deps.sh installs them). Build in build-san/, logs in
# build-san/reliability*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
label=reliability
[ "${1:-}" = --long ] && label=reliability-long
start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B build-san -DMT_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMT_SANITIZE=ON \
  -DMT_FUZZ=ON > build-san.cmake.log 2>&1 || { cat build-san.cmake.log; exit 1; }
cmake --build build-san -j"$(nproc)" --target reliability_bins > build-san/build.log 2>&1 || { tail -40 build-san/build.log; exit 1; }
built=$(date +%s)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
log=build-san/$label.log
rc=0
ctest --test-dir build-san -L "^$label\$" --output-on-failure -V > "$log" 2>&1 || rc=$?
grep -E '^[0-9]+: (  (ok|FAIL)|==|  \(|\()' "$log" | sed 's/^[0-9]*: //' | grep -v '^  ok' || true
echo "reliability: sanitizer build $((built - start)) s, harness $(( $(date +%s) - built )) s (log: $log)"
summary=$(grep -E '^[0-9]+: faults: ' "$log" | tail -1 | sed 's/^[0-9]*: //')
[ -n "$summary" ] || { tail -60 "$log"; echo "reliability: the harness printed no summary"; exit 1; }
echo "$summary"
exit $rc
