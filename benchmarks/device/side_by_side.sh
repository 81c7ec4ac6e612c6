#!/usr/bin/env bash
# Issue 24: one VGG-16-BN training alone against four at once on one GPU, without and then under
# NVIDIA MPS (CUDA graphs, no compile, 50,000 random images, four epochs each). One JSON line per
# process: its epoch times. Results: benchmarks/results/h200-2026-11-27/side_by_side.jsonl.
#
#   bash benchmarks/device/side_by_side.sh > side_by_side.jsonl      # on the GPU machine, from the repo root
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
PY=${PY:-python3}
SCRIPT='
import json, sys, time, torch
from study.training.engine import Recipe, Trainer
t = Trainer("vgg16_bn", Recipe(epochs=4, device="cuda"))
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=g).cuda()
y = torch.randint(0, 10, (50000,), generator=g).cuda()
times = []
for _ in range(4):
    t0 = time.perf_counter(); t.train_one_epoch(x, y); times.append(time.perf_counter() - t0)
print(json.dumps({"label": sys.argv[1], "epoch_s": [round(v, 3) for v in times]}))
'
run() { for i in $(seq "$2"); do $PY -c "$SCRIPT" "$1-$2" & done; wait; }
run nomps 1; run nomps 4
if nvidia-cuda-mps-control -d; then run mps 1; run mps 4; echo quit | nvidia-cuda-mps-control; fi
