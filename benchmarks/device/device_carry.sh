#!/usr/bin/env bash
# Builds what the device scripts need on a bare GPU machine (it has python3 3.12 with torch,
# numpy, pandas, matplotlib, nvidia-ml-py, and no internet; KINDS.md lists it):
#   .device/gpu/cifar10-jpeg.tar.gz   the JPEG mirror (the variants are made there, benchmarks/jpeg_variants.py)
#   .device/gpu/repo.bundle           the committed HEAD, its trees only: every run records the commit that produced it
#   .device/wheels/mlflow/            cp312 wheels of what it lacks for `mlflow server`: mlflow-skinny,
#                                     flask, flask-cors, sqlalchemy, alembic, and their requirements
#   .device/wheels/dvc/               dvc and the requirements the first set lacks
#
#   bash benchmarks/device/device_carry.sh      # from the repo root, on a machine with PyPI; commit first
#
# A device call carries at most 64 MiB, working tree included (the committed stores under results/
# make it about 35 MB). The script sums it up: carry [".device/gpu", ".device/wheels"] in one call
# where they fit, else three calls on the same warm machine: [".device/wheels/mlflow"], then
# [".device/wheels/dvc"], each with `bash benchmarks/device/device_install.sh` (installs what it finds into
# the machine's python3), then [".device/gpu"] with the script itself.
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
# two sets, so that each fits a call beside the working tree: what `mlflow server` needs, then DVC
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64)
$PY -m pip download -q -d $W/mlflow "${PLATFORM[@]}" mlflow-skinny==3.17.2 flask flask-cors sqlalchemy alembic
# antlr4-python3-runtime (hydra-core's, for dvc) is published as source only: build its pure wheel here
$PY -m pip wheel -q --no-deps -w $W/dvc antlr4-python3-runtime==4.9.3
$PY -m pip download -q -d $W/dvc --find-links $W/dvc "${PLATFORM[@]}" dvc==3.67.1
for f in $W/dvc/*.whl; do [ -e "$W/mlflow/$(basename "$f")" ] && rm "$f"; done  # installed with the first set
# the machine's image has these already (KINDS.md); left behind to stay under the limit. The
# others it has stay in: pip takes the installed ones where their versions fit
for name in networkx aiohttp pygments setuptools pyyaml; do find $W -iname "${name}-*.whl" -delete; done
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
size() { du -sb "$1" | cut -f1; }
limit=$((64 * 1024 * 1024))
echo "working tree $tree bytes; .device/gpu $(size $C), .device/wheels/mlflow $(size $W/mlflow)," \
  ".device/wheels/dvc $(size $W/dvc) (a call carries at most $limit with the tree)"
if [ $((tree + $(size $C) + $(size $W))) -le $limit ]; then echo "one call: carry .device/gpu and .device/wheels"
else
  echo "calls on one warm machine, each carrying one folder: .device/wheels/mlflow, then .device/wheels/dvc" \
    "(each with benchmarks/device/device_install.sh), then .device/gpu"
  for part in $C $W/mlflow $W/dvc; do
    [ $((tree + $(size $part))) -le $limit ] || echo "$part does not fit one call beside the working tree"
  done
fi
