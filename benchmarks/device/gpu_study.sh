#!/usr/bin/env bash
# Device run 2 of 2: check the CUDA-graph step against eager, calibrate, then the full
# study (4 models x 5 and 40 epochs) with the fastest setting. About 6-8 minutes on one
# H100. Needs .device/cifar10-jpeg.tar.gz (carried); writes under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
python3 -c "
from stages.prepare import prepare
m = prepare(source='.device/cifar10-jpeg.tar.gz', out_dir=__import__('pathlib').Path('/tmp/cifar10'))
print('prepared', m['counts'], m['sha256'][:12])"
settings="bf16+cl fp32+cl+graph bf16+graph bf16+cl+graph"
if ! timeout 90 python3 -m benchmarks.bench check-graphs --data /tmp/cifar10 --out "$OUT/check" 2>&1 | tail -3; then
  echo "graph check failed: calibrating eager settings only"; settings="fp32+cl bf16+cl"
fi
timeout 110 python3 -m benchmarks.bench calibrate --data /tmp/cifar10 --settings $settings --steps 100 \
  --out "$OUT/calibrate" 2>&1 | tail -12
pick="--fastest-from $OUT/calibrate/calibrate.json"; [ -f "$OUT/calibrate/calibrate.json" ] || pick="--setting bf16+cl"
timeout 370 python3 -m benchmarks.bench study --data /tmp/cifar10 $pick --epochs 5 40 --out "$OUT/study" \
  > "$OUT/study.log" 2>&1
tail -25 "$OUT/study.log"
echo "device script wall time: $(( $(date +%s) - T0 )) s"
