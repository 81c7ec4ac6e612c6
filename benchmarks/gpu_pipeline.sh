#!/usr/bin/env bash
# The real study through the real pipeline (DVC stages, MLflow runs logged by the stages)
# on one GPU, packed as a results store: `dvc repro` (40 epochs, seed 0) in the workspace
# while DVC's queue runs the 5-epoch runs (seeds 0, 1), the 40-epoch seed 1 and the plain
# VGG-16 Kaiming ablation, two at a time, beside it on the same GPU.
#
#   bash benchmarks/gpu_pipeline.sh            # on the GPU machine, from the repo root
#   TINY=1 bash benchmarks/gpu_pipeline.sh     # CPU rehearsal: 1-2 epochs on a subset
#
# Needs .device/gpu/{cifar10-jpeg.tar.gz, repo.bundle, wheels/} (see benchmarks/README.md);
# writes $OUT/store.tar.gz (mlflow.db, artifacts without weights, records, eval figures,
# report, params.yaml) and $OUT/log.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 GIT_AUTHOR_NAME=study GIT_AUTHOR_EMAIL=study@localhost \
  GIT_COMMITTER_NAME=study GIT_COMMITTER_EMAIL=study@localhost
OUT=${OUT:-/tmp/gpu-pipeline-out}
CARRY=.device/gpu
LIMIT=${LIMIT:-450}          # seconds for all the training; whatever finished is packed
PY=${PY:-python3}
mkdir -p "$OUT"
. benchmarks/device_python.sh  # `python` = $PY for dvc.yaml's commands
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

if [ "${TINY:-0}" = 1 ]; then LONG=2; SHORT=1; else LONG=40; SHORT=5; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
$PY -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|mlflow|mlflow-skinny|dvc|pandas|numpy|sqlalchemy) '

# 1. what the machine lacks, from the carried wheels
if ! $PY -c 'import mlflow, dvc' 2>/dev/null; then
  $PY -m pip install -q --no-index --find-links "$CARRY/wheels" mlflow-skinny==3.17.2 sqlalchemy alembic \
    dvc==3.67.1 2>&1 | tail -3
fi
$PY -c 'import mlflow, dvc.version; print("mlflow", mlflow.__version__, "dvc", dvc.version.__version__)' || exit 1
stamp "installed"

# 2. the git history, so every run records the commit that produced it
command -v git >/dev/null || { echo "no git on this machine: DVC experiments need it"; exit 1; }
git init -q && git fetch -q "$CARRY/repo.bundle" HEAD && git reset -q FETCH_HEAD  # index to our commit
echo "git commit $(git rev-parse HEAD); changed files: $(git status --porcelain --untracked-files=no | wc -l)"
$PY -m dvc config core.analytics false

# 3. params.yaml gets the data source (relative to the repo root) and, for a rehearsal,
# a subset on the CPU; every queued experiment starts from it
$PY benchmarks/set_params.py data.source="$CARRY/cifar10-jpeg.tar.gz" epochs=$LONG
[ "${TINY:-0}" = 1 ] && $PY benchmarks/set_params.py data.train_subset=500 data.test_subset=200 runtime.device=cpu
$PY -m dvc repro prepare > "$OUT/prepare.log" 2>&1 || { tail -3 "$OUT/prepare.log"; exit 1; }
stamp "prepared (once: the queued experiments restore it from the run-cache)"
rm -rf .dvc/tmp/exps  # no tasks left over from an earlier call on a warm machine
q() { $PY -m dvc exp run --queue "$@" >/dev/null; }
q -n e${LONG}-s1 -S seed=1  # the longest first: two workers, one GPU, dvc repro beside them
q -n e${SHORT}-s0 -S epochs=$SHORT -S seed=0
q -n e${SHORT}-s1 -S epochs=$SHORT -S seed=1
q -n kaiming-vgg16-e${LONG}-s0 -S seed=0 -S train.init=kaiming -S 'models=[vgg16]'
$PY -m dvc queue start -j 2 >/dev/null
stamp "queue started (2 workers); dvc repro in the workspace beside it"
R0=$(date +%s)
timeout $LIMIT $PY -m dvc repro > "$OUT/repro.log" 2>&1; echo "dvc repro exit $?"
stamp "dvc repro ($LONG epochs, seed 0) took $(( $(date +%s) - R0 )) s wall"
grep -E "test accuracy|wrote reports" "$OUT/repro.log"
# busy unless the queue says it is idle: a status that fails (a stale task) is no proof of that
busy() { local status; status=$($PY -m dvc queue status 2>&1) || return 0; [[ "$status" =~ Running|Queued ]]; }
while [ $(( $(date +%s) - R0 )) -lt $LIMIT ] && busy; do sleep 5; done
$PY -m dvc queue status
$PY -m dvc queue stop --kill >/dev/null 2>&1
stamp "queue done"
$PY -m stages.report > "$OUT/report.log" 2>&1; tail -2 "$OUT/report.log"  # never retrains what timed out
$PY -m dvc exp show --no-pager --csv > "$OUT/exp_show.csv" 2>/dev/null

# 4. the store: everything but weights
S=/tmp/store; rm -rf $S; mkdir -p $S/outputs
cp mlflow.db params.yaml "$OUT/repro.log" "$OUT/exp_show.csv" $S/
cp -r reports $S/report
cp -r mlartifacts $S/  # each run's record, metrics and history; checkpoints are never logged
for dir in outputs/*/; do
  m=$(basename "$dir"); [ -f "$dir/record.json" ] || continue
  mkdir -p $S/outputs/$m/eval && cp "$dir/record.json" $S/outputs/$m/
  cp -r "$dir/eval/figures" $S/outputs/$m/eval/ 2>/dev/null
done
tar -czf "$OUT/store.tar.gz" -C $S .
stamp "packed $(du -h "$OUT/store.tar.gz" | cut -f1)"
