#!/usr/bin/env bash
# One device call for issue 9: what logging the model to MLflow costs on the GPU machine, and
# the pipeline's MLflow content produced there for real.
#   1. benchmarks/model_log_cost.py: seconds and MB of `log_model` per model (fresh process each)
#   2. `dvc repro` of the 5-epoch pipeline (four models, log_model on): every evaluate line
#   3. the evaluate stage of VGG-16-BN, wall time with `mlflow.log_model` off, then on
#   4. what the store holds: per run, the logged model, the figures, the inputs
#
#   bash benchmarks/device/gpu_model_log.sh          # on the GPU machine, from the repo root
#   TINY=1 bash benchmarks/device/gpu_model_log.sh   # CPU rehearsal: a subset, 1 epoch
#   COST_ONLY=1 bash benchmarks/device/gpu_model_log.sh   # part 1 only (COST_REPEATS=2 COST_TIMEOUT=100: shorter)
#
# Needs .device/gpu/{cifar10-jpeg.tar.gz, repo.bundle} and .device/wheels (benchmarks/device/device_carry.sh); writes $OUT/model_log.tar.gz and $OUT/log.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 GIT_AUTHOR_NAME=study GIT_AUTHOR_EMAIL=study@localhost \
  GIT_COMMITTER_NAME=study GIT_COMMITTER_EMAIL=study@localhost
OUT=${OUT:-/tmp/gpu-model-log-out}
CARRY=.device/gpu
PY=${PY:-python3}
mkdir -p "$OUT"
R=/tmp/model-log; rm -rf $R; mkdir -p $R
. benchmarks/device/device_python.sh  # `python` = $PY for dvc.yaml's commands
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { cp "$OUT/log.txt" $R/ 2>/dev/null; tar -czf "$OUT/model_log.tar.gz" -C $R .; stamp "packed"; }
trap pack EXIT
secs() { local s=$(date +%s%N); "$@" > $R/last.log 2>&1; local rc=$?; echo "$(( ($(date +%s%N) - s) / 1000000 )) ms, exit $rc"; }

. benchmarks/device/device_setup.sh  # GPU and torch, wheels, the bundled commit
if [ "${TINY:-0}" = 1 ]; then
  $PY benchmarks/set_params.py data.source="$CARRY/cifar10-jpeg.tar.gz" epochs=1 data.train_subset=500 \
    data.test_subset=200 runtime.device=cpu 'models=[alexnet,vgg8]'
  MODELS="alexnet vgg8"; EVAL_MODEL=vgg8; REPEATS=2
else
  $PY benchmarks/set_params.py data.source="$CARRY/cifar10-jpeg.tar.gz" epochs=5
  MODELS="alexnet vgg16 vgg16_bn vgg8"; EVAL_MODEL=vgg16_bn; REPEATS=3
fi
# 1. log_model alone, per model (no data needed); COST_ONLY=1 stops after it
timeout ${COST_TIMEOUT:-150} $PY -m benchmarks.model_log_cost --models $MODELS --repeats ${COST_REPEATS:-$REPEATS} \
  --out $R/cost > $R/cost.log 2>&1
echo "model_log_cost exit $?"; grep -E "^\| |first call" $R/cost.log
stamp "log_model measured"
[ "${COST_ONLY:-0}" = 1 ] && exit 0
P0=$(date +%s); $PY -m dvc repro prepare > $R/prepare.log 2>&1 || { tail -3 $R/prepare.log; exit 1; }
stamp "installed and prepared ($(( $(date +%s) - P0 )) s for prepare)"

# 2. the 5-epoch pipeline with the model logged
W0=$(date +%s)
timeout 240 $PY -m dvc repro > $R/repro.log 2>&1; echo "dvc repro exit $?, wall $(( $(date +%s) - W0 )) s"
grep -E "test accuracy|logged to MLflow|not logged|stage [0-9.]+ s =|wrote" $R/repro.log
stamp "pipeline"
# 3. the evaluate stage alone, without and with the model (the second logs a second model in its run)
$PY benchmarks/set_params.py mlflow.log_model=false
echo "evaluate $EVAL_MODEL, log_model off: $(secs timeout 120 $PY -m stages.evaluate --model $EVAL_MODEL)"; tail -1 $R/last.log
$PY benchmarks/set_params.py mlflow.log_model=true
echo "evaluate $EVAL_MODEL, log_model on:  $(secs timeout 120 $PY -m stages.evaluate --model $EVAL_MODEL)"; tail -1 $R/last.log
git checkout -q params.yaml
stamp "evaluate timed"
# 4. what the store holds
timeout 60 $PY - <<'EOF' | tee $R/store.txt
import mlflow
client = mlflow.MlflowClient("sqlite:///mlflow.db")
exp = client.get_experiment_by_name("alexnet-vgg-cifar10")
print("experiment tags:", {k: v[:40] for k, v in exp.tags.items()})
for run in client.search_runs([exp.experiment_id]):
    models = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    inputs = sorted(i.tags[0].value for i in run.inputs.dataset_inputs)
    print(run.info.run_name, run.info.status, f"eval/test_acc={run.data.metrics.get('eval/test_acc')}",
          f"models={len(models)}", f"figures={len(figures)}", f"inputs={inputs}",
          f"system_metrics={sum(k.startswith('system/') for k in run.data.metrics)}")
EOF
du -sh mlartifacts | tee -a $R/store.txt
stamp "done"
