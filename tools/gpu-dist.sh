#!/usr/bin/env bash
# Data parallelism on the GPU machine (after tools/gpu-check.sh built ./build): logs under $OUT (or ./gpu-logs).
#   bash tools/gpu-dist.sh
# One GPU: two ranks share it over the tcp backend (the trainer's multi-rank GPU path against one process), and NCCL
# on two ranks of one GPU (NCCL refuses that: the error must be clean). Two or more GPUs: NCCL runs of 1 and 2 ranks,
# losses compared and tokens/s of mamba-130m at L = 2048 (B = 8 per GPU), a killed rank and a frozen rank.
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
log="$out/dist.log"
: > "$log"
bin=./build/mamba-train
ngpu=$(nvidia-smi -L | wc -l)
tiny=(configs/selective_copying.yaml --set trainer.max_steps=50 --set trainer.eval_every=0 --set trainer.log_every=1
      --set logging.progress=false --set logging.plot=false --set checkpoint.resume=never
      --set trainer.micro_batch_size=16 --set trainer.global_batch_size=32 --set scheduler.warmup_steps=5)
summary=""
job() {  # label, then the command's arguments
  local label=$1; shift
  echo "== $label: $*" >> "$log"
  local t0=$(date +%s%N)
  "$@" >> "$log" 2>&1
  local rc=$?
  local t1=$(date +%s%N)
  summary+="$label: rc $rc, $(( (t1 - t0) / 1000000 )) ms"$'\n'
  return $rc
}
last_losses() { python3 -c "
import json,sys
L=[r for r in map(json.loads, open(sys.argv[1])) if 'loss' in r and r['loss'] is not None]
print(' '.join('%.6f'%r['loss'] for r in L[-3:]), '| tokens/s', ' '.join('%.0f'%r['tokens_per_s'] for r in L[-3:]))" "$1"; }
maxdiff() { python3 -c "
import json,sys
a=[r['loss'] for r in map(json.loads, open(sys.argv[1])) if r.get('loss') is not None]
b=[r['loss'] for r in map(json.loads, open(sys.argv[2])) if r.get('loss') is not None]
print('steps', len(a), len(b), 'max |loss difference|', max(abs(x-y) for x,y in zip(a,b)) if a and b else 'n/a')" "$1" "$2"; }

job "1 rank cuda" $bin train "${tiny[@]}" --set run.out_dir=/tmp/dp/one --set run.device=cuda
job "2 ranks share cuda:0 (tcp)" $bin train "${tiny[@]}" --set run.out_dir=/tmp/dp/tcp2 --set run.device=cuda:0 \
  --set distributed.backend=tcp --nproc 2
summary+="  1 rank:  $(last_losses /tmp/dp/one/metrics.jsonl)"$'\n'
summary+="  2 ranks: $(last_losses /tmp/dp/tcp2/metrics.jsonl)"$'\n'
summary+="  $(maxdiff /tmp/dp/one/metrics.jsonl /tmp/dp/tcp2/metrics.jsonl)"$'\n'
job "2 ranks share cuda:0 (nccl: expected to be refused)" $bin train "${tiny[@]}" --set run.out_dir=/tmp/dp/nccl1 \
  --set run.device=cuda:0 --set distributed.backend=nccl --set distributed.timeout_s=60 --nproc 2
summary+="  $(grep -m2 'mamba-train: error' "$log" | tail -1)"$'\n'

if [ "$ngpu" -ge 2 ]; then
  job "nccl 2 ranks" $bin train "${tiny[@]}" --set run.out_dir=/tmp/dp/nccl2 --nproc 2
  summary+="  $(maxdiff /tmp/dp/one/metrics.jsonl /tmp/dp/nccl2/metrics.jsonl)"$'\n'
  big=(configs/bench-130m.yaml --set trainer.max_steps=30 --set trainer.log_every=10 --set trainer.eval_every=0
       --set trainer.eval_batches=1 --set logging.progress=false --set checkpoint.resume=never --set logging.plot=false
       --set checkpoint.every=0 --set trainer.precision=bf16 --set scheduler.warmup_steps=5)
  job "130m bf16 1 GPU (B=8)" $bin train "${big[@]}" --set run.out_dir=/tmp/dp/b1 --set trainer.global_batch_size=8
  job "130m bf16 2 GPUs (B=8 each)" $bin train "${big[@]}" --set run.out_dir=/tmp/dp/b2 \
    --set trainer.global_batch_size=16 --nproc 2
  summary+="  1 GPU:  $(last_losses /tmp/dp/b1/metrics.jsonl)"$'\n'
  summary+="  2 GPUs: $(last_losses /tmp/dp/b2/metrics.jsonl)"$'\n'
  if [ -x ./build/tests/mamba-train-faults ]; then
    MT_FAULT='step_end=5@1:kill' job "nccl: rank 1 killed at step 5" ./build/tests/mamba-train-faults train "${tiny[@]}" \
      --set run.out_dir=/tmp/dp/kill --nproc 2 --set distributed.timeout_s=20
    MT_FAULT='step_end=5@1:stop' job "nccl: rank 1 frozen at step 5" ./build/tests/mamba-train-faults train "${tiny[@]}" \
      --set run.out_dir=/tmp/dp/freeze --nproc 2 --set distributed.timeout_s=10
    summary+="  $(grep 'mamba-train: error' "$log" | tail -3 | tr '\n' ' ')"$'\n'
  fi
fi
{ echo "==== data parallelism ($ngpu GPU(s)) ===="; printf '%s' "$summary"; } | tee "$out/dist-summary.txt"
