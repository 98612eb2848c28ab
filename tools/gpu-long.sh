#!/usr/bin/env bash
# Long-sequence training on the GPU (issue: chunked training): mamba-130m dimensions (vocabulary 50280) at batch 1
# and L = 65,536, 262,144 and 1,048,576 tokens per sequence, trained on the E. coli genome as DNA tokens (the ids
# don't change the cost), with trainer.chunk_len and block checkpointing where the whole window does not fit; each
# row: tokens/s, step time, peak memory, and `mamba-train info`'s estimate. Needs ./build. Logs in $OUT/long.log.
#   bash tools/gpu-long.sh [steps]
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
steps=${1:-3}
log=$out/long.log
: > "$log"
row() {  # L, chunk_len, checkpointing
  local L=$1 chunk=$2 ck=$3
  local sets=(--set data.path=data/corpora/ecoli536/NC_008253.fna.gz --set tokenizer.kind=dna --set data.val_fraction=0.25
              --set data.seq_len="$L" --set trainer.micro_batch_size=1 --set trainer.global_batch_size=1
              --set trainer.chunk_len="$chunk" --set trainer.activation_checkpointing="$ck" --set scheduler.warmup_steps=1)
  echo "== L=$L chunk_len=$chunk checkpointing=$ck" >> "$log"
  ./build/mamba-train bench configs/bench-130m.yaml --steps "$steps" --warmup 1 "${sets[@]}" >> "$log" 2>&1
  local rc=$?
  local est
  est=$(./build/mamba-train info configs/bench-130m.yaml "${sets[@]}" 2>&1 | grep 'total:' | awk '{print $2" "$3}')
  printf '%-9s %-8s %-6s rc %-3s %s | %s | %s | estimate %s\n' "$L" "$chunk" "$ck" "$rc" \
    "$(grep 'step time' "$log" | tail -1 | sed 's/step time: //; s/ (min.*//')" \
    "$(grep 'throughput' "$log" | tail -1 | sed 's/throughput: //')" \
    "$(grep 'peak GPU memory' "$log" | tail -1 | sed 's/peak GPU memory (tensors): //; s/;.*//')" "$est"
}
{
  echo "L         chunk    ckpt   rc   step time | tokens/s | peak | estimate"
  row 65536 0 none
  row 65536 16384 none
  row 262144 65536 none
  row 1048576 65536 none
  row 1048576 131072 block
} | tee "$out/long-summary.txt"
