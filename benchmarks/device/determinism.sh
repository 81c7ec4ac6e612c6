#!/usr/bin/env bash
# runtime.deterministic on a GPU (docs/environment.md): one seed of VGG-16-BN trained twice with it
# on and twice off, each in a fresh process; whether each pair gives the same sha256 of the weights,
# and the seconds per epoch the deterministic kernels cost (benchmarks/determinism.py).
#
#   bash benchmarks/device/determinism.sh      # on the GPU machine, from the repo root (about 2 minutes)
#   DATA=../shared/data/cifar10-jpeg.tar.gz EPOCHS=1 SUBSET=500 MODEL=vgg8 OUT=/tmp/d \
#     bash benchmarks/device/determinism.sh    # CPU rehearsal
#
# Needs the mirror carried as .device/gpu/cifar10-jpeg.tar.gz (as gpu_pipeline.sh). Writes under
# $OUT: determinism/determinism.json (every run, the summary) and determinism.log.
set -euo pipefail
mkdir -p "$OUT"
python -m benchmarks.determinism --data "${DATA:-.device/gpu/cifar10-jpeg.tar.gz}" --model "${MODEL:-vgg16_bn}" \
  --epochs "${EPOCHS:-3}" --train-subset "${SUBSET:-0}" --out "$OUT/determinism" 2>&1 | tee "$OUT/determinism.log"
