#!/usr/bin/env bash
# Where a training step's GPU time goes: Nsight Compute's per-kernel duration over one bench step of a config,
# summed by kernel name (the build in ./build must exist). Logs under $OUT (or ./gpu-logs).
#   bash tools/kernel-profile.sh [config] [--set ...]
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
cfg=${1:-configs/bench-130m.yaml}; shift || true
ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  ./build/mamba-train bench "$cfg" --steps 1 --warmup 1 "$@" > "$out/ncu.csv" 2> "$out/ncu.err"
python3 - "$out/ncu.csv" <<'PY' | tee "$out/kernel-summary.txt"
import csv, sys, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    name = r["Kernel Name"].split("(")[0][:90]
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "nsecond")
    v *= {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(unit, 1e-6)
    tot[name] += v; cnt[name] += 1
s = sum(tot.values())
print(f"total kernel time {s:.2f} ms over {sum(cnt.values())} launches (2 steps: warm-up + timed)")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:25]:
    print(f"{v:9.2f} ms {100*v/s:5.1f}% {cnt[k]:6d}x  {k}")
PY
