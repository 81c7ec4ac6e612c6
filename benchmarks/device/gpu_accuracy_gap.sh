#!/usr/bin/env bash
# Device run 3: is the accuracy gap to the paper bf16, or seed noise? 40 epochs of
# VGG-16-BN and VGG-8 in fp32 (seed 0) and in bf16 with seed 1. About 4 minutes on an H100.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-benchmarks/results/gpu}
python3 -c "
from pathlib import Path; from stages.prepare import prepare
prepare(source='.device/cifar10-jpeg.tar.gz', out_dir=Path('/tmp/cifar10'))"
timeout 150 python3 -m benchmarks.bench study --data /tmp/cifar10 --setting fp32+cl+graph --epochs 40 \
  --models vgg16_bn vgg8 --out "$OUT/fp32-seed0" > "$OUT/fp32.log" 2>&1; tail -12 "$OUT/fp32-seed0/study.md"
timeout 110 python3 -m benchmarks.bench study --data /tmp/cifar10 --setting bf16+cl+graph --epochs 40 --seed 1 \
  --models vgg16_bn vgg8 --out "$OUT/bf16-seed1" > "$OUT/bf16.log" 2>&1; tail -12 "$OUT/bf16-seed1/study.md"
