#!/usr/bin/env bash
# One call on the GPU machine: build, the `cuda` tests, the training benchmark and short GPU training runs.
# Full logs under $OUT (or ./gpu-logs): build.log, ctest-cuda.log, bench.log, train.log; the summary last.
#   bash tools/gpu-check.sh [bench steps]      SANITIZE=0 / BENCH=0 / TRAIN=0 / CTEST=0 skip memcheck / the benchmarks /
#                                              the runs / the cuda tests
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
steps=${1:-10}
t0=$(date +%s)
# The GPU machine has no network and no libutf8proc-dev: carry its .deb in .debs/ (apt-get download
# libutf8proc-dev there, on this side) and it is unpacked here and used for the build (static library).
extra=()
if ls .debs/libutf8proc-dev_*.deb > /dev/null 2>&1 && [ ! -e /usr/include/utf8proc.h ]; then
  mkdir -p /tmp/debs && dpkg -x .debs/libutf8proc-dev_*.deb /tmp/debs
  extra=(-DUTF8PROC_INCLUDE_DIR=/tmp/debs/usr/include -DUTF8PROC_LIBRARY=/tmp/debs/usr/lib/x86_64-linux-gnu/libutf8proc.a)
fi
{ cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${extra[@]}" && cmake --build build -j16; } \
  > "$out/build.log" 2>&1 || { tail -60 "$out/build.log"; exit 1; }
t1=$(date +%s)
if [ "${CTEST:-1}" = 1 ]; then
  ctest --test-dir build -L cuda -j4 --output-on-failure --timeout 120 > "$out/ctest-cuda.log" 2>&1
  cuda_rc=$?
else
  echo "skipped (CTEST=0)" > "$out/ctest-cuda.log"
  cuda_rc=skipped
fi
t2=$(date +%s)
if [ "${SANITIZE:-1}" = 1 ]; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 99 ./build/tests/mt_cuda_tests \
    --gtest_filter='CudaSelectiveScan.*:CudaCausalConv1d.*:OpTable/Cuda.MatchesCpu/selective_scan:OpTable/Cuda.MatchesCpu/causal_conv1d' > "$out/memcheck.log" 2>&1
  memcheck_rc=$?
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 99 ./build/tests/mt_cuda_tests \
    --gtest_filter='CudaLinearCrossEntropy.*:CudaAdamW.*:CudaEmbedding.*' > "$out/memcheck-xent-adamw.log" 2>&1
  memcheck2_rc=$?
else
  memcheck2_rc=skipped
  memcheck_rc=skipped
fi
t2b=$(date +%s)
[ "${BENCH:-1}" = 1 ] && {
./build/mamba-train bench kernels > "$out/bench.log" 2>&1
for prec in bf16 fp32; do
  echo "== bench configs/bench-130m.yaml precision $prec"
  bd=(); [ "$prec" = bf16 ] && bd=(--breakdown)
  ./build/mamba-train bench configs/bench-130m.yaml --steps "$steps" --warmup 3 --set trainer.precision=$prec "${bd[@]}"
  echo "rc $?"
done >> "$out/bench.log" 2>&1
{
  echo "== bench configs/bench-130m.yaml precision bf16 run.deterministic=true"
  ./build/mamba-train bench configs/bench-130m.yaml --steps "$steps" --warmup 3 --set run.deterministic=true
  echo "rc $?"
} >> "$out/bench.log" 2>&1
}
t3=$(date +%s)
summary=""
[ "${TRAIN:-1}" = 1 ] || summary+="training runs skipped (TRAIN=0)"$'\n'
run() {  # label, config, extra args
  local label=$1 cfg=$2; shift 2
  echo "== $label: $cfg $*" >> "$out/train.log"
  ./build/mamba-train train "$cfg" --set logging.progress=false "$@" >> "$out/train.log" 2>&1
  local rc=$?
  summary+="train $label: rc $rc; $(grep -E '^eval step' "$out/train.log" | tail -1)"$'\n'
}
[ "${TRAIN:-1}" = 1 ] && {
run "tinyshakespeare bf16 to 500" configs/tinyshakespeare.yaml --set run.out_dir=/tmp/runs/bf16 \
  --set trainer.precision=bf16 --stop-at-step 500
run "tinyshakespeare bf16 resumed" configs/tinyshakespeare.yaml --set run.out_dir=/tmp/runs/bf16 \
  --set trainer.precision=bf16
run "tinyshakespeare fp16" configs/tinyshakespeare.yaml --set run.out_dir=/tmp/runs/fp16 --set trainer.precision=fp16
run "tinyshakespeare fp32" configs/tinyshakespeare.yaml --set run.out_dir=/tmp/runs/fp32 --set trainer.precision=fp32
run "selective copying bf16" configs/selective_copying.yaml --set run.out_dir=/tmp/runs/copy --set trainer.precision=bf16
}
t4=$(date +%s)
{
  echo "==== summary ===="
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "build $((t1 - t0)) s; cuda tests $((t2 - t1)) s; bench $((t3 - t2)) s; training runs $((t4 - t3)) s"
  echo "cuda tests: rc $cuda_rc; $(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log")"
  grep -E '\(Failed\)|\(Timeout\)|Exception' "$out/ctest-cuda.log" | head -20
  echo "memcheck (scan + conv CUDA tests, $((t2b - t2)) s): rc $memcheck_rc; $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$out/memcheck.log" 2>/dev/null | tail -3 | tr '\n' ' ')"
  echo "memcheck (linear_cross_entropy + AdamW + embedding CUDA tests): rc $memcheck2_rc; $(grep -E 'ERROR SUMMARY' "$out/memcheck-xent-adamw.log" 2>/dev/null | tail -1)"
  grep -E '^device|copy of|^scan|^LM head' "$out/bench.log"
  grep -E '^== bench|step time|throughput|peak|error|^rc|^breakdown|^  ' "$out/bench.log"
  printf '%s' "$summary"
} | tee "$out/summary.txt"
