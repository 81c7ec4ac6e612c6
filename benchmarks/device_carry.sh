#!/usr/bin/env bash
# Builds .device/gpu, what the device scripts need on a bare GPU machine (it has python3 3.12
# with torch, numpy, pandas, matplotlib, nvidia-ml-py, and no internet; KINDS.md lists it):
#   cifar10-jpeg.tar.gz   the JPEG mirror (the variants are made there, benchmarks/jpeg_variants.py)
#   repo.bundle           the committed HEAD: every run records the commit that produced it
#   wheels/               cp312 wheels of what it lacks: mlflow-skinny, the server's flask and
#                         flask-cors, sqlalchemy, alembic, dvc, and their requirements
#
#   bash benchmarks/device_carry.sh      # from the repo root, on a machine with PyPI; commit first
#
# A device call carries at most 64 MiB (working tree included): the script says what it sums to.
set -euo pipefail
C=.device/gpu
PY=${PY:-python3}
MIRROR=${MIRROR:-../shared/data/cifar10-jpeg.tar.gz}
rm -rf $C && mkdir -p $C/wheels
cp "$MIRROR" $C/cifar10-jpeg.tar.gz
git bundle create $C/repo.bundle HEAD 2>/dev/null
echo "bundled $(git rev-parse --short HEAD); uncommitted files (they travel as they are): $(git status --porcelain | wc -l)"
# antlr4-python3-runtime (hydra-core's, for dvc) is published as source only: build its pure wheel here
$PY -m pip wheel -q --no-deps -w $C/wheels antlr4-python3-runtime==4.9.3
$PY -m pip download -q -d $C/wheels --find-links $C/wheels --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  mlflow-skinny==3.17.2 flask flask-cors sqlalchemy alembic dvc==3.67.1
# the machine has these already (KINDS.md); left behind to stay under the limit
for name in networkx aiohttp pygments setuptools pyyaml; do find $C/wheels -iname "${name}-*.whl" -delete; done
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "carry $(du -sb $C | cut -f1) bytes + working tree $tree bytes (limit $((64 * 1024 * 1024)))"
