#!/usr/bin/env bash
# One device call for the compute floor (issue 13) and the cost of saving the training state
# (issue 8), most important first, each part under its own time limit so that whatever
# finished comes back:
#   1. profile of one step (VGG-16-BN, AlexNet): FLOPs, graph step time, eager kernels by kind
#   2. saving the resumable state after every epoch: share of an epoch (AlexNet, VGG-16-BN)
#   3. this loop vs the plain DataLoader loop (benchmarks/baseline.py), same call
#   4. `dvc repro` of the 40-epoch pipeline (prepare cached): wall vs pure training, by phase
#   5. torch.compile inside the captured step vs the graph step alone (s/epoch), then the
#      compiled graph step checked against eager (2 epochs, identical-ish losses)
#
#   bash benchmarks/device/gpu_floor.sh          # on the GPU machine, from the repo root
#   TINY=1 bash benchmarks/device/gpu_floor.sh   # CPU rehearsal: a subset, 2 epochs
#   PARTS="state study" bash benchmarks/device/gpu_floor.sh   # only these parts; `study` (not in the
#                                          # default) = bench.py study with torch.compile in the graph
#
# Needs .device/gpu/{cifar10-jpeg.tar.gz, repo.bundle} and .device/wheels (benchmarks/device/device_carry.sh); writes $OUT/floor.tar.gz and $OUT/log.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 GIT_AUTHOR_NAME=study GIT_AUTHOR_EMAIL=study@localhost \
  GIT_COMMITTER_NAME=study GIT_COMMITTER_EMAIL=study@localhost
OUT=${OUT:-/tmp/gpu-floor-out}
CARRY=.device/gpu
PY=${PY:-python3}
BUDGET=${BUDGET:-540}  # seconds for the whole script
mkdir -p "$OUT"
R=/tmp/floor; rm -rf $R; mkdir -p $R
. benchmarks/device/device_python.sh  # `python` = $PY for dvc.yaml's commands
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
limit() { local t=$(( $(left) - $1 )); [ $t -gt 15 ] && echo $t || echo 15; }  # seconds for a part, keeping $1
pack() { cp "$OUT/log.txt" $R/ 2>/dev/null; tar -czf "$OUT/floor.tar.gz" -C $R .; stamp "packed"; }
trap pack EXIT
want() { [[ " ${PARTS:-profile state compare pipeline calibrate check} " == *" $1 "* ]]; }

if [ "${TINY:-0}" = 1 ]; then
  DEV=cpu; EPOCHS=2; SUB="--subset 500"; BASE_SUB="--subset 500"; CHECK_SUB="--subset 200"; STUDY_EPOCHS="1 2"; PROF_MODELS="alexnet --steps 2 --timed 3"; CAL_MODELS="alexnet"
  STEPS="--warmup 2 --steps 3"
else
  DEV=cuda; EPOCHS=40; SUB="--subset 50000"; BASE_SUB="--subset 10000"; CHECK_SUB="--subset 10000"; STUDY_EPOCHS="5 40"; PROF_MODELS="vgg16_bn alexnet"; CAL_MODELS="vgg16_bn alexnet vgg8 vgg16"
  STEPS="--warmup 20 --steps 60"
fi
. benchmarks/device/device_setup.sh  # GPU and torch, wheels, the bundled commit
$PY benchmarks/set_params.py data.source="$CARRY/cifar10-jpeg.tar.gz" epochs=$EPOCHS
[ "$DEV" = cpu ] && $PY benchmarks/set_params.py data.train_subset=500 data.test_subset=200 runtime.device=cpu
P0=$(date +%s); $PY -m dvc repro prepare > $R/prepare.log 2>&1 || { tail -3 $R/prepare.log; exit 1; }
stamp "installed and prepared ($(( $(date +%s) - P0 )) s for prepare)"

# 1. the profile
want profile && timeout 120 $PY -m benchmarks.profile_step --data data/cifar10 --device $DEV --models $PROF_MODELS --out $R/profile \
  > $R/profile.log 2>&1; echo "profile exit $?"; grep -E "^## |profiled" $R/profile.log
stamp "profiled"
# 2. the state saved after every epoch
want state && timeout 90 $PY -m benchmarks.bench state-cost --data data/cifar10 --device $DEV --models alexnet vgg16_bn $SUB \
  --compare-epochs 2 --setting bf16+cl+graph --out $R/state > $R/state.log 2>&1; echo "state-cost exit $?"
grep -E "^\| " $R/state.log
stamp "state cost"
# 3. the plain DataLoader loop beside ours
want compare && timeout 100 $PY -m benchmarks.bench compare --data data/cifar10 --device $DEV --models alexnet vgg16_bn \
  $BASE_SUB --workers 8 --compare-epochs 2 --out $R/compare > $R/compare.log 2>&1; echo "compare exit $?"
grep -E "^\| " $R/compare.log
stamp "baseline"
# 4. the pipeline: dvc repro of everything after prepare
W0=$(date +%s)
want pipeline && timeout $(limit 150) $PY -m dvc repro > $R/repro.log 2>&1; echo "dvc repro exit $?"
echo "dvc repro wall $(( $(date +%s) - W0 )) s" | tee $R/repro_wall.txt
grep -E "stage [0-9.]+ s =|test accuracy|wrote reports" $R/repro.log
$PY - <<'EOF' > $R/pipeline_timings.json
import json, pathlib
print(json.dumps({p.parent.name: json.loads(p.read_text()).get("timings_s")
                  for p in sorted(pathlib.Path("outputs").glob("*/record.json"))}, indent=1))
EOF
cp -r reports $R/report 2>/dev/null
stamp "pipeline"
# 5. torch.compile inside the captured step, then its check against eager
want calibrate && timeout $(limit 70) $PY -m benchmarks.bench calibrate --data data/cifar10 --device $DEV --models $CAL_MODELS \
  --settings bf16+cl+graph bf16+cl+compile+graph $STEPS --out $R/calibrate > $R/calibrate.log 2>&1
echo "calibrate exit $?"; grep -E "ms/step" $R/calibrate.log
stamp "calibrated"
want check && [ "$(left)" -gt 45 ] && timeout $(( $(left) - 10 )) $PY -m benchmarks.bench check-graphs --data data/cifar10 \
  --device $DEV --check-with bf16+cl+compile+graph $CHECK_SUB --out $R/check > $R/check.log 2>&1
tail -2 $R/check.log 2>/dev/null
# 6. the whole study (4 models x 5 and 40 epochs) with torch.compile inside the captured step
if want study; then
  timeout $(limit 5) $PY -m benchmarks.bench study --data data/cifar10 --device $DEV --epochs $STUDY_EPOCHS \
    --setting bf16+cl+compile+graph --out $R/study > $R/study.log 2>&1
  echo "study exit $?"; grep -E "^\| |total" $R/study.log | tail -14
fi
stamp "done"
