#!/usr/bin/env bash
# Builds what the device scripts need on a bare GPU machine (it has python3 3.12 with torch,
# numpy, pandas, matplotlib, nvidia-ml-py, and no internet; KINDS.md lists it):
#   .device/gpu/cifar10-jpeg.tar.gz   the JPEG mirror (the variants are made there, benchmarks/jpeg_variants.py)
#   .device/gpu/repo.bundle           the committed HEAD, its trees only: every run records the commit that produced it
#   .device/wheels/                   cp312 wheels of what it lacks: mlflow-skinny, the server's flask
#                                     and flask-cors, sqlalchemy, alembic, dvc, and their requirements
#
#   bash benchmarks/device_carry.sh      # from the repo root, on a machine with PyPI; commit first
#
# A device call carries at most 64 MiB, working tree included (the committed stores under results/
# make it about 35 MB). The script sums both ways: carry [".device/gpu", ".device/wheels"] in one
# call where they fit, else two calls on the same warm machine: first [".device/wheels"] with
# `bash benchmarks/device_install.sh` (installs them into the machine's python3), then
# [".device/gpu"] with the script itself.
set -euo pipefail
C=.device/gpu
W=.device/wheels
PY=${PY:-python3}
MIRROR=${MIRROR:-../shared/data/cifar10-jpeg.tar.gz}
rm -rf $C $W && mkdir -p $C $W
cp "$MIRROR" $C/cifar10-jpeg.tar.gz
# the commit without its files (--filter=blob:none, kilobytes): the working tree travels anyway, and
# device_setup.sh writes its files back into the bundle's repository (the whole history would be tens of MB)
git bundle create $C/repo.bundle --filter=blob:none HEAD 2>/dev/null
echo "bundled $(git rev-parse --short HEAD); uncommitted files (they travel as they are): $(git status --porcelain | wc -l)"
# antlr4-python3-runtime (hydra-core's, for dvc) is published as source only: build its pure wheel here
$PY -m pip wheel -q --no-deps -w $W antlr4-python3-runtime==4.9.3
$PY -m pip download -q -d $W --find-links $W --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  mlflow-skinny==3.17.2 flask flask-cors sqlalchemy alembic dvc==3.67.1
# the machine's image has these already (KINDS.md); left behind to stay under the limit. The
# others it has stay in: pip takes the installed ones where their versions fit
for name in networkx aiohttp pygments setuptools pyyaml; do find $W -iname "${name}-*.whl" -delete; done
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
gpu=$(du -sb $C | cut -f1); wheels=$(du -sb $W | cut -f1); limit=$((64 * 1024 * 1024))
echo "working tree $tree bytes + .device/gpu $gpu + .device/wheels $wheels (a call's limit: $limit)"
if [ $((tree + gpu + wheels)) -le $limit ]; then echo "one call: carry .device/gpu and .device/wheels"
else echo "two calls on one warm machine: .device/wheels (benchmarks/device_install.sh), then .device/gpu"; fi
