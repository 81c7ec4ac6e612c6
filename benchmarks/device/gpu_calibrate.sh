#!/usr/bin/env bash
# Device run 1 of 2 (calibration): one GPU, about 5 minutes. Needs the mirror tarball
# at .device/cifar10-jpeg.tar.gz (carried) and writes under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
# smoke: one epoch of the real train() path (evaluate included)
timeout 120 python3 -m benchmarks.bench study --data .device/cifar10-jpeg.tar.gz --models vgg8 --epochs 1 \
  --out "$OUT/smoke" 2>&1 | tail -4
timeout 420 python3 -m benchmarks.bench calibrate --data .device/cifar10-jpeg.tar.gz --out "$OUT/calibrate" 2>&1 \
  | tee "$OUT/calibrate.log"
