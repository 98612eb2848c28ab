#!/usr/bin/env bash
# Installs a build into a temporary prefix and uses it from another directory, as a user of the installed tool
# would: --version, info on a shipped HF config, a config that names shipped files (a few training steps), and the
# tokenizer benchmark's default files. Usage: bash tools/install-check.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
prefix=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$prefix" "$work"' EXIT
cmake --install "$build" --prefix "$prefix" > /dev/null
bin=$prefix/bin/mamba-train
cd "$work"
"$bin" --version
"$bin" info --hf configs/mamba-130m | grep -q '^parameters: 129,135,360$'
"$bin" train configs/tinyshakespeare.yaml --set trainer.max_steps=2 --set scheduler.warmup_steps=0 --set trainer.eval_every=0 \
  --set trainer.eval_batches=1 --set run.out_dir="$work/run" --set run.device=cpu --set logging.progress=false \
  > train.log
grep -q 'done: 2 steps' train.log
"$bin" bench tokenizer --repeats 1 > bench.log
echo "install-check: ok ($prefix/bin/mamba-train used from $work)"
