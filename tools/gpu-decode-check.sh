#!/usr/bin/env bash
# Decoding on the GPU machine, from an existing build (this script builds nothing; tools/gpu-check.sh builds):
# the decode kernels' op-table checks (CUDA against the CPU) and the `CudaDecode` tests (whole generations, graph /
# PDL / cuBLAS paths),
# memcheck on the kernel tests, `bench decode` for mamba-130m (random weights, prompt 128, 512 new tokens, greedy)
# at batch 1 and 64 with and without PDL / the CUDA graph, empty kernels added after each kernel (the cost of a
# boundary), the GEMV / cuBLAS boundary, sampling, f32, and greedy checks
# against the parallel forward. Full logs under $OUT (or ./gpu-logs); a short table last.
#   bash tools/gpu-decode-check.sh [build dir]      (MEMCHECK=0 skips memcheck)
set -uo pipefail
build=${1:-build}
out=${OUT:-gpu-logs}
mkdir -p "$out"
bin=$build/mamba-train
tests=$build/tests/mt_cuda_tests
if [ ! -x "$bin" ] || [ ! -x "$tests" ]; then
  echo "gpu-decode-check: no build in $build (cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build -j)"
  exit 2
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)

"$tests" --gtest_filter='CudaDecode.*:OpTable/CudaKernel.OwnChecks/decode_gemv:OpTable/CudaKernel.OwnChecks/sampling:OpTable/CudaKernel.OwnChecks/ssm_step' \
  > "$out/decode-tests.log" 2>&1
tests_rc=$?
memcheck_rc=skipped
if [ "${MEMCHECK:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 99 "$tests" \
    --gtest_filter='OpTable/CudaKernel.OwnChecks/decode_gemv:OpTable/CudaKernel.OwnChecks/sampling:OpTable/CudaKernel.OwnChecks/ssm_step:CudaDecode.Graph*' \
    > "$out/decode-memcheck.log" 2>&1
  memcheck_rc=$?
fi

bench() {  # label, extra args
  local label=$1
  shift
  echo "== $label: bench decode $*"
  "$bin" bench decode --repeats 3 "$@"
  echo "rc $?"
}
{
  bench "bf16" --batch 1,64
  bench "bf16 1 empty kernel after each" --batch 1 --empty-kernels 1
  bench "bf16 2 empty kernels after each" --batch 1 --empty-kernels 2
  bench "bf16 no pdl" --batch 1,64 --no-pdl
  bench "bf16 no graph" --batch 1,64 --no-cuda-graph
  bench "bf16 gemv at 4 and 8" --batch 4,8 --gemv-max-batch 8
  bench "bf16 cublas at 4 and 8" --batch 4,8 --gemv-max-batch 2
  bench "bf16 reference path" --batch 1 --new-tokens 64 --reference
  bench "bf16 sampled top-p 0.9" --batch 1,64 --temperature 1 --top-p 0.9
  bench "bf16 sampled top-k 50" --batch 1,64 --temperature 1 --top-k 50
  bench "f32 with greedy check" --batch 1,16 --dtype f32 --check
  bench "bf16 with greedy check" --batch 1,16 --check
} > "$out/bench-decode.log" 2>&1

# "decode batch B: X new tokens/s (... S us per step); mode" of one bench section.
line() { awk -v sec="== $1:" -v b="decode batch $2:" 'index($0, "== ") == 1 { on = index($0, sec) == 1 } on && index($0, b) == 1' \
  "$out/bench-decode.log" | head -1; }
tok() { line "$1" "$2" | sed -E 's/.*: ([0-9]+) new tokens\/s.*/\1/'; }
us() { line "$1" "$2" | sed -E 's/.*, ([0-9.]+) us per step.*/\1/'; }
mode() { line "$1" "$2" | sed -E 's/.*step\); //'; }
check() { awk -v sec="== $1:" -v b="decode batch $2:" 'index($0, "== ") == 1 { on = index($0, sec) == 1 }
  on && index($0, b) == 1 { want = 1; next } want && /greedy check/ { sub(/^ +greedy check: /, ""); print; exit }' \
  "$out/bench-decode.log"; }

echo "== decode on ${gpu:-unknown GPU} (logs in $out)"
echo "decode tests: rc $tests_rc ($(grep -cE '^\[       OK \]' "$out/decode-tests.log") passed," \
  "$(grep -cE '^\[  FAILED  \]' "$out/decode-tests.log") failed lines, $(grep -cE '^\[  SKIPPED \]' "$out/decode-tests.log") skipped)"
echo "memcheck (kernel tests): rc $memcheck_rc"
printf '%-28s %-6s %12s %12s  %s\n' "bench decode (130m)" batch "tokens/s" "us/step" "path"
for spec in "bf16:1" "bf16:64" "bf16 1 empty kernel after each:1" "bf16 2 empty kernels after each:1" \
  "bf16 no pdl:1" "bf16 no pdl:64" "bf16 no graph:1" "bf16 no graph:64" \
  "bf16 gemv at 4 and 8:4" "bf16 gemv at 4 and 8:8" "bf16 cublas at 4 and 8:4" "bf16 cublas at 4 and 8:8" \
  "bf16 reference path:1" "bf16 sampled top-p 0.9:1" "bf16 sampled top-p 0.9:64" "bf16 sampled top-k 50:1" \
  "bf16 sampled top-k 50:64" "f32 with greedy check:1" "f32 with greedy check:16"; do
  label=${spec%:*}
  b=${spec##*:}
  printf '%-28s %-6s %12s %12s  %s\n' "$label" "$b" "$(tok "$label" "$b")" "$(us "$label" "$b")" "$(mode "$label" "$b")"
done
echo "targets (H100): batch 1 >= 5000 tokens/s; batch 64 >= 2 x the reference's, measured in the same call"
for spec in "f32 with greedy check:1" "f32 with greedy check:16" "bf16 with greedy check:1" "bf16 with greedy check:16"; do
  echo "greedy check ${spec%:*}, batch ${spec##*:}: $(check "${spec%:*}" "${spec##*:}")"
done
