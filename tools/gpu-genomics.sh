#!/usr/bin/env bash
# Genomics jobs on the GPU (./build must exist): the E. coli DNA LM at 131,072 tokens per sequence
# (configs/dna-ecoli-pretrain-long.yaml) beside the 16,384-token run at the same width and token budget
# (500 x 131,072 = 1000 x 4 x 16,384 tokens) and the same held-out fraction; a masked-LM pretraining of the
# bidirectional (Caduceus) model; then the E. coli promoter classifier (d_model 256, 4 layers) from scratch and
# fine-tuned from each pretrained model, over seeds 1..3 of the model on one fixed split (data.split_seed 1).
# Full logs in $OUT/genomics.log; one line per job in $OUT/genomics-summary.txt, then MCC mean / sd per variant.
#   bash tools/gpu-genomics.sh
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
runs=${RUNS:-/tmp/gpu-genomics}
sum=$out/genomics-summary.txt
nvidia-smi --query-gpu=name --format=csv,noheader > "$sum"
job() {  # label, run directory name, then mamba-train arguments
  local label=$1 dir=$2; shift 2
  echo "== $label: mamba-train $*" >> "$out/genomics.log"
  local t0=$(date +%s)
  ./build/mamba-train "$@" --set logging.progress=false --set run.out_dir="$runs/$dir" >> "$out/genomics.log" 2>&1
  local rc=$? t1=$(date +%s)
  echo "$label: rc $rc, $((t1 - t0)) s; $(grep -E '^eval step' "$out/genomics.log" | tail -1)" | tee -a "$sum"
}
W=(--set model.d_model=256 --set model.n_layer=4)
job "DNA LM L=131072 (chunks of 32768)" long train configs/dna-ecoli-pretrain-long.yaml
job "DNA LM L=16384, same width, tokens and held-out fraction" short train configs/dna-ecoli-pretrain.yaml "${W[@]}" \
  --set data.val_fraction=0.15
job "DNA masked LM, bidirectional (Caduceus), L=16384" mlm train configs/dna-ecoli-pretrain.yaml "${W[@]}" \
  --set model.bidirectional=true --set trainer.objective=mlm --set data.val_fraction=0.15
for m in long short mlm; do
  ./build/mamba-train export "$runs/$m" --hf "$runs/$m-hf" >> "$out/genomics.log" 2>&1
  echo "export $m: rc $?" | tee -a "$sum"
done
for seed in 1 2 3; do
  S=(--set run.seed=$seed --set data.split_seed=1)
  job "promoters scratch seed $seed" p-scratch-$seed train configs/promoters-ecoli.yaml "${W[@]}" "${S[@]}"
  job "promoters rc_equivariant seed $seed" p-rc-$seed train configs/promoters-ecoli.yaml "${W[@]}" "${S[@]}" \
    --set model.rc_equivariant=true --set data.rc_augment=false
  for m in long short mlm; do
    job "promoters from $m seed $seed" p-$m-$seed train configs/promoters-ecoli.yaml --set model.init_from="$runs/$m-hf" \
      "${S[@]}"
  done
done
# MCC mean and sample standard deviation per variant (the final evaluation of each seed).
python3 - "$sum" <<'EOF' | tee -a "$sum"
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"promoters (.+) seed \d+: rc 0, .*?\bmcc[ =:]*([-0-9.]+)", line, re.I)
    if m:
        runs.setdefault(m.group(1), []).append(float(m.group(2)))
for k, v in runs.items():
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"MCC {k}: mean {statistics.mean(v):.3f} sd {sd:.3f} over {len(v)} seeds {v}")
EOF
