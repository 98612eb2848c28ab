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
# PROTOCOL=holdout: one split (data.split_seed 1) with a test split held out (data.test_fraction, $TEST_FRACTION,
# default 0.2; validation $VAL_FRACTION, default 0.1); each job keeps its best checkpoint by validation MCC
# (checkpoint.monitor eval.mcc), variants are chosen by the mean of those, and the chosen one and the from-scratch
# baseline are scored once on the test split (`mamba-train evaluate RUN --best --split test`).
# VARIANTS="mlm-rc mlm-rc-drop" runs only the variants named (and scratch).
# SMOKE=1 shrinks every job (one layer of width 16, a few steps) to check the script itself on a CPU.
set -uo pipefail
out=${OUT:-gpu-logs}
logs=$out/promoters
mkdir -p "$logs"
runs=${RUNS:-/tmp/gpu-promoters}
sum=$out/promoters-summary.txt
nvidia-smi --query-gpu=name --format=csv,noheader > "$sum"
B=${MT_BIN:-./build/mamba-train}
protocol=${PROTOCOL:-two-splits}

job() {  # name, then mamba-train arguments; one line in the summary
  local name=$1; shift
  local t0=$(date +%s)
  $B "$@" --set logging.progress=false --set run.out_dir="$runs/$name" > "$logs/$name.log" 2>&1
  local rc=$? t1=$(date +%s)
  echo "$name: rc $rc, $((t1 - t0)) s; $(grep -E '^eval step' "$logs/$name.log" | tail -1)" >> "$sum"
}

W=(--set model.d_model=256 --set model.n_layer=4)
PRE=()   # pretraining only
TAIL=()  # after each variant's own settings
if [ "${SMOKE:-0}" = 1 ]; then
  W=(--set model.d_model=16 --set model.n_layer=1 --set trainer.max_steps=4 --set scheduler.warmup_steps=1
    --set trainer.eval_every=2)
  PRE=(--set data.seq_len=256 --set trainer.eval_batches=1)
  TAIL=(--set trainer.max_steps=4)
fi
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
# The same two fine-tunes with dropout in the blocks and on the classifier's input (the runs above memorise their
# training sets).
DROP="--set model.dropout=0.1 --set model.classifier_dropout=0.1"
V[mlm-rc-drop]="${V[mlm-rc]} $DROP"
V[mlm-rc-lr5e-4-1500-drop]="${V[mlm-rc-lr5e-4-1500]} $DROP"

# VARIANTS="a b ...": only these (and the from-scratch baseline, which the report needs).
if [ -n "${VARIANTS:-}" ]; then
  for v in $VARIANTS; do
    [ -n "${V[$v]+set}" ] || { echo "gpu-promoters: VARIANTS names '$v', which is not one of: ${!V[*]}" >&2; exit 2; }
  done
  for v in "${!V[@]}"; do
    [[ " $VARIANTS scratch " == *" $v "* ]] || unset "V[$v]"
  done
fi

# Pretraining (after the variants are checked, so a misspelt VARIANTS costs no GPU time).
MLM=(train configs/dna-ecoli-pretrain.yaml "${W[@]}" "${PRE[@]}" --set model.bidirectional=true
  --set trainer.objective=mlm --set data.val_fraction=0.15)
job mlm "${MLM[@]}" &
job mlm-rc "${MLM[@]}" --set model.rc_equivariant=true &
wait
for m in mlm mlm-rc; do
  $B export "$runs/$m" --hf "$runs/$m-hf" >> "$logs/export.log" 2>&1
  echo "export $m: rc $?" >> "$sum"
done

HOLD=(--set data.val_fraction="${VAL_FRACTION:-0.1}" --set data.test_fraction="${TEST_FRACTION:-0.2}"
  --set checkpoint.monitor=eval.mcc)
variant() {  # organism, variant, split seed: the three model seeds at once
  local org=$1 v=$2 split=$3 extra=()
  [ "$protocol" = holdout ] && extra=("${HOLD[@]}")
  for seed in 1 2 3; do
    # shellcheck disable=SC2086
    job "$org-$v-split$split-seed$seed" train "configs/promoters-$org.yaml" ${V[$v]} --set run.seed=$seed \
      --set data.split_seed=$split "${extra[@]}" "${TAIL[@]}" &
  done
  wait
}

# holdout: a job's summary line gets its best validation MCC (what selection reads), then the test split's scores.
best_line() {  # job name
  grep -E '^best eval.mcc: ' "$logs/$1.log" | tail -1 | sed -E 's/^best eval.mcc: ([-0-9.e]+).*/MCC \1  ROC AUC 0/'
}
test_scores() {  # job name: one summary line "NAME-test-seedK: rc R, MCC x  ROC AUC y"
  local name=$1 r
  r=$($B evaluate "$runs/$name" --best --split test 2>&1)
  echo "${name%-seed*}-test-seed${name##*-seed}: rc $?, $(echo "$r" | grep -E '^accuracy' |
    sed -E 's/.*mcc ([-0-9.]+)  roc_auc ([-0-9.]+).*/MCC \1  ROC AUC \2/')" >> "$sum"
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
# holdout: variants chosen on the best validation MCC of each job (data.split_seed 1), then scored on the test split.
organism_holdout() {
  local org=$1 tab=$out/promoters-$1.txt names=() v best seed
  for v in "${!V[@]}"; do
    variant "$org" "$v" 1
    for seed in 1 2 3; do echo "$org-$v-best-seed$seed: rc 0, $(best_line "$org-$v-split1-seed$seed")" >> "$sum"; done
    names+=("$org-$v-best")
  done
  echo "== $org, best validation MCC per job (data.split_seed 1, test split held out)" > "$tab"
  stats "${names[@]}" | sed -E 's/, ROC AUC [^o]*over/ over/' >> "$tab"
  best=$(stats best "${names[@]}")
  best=${best#"$org-"}
  best=${best%-best}
  echo "chosen for $org: $best" >> "$tab"
  for v in $(printf '%s\n' "$best" scratch | sort -u); do
    for seed in 1 2 3; do test_scores "$org-$v-split1-seed$seed"; done
  done
  echo "== $org, test split (scored once, the best checkpoint of each job)" >> "$tab"
  if [ "$best" = scratch ]; then stats "$org-scratch-split1-test"; else stats "$org-$best-split1-test" "$org-scratch-split1-test"; fi >> "$tab"
}
if [ "$protocol" = holdout ]; then
  organism_holdout ecoli &
  organism_holdout bsubtilis &
else
  organism ecoli &
  organism bsubtilis &
fi
wait
cat "$out/promoters-ecoli.txt" "$out/promoters-bsubtilis.txt" >> "$sum"
cat "$sum"
