#!/usr/bin/env bash
# Promoter classifiers on the GPU (./build must exist), tuned on one split and reported on another:
#   1. pretraining: the bidirectional (Caduceus) masked DNA LM on the E. coli genome (d_model 256, 4 layers,
#      1000 x 4 x 16,384 bases), once plain and once reverse-complement equivariant, each exported;
#   2. selection: every variant below over model seeds 1..3 on the development split (data.split_seed 2), for each
#      organism; the variant with the best mean MCC is chosen there;
#   3. report: the chosen variant and the from-scratch baseline over seeds 1..3 on the test split (data.split_seed 1,
#      the split of the README's tables): MCC and ROC AUC, mean and sample standard deviation.
# The three seeds of a variant run at once on the one GPU (the models are small), and both organisms side by side.
# Full logs in $OUT/promoters/; one line per job and the tables in $OUT/promoters-summary.txt.
#   bash tools/gpu-promoters.sh
set -uo pipefail
out=${OUT:-gpu-logs}
logs=$out/promoters
mkdir -p "$logs"
runs=${RUNS:-/tmp/gpu-promoters}
sum=$out/promoters-summary.txt
nvidia-smi --query-gpu=name --format=csv,noheader > "$sum"
B=${MT_BIN:-./build/mamba-train}

job() {  # name, then mamba-train arguments; one line in the summary
  local name=$1; shift
  local t0=$(date +%s)
  $B "$@" --set logging.progress=false --set run.out_dir="$runs/$name" > "$logs/$name.log" 2>&1
  local rc=$? t1=$(date +%s)
  echo "$name: rc $rc, $((t1 - t0)) s; $(grep -E '^eval step' "$logs/$name.log" | tail -1)" >> "$sum"
}

W=(--set model.d_model=256 --set model.n_layer=4)
MLM=(train configs/dna-ecoli-pretrain.yaml "${W[@]}" --set model.bidirectional=true --set trainer.objective=mlm
  --set data.val_fraction=0.15)
job mlm "${MLM[@]}" &
job mlm-rc "${MLM[@]}" --set model.rc_equivariant=true &
wait
for m in mlm mlm-rc; do
  $B export "$runs/$m" --hf "$runs/$m-hf" >> "$logs/export.log" 2>&1
  echo "export $m: rc $?" >> "$sum"
done

# The variants: name, then the arguments after the organism's config.
declare -A V
V[scratch]="${W[*]}"
V[scratch-rc]="${W[*]} --set model.rc_equivariant=true --set data.rc_augment=false"
# The fine-tunes restate the pretrained model's dimensions: the promoter configs set smaller ones, and
# model.init_from refuses model keys that disagree with the source.
V[mlm]="${W[*]} --set model.init_from=$runs/mlm-hf"
V[mlm-lr5e-4]="${W[*]} --set model.init_from=$runs/mlm-hf --set optimizer.lr=0.0005"
V[mlm-rc]="${W[*]} --set model.init_from=$runs/mlm-rc-hf --set data.rc_augment=false"
V[mlm-rc-lr5e-4-1500]="${W[*]} --set model.init_from=$runs/mlm-rc-hf --set data.rc_augment=false
  --set optimizer.lr=0.0005 --set trainer.max_steps=1500"

variant() {  # organism, variant, split seed: the three model seeds at once
  local org=$1 v=$2 split=$3
  for seed in 1 2 3; do
    # shellcheck disable=SC2086
    job "$org-$v-split$split-seed$seed" train "configs/promoters-$org.yaml" ${V[$v]} --set run.seed=$seed \
      --set data.split_seed=$split &
  done
  wait
}

# Mean and sample sd of MCC and ROC AUC for the jobs whose names match a prefix; "best PREFIX..." picks by MCC.
stats() {
  python3 - "$sum" "$@" <<'EOF'
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
def rows(prefix):
    out = []
    for l in lines:
        m = re.match(re.escape(prefix) + r"-seed\d+: rc 0, .*?MCC ([-0-9.]+)\s+ROC AUC ([-0-9.]+)", l)
        if m: out.append((float(m.group(1)), float(m.group(2))))
    return out
def msd(v): return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
if sys.argv[2] == "best":
    best = max(sys.argv[3:], key=lambda p: statistics.mean([r[0] for r in rows(p)] or [-2]))
    print(best)
else:
    for p in sys.argv[2:]:
        r = rows(p)
        if not r: print(f"{p}: no finished seeds"); continue
        (m, s), (a, sa) = msd([x[0] for x in r]), msd([x[1] for x in r])
        print(f"{p}: MCC {m:.3f} +- {s:.3f}, ROC AUC {a:.3f} +- {sa:.3f} over {len(r)} seeds, MCC {[x[0] for x in r]}")
EOF
}

# Each organism's selection and report; the two organisms run side by side (their tables go to files of their own,
# appended to the summary in order at the end).
organism() {
  local org=$1 tab=$out/promoters-$1.txt names=() v best
  for v in "${!V[@]}"; do
    variant "$org" "$v" 2
    names+=("$org-$v-split2")
  done
  echo "== $org, development split (data.split_seed 2)" > "$tab"
  stats "${names[@]}" >> "$tab"
  best=$(stats best "${names[@]}")
  best=${best#"$org-"}
  best=${best%-split2}
  echo "chosen for $org: $best" >> "$tab"
  variant "$org" "$best" 1
  [ "$best" = scratch ] || variant "$org" scratch 1
  echo "== $org, test split (data.split_seed 1)" >> "$tab"
  if [ "$best" = scratch ]; then stats "$org-scratch-split1"; else stats "$org-$best-split1" "$org-scratch-split1"; fi >> "$tab"
}
organism ecoli &
organism bsubtilis &
wait
cat "$out/promoters-ecoli.txt" "$out/promoters-bsubtilis.txt" >> "$sum"
cat "$sum"
