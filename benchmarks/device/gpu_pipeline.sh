#!/usr/bin/env bash
# Issue 22's device work in one call (PARTS and STORE_IN split it in two where the device time allows):
# the study through the real pipeline (DVC stages; every run logged
# to an `mlflow server --serve-artifacts`, so its artifact URIs are mlflow-artifacts:/… and the
# store serves its files wherever it is copied), packed as a results store.
#   A. `dvc repro` of the recipe (40 epochs, seed 0) with the GPU to itself while its four
#      trainings run: they are Table 6's timing runs, its dvc.lock, metrics.json and params.yaml
#      become the store's reference run (python -m benchmarks.reference_run, docs/experiments.md),
#      and its evaluate stages log the models (mlflow.log_model), the queued runs do not.
#   B. from its first evaluate on, DVC's queue runs WORKERS experiments side by side on the one
#      GPU (5 under NVIDIA MPS where the machine has it, else 3), most needed first: seeds 1 and 2
#      at 40 epochs (one experiment per model), the plain VGG-16 ablation with torchvision's VGG init
#      (seeds as SEEDS), seeds 0-2 at 5 epochs, then the JPEG variants: AlexNet, VGG-16-BN, then
#      VGG-8, seeds 0 and 1, 40 epochs, on the
#      mirror re-encoded at quality 50 and 25 (benchmarks/jpeg_variants.py, made here while
#      prepare runs; the mirror itself is seeds 0 and 1 above).
#   Whatever has not finished BUDGET - PACK_S seconds in is stopped (a training cut mid-way ends its run KILLED) and
#   named in the log; what finished is packed.
#
#   bash benchmarks/device/gpu_pipeline.sh          # on the GPU machine, from the repo root
#   TINY=1 TINY_TRAIN=200 TINY_TEST=100 SEEDS="0 1" MODELS=vgg8 JPEG_MODELS=vgg8 JPEG_SEEDS=0 QUALITIES=25 \
#     BUDGET=2400 bash benchmarks/device/gpu_pipeline.sh   # CPU rehearsal (2 and 1 epochs) in a copy with its own git
#   PARTS="recipe long"                      # only these parts: recipe (A); long (seeds 1, 2 at 40 epochs),
#                                            # ablation, short (5 epochs), jpeg (B); SEEDS (LONG_SEEDS) narrow them
#   STORE_IN=.device/gpu/store PARTS=jpeg    # go on in the store an earlier call packed (its mlflow.db,
#                                            # mlartifacts/ and outputs/ unpacked there): a second call
#   DROP_RUNS="alexnet-e40-s0-jpeg_q25 ..."  # with STORE_IN: runs of that store to replace, deleted for good
#                                            # (mlflow gc, artifacts too) before the new ones are queued
#   PARTS=study WORKERS=8 QUEUE_TARGETS= QUEUE_LOG_MODEL=true   # issue 24: the whole study (seed 0, every
#                                            # model at 40 and 5 epochs, one experiment each) through the queue,
#                                            # every stage, side by side; its wall time from queue start to the end
#
# Needs .device/gpu and .device/wheels, or mlflow and dvc installed by benchmarks/device/device_install.sh in a call
# just before on the same warm machine (bash benchmarks/device/device_carry.sh says which), made after
# committing everything: queued
# experiments see only what git tracks. Writes under $OUT: log.txt; store.tar.gz
# (mlflow.db, params.yaml, report/, the seed-0 records and figures, logs/, model_sizes.txt);
# artifacts.tar.gz (mlartifacts/ without the logged models' weights); main.tar.gz (dvc.lock,
# metrics.json of part A); a tarball over 15 MB comes in parts (NAME.part-00, -01: cat them).
set -uo pipefail
export PYTHONUNBUFFERED=1 GIT_AUTHOR_NAME=study GIT_AUTHOR_EMAIL=study@localhost \
  GIT_COMMITTER_NAME=study GIT_COMMITTER_EMAIL=study@localhost MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
OUT=${OUT:-/tmp/gpu-pipeline-out}
CARRY=.device/gpu
PY=${PY:-python3}
BUDGET=${BUDGET:-570}  # seconds for the whole script, packing included (a call is at most 600)
PACK_S=${PACK_S:-60}   # kept for the final report and packing
PARTS=${PARTS:-recipe long ablation short jpeg}
PORT=${PORT:-5123}
SEEDS=${SEEDS:-0 1 2}
MODELS=${MODELS:-vgg16_bn vgg16 vgg8 alexnet}  # longest first
JPEG_MODELS=${JPEG_MODELS:-alexnet vgg16_bn vgg8}  # the quicker first: a cut call still has one slope
JPEG_SEEDS=${JPEG_SEEDS:-0 1}
QUALITIES=${QUALITIES:-50 25}
[ -f $CARRY/repo.bundle ] || { echo "no $CARRY/repo.bundle: run benchmarks/device/device_carry.sh, and this on the device"; exit 1; }
L=/tmp/pipeline-logs; S=/tmp/pipeline-store; rm -rf $L $S; mkdir -p "$OUT" $L $S
. benchmarks/device/device_python.sh  # `python` = $PY for dvc.yaml's commands
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
want() { [[ " $PARTS " == *" $1 "* ]]; }
if [ "${TINY:-0}" = 1 ]; then LONG=2; SHORT=1; else LONG=40; SHORT=5; fi

. benchmarks/device/device_setup.sh  # GPU and torch, wheels, the bundled commit
# a warm machine's last call: its runs, and DVC's run-cache, which would restore trainings instead of running them
for old in mlflow.db mlartifacts outputs .train_state .dvc/tmp/exps .dvc/cache; do
  [ -e $old ] && mv $old /tmp/$(basename $old).before-$T0
done
$PY -m dvc exp remove --all-commits > /dev/null 2>&1  # and its experiments, whose names would clash
if [ -n "${STORE_IN:-}" ]; then  # an earlier call's store: its runs stay, the new ones join them
  cp "$STORE_IN/mlflow.db" . && cp -r "$STORE_IN/mlartifacts" . || { echo "no store in $STORE_IN"; exit 1; }
  [ -d "$STORE_IN/outputs" ] && cp -r "$STORE_IN/outputs" $S/
fi
# the mirror at the path the dev VM uses, so that the reference tag's dvc.lock names the data as on the dev VM
SRC=../shared/data/cifar10-jpeg.tar.gz
[ -e $SRC ] || { mkdir -p ../shared/data && ln -s "$PWD/$CARRY/cifar10-jpeg.tar.gz" $SRC; }
if want jpeg; then
  VARIANTS=()
  for q in $QUALITIES; do
    $PY -m benchmarks.jpeg_variants $SRC --quality $q --out $CARRY > $L/jpeg-q$q.log 2>&1 & VARIANTS+=($!)
  done
fi
$PY benchmarks/set_params.py data.source=$SRC epochs=$LONG seed=0
[ "${TINY:-0}" = 1 ] && $PY benchmarks/set_params.py data.train_subset=${TINY_TRAIN:-500} \
  data.test_subset=${TINY_TEST:-200} runtime.device=cpu

MPS_ON=0  # kernels of the side-by-side trainings run at once instead of taking turns
if [ "${TINY:-0}" != 1 ] && [ "${MPS:-1}" = 1 ]; then
  if ! command -v nvidia-cuda-mps-control > /dev/null; then echo "MPS: not on this machine; the trainings take turns"
  elif nvidia-cuda-mps-control -d && timeout 60 $PY -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
    MPS_ON=1; echo "MPS: on (every CUDA process of this call, part A's too)"
  else echo quit | nvidia-cuda-mps-control; echo "MPS: failed its probe, off; the trainings take turns"; fi
fi
# Taking turns (no MPS), side by side gave about 1.1x a training's throughput: few workers, so that
# fewer half-done trainings are cut at the deadline; under MPS more of them pay.
if [ "${TINY:-0}" = 1 ]; then WORKERS=${WORKERS:-2}; elif [ $MPS_ON = 1 ]; then WORKERS=${WORKERS:-5}; else WORKERS=${WORKERS:-3}; fi

setsid $PY -m mlflow server --host 127.0.0.1 --port $PORT --backend-store-uri "sqlite:///$PWD/mlflow.db" \
  --serve-artifacts --artifacts-destination "$PWD/mlartifacts" --workers 1 > $L/server.log 2>&1 &
SERVER=$!
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
up() { $PY -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" $MLFLOW_TRACKING_URI/health \
  2> /dev/null; }  # no curl needed
for i in $(seq 90); do up && break; sleep 1; done
up || { tail -5 $L/server.log; echo "mlflow server did not start"; exit 1; }
if [ -n "${DROP_RUNS:-}" ]; then  # runs of the store this call replaces (by name): deleted, then gone for good
  ids=$($PY - $DROP_RUNS <<'EOF'
import sys
from mlflow import MlflowClient
client = MlflowClient()
for name in sys.argv[1:]:
    found = client.search_runs([e.experiment_id for e in client.search_experiments()], f"attributes.run_name = '{name}'")
    for run in found:
        client.delete_run(run.info.run_id)
        print(run.info.run_id)
    if not found:
        print(f"no run named {name} to drop", file=sys.stderr)
EOF
  )
  [ -n "$ids" ] && $PY -m mlflow gc --backend-store-uri "sqlite:///$PWD/mlflow.db" --run-ids "$(echo $ids | tr ' ' ,)" \
    > $L/drop_runs.log 2>&1 && stamp "dropped $(echo $ids | wc -w) runs: $DROP_RUNS ($ids)"
  for id in $ids; do rm -rf mlartifacts/*/$id; done  # gc cannot reach mlflow-artifacts:/ files without the server
fi
$PY -m dvc repro prepare > $L/prepare.log 2>&1 || { tail -3 $L/prepare.log; exit 1; }
stamp "mlflow server up, mirror prepared (the queued experiments restore it from the run-cache)"

# part B's experiments, queued before part A starts: queueing stashes the workspace, which dvc repro writes.
# DVC's queue keeps them in kombu's filesystem transport, which names each message after
# int(monotonic() * 1000) and reads the names in string order: messages queued across a change in
# that number's digit count (100 s, 1000 s, ... after boot) run newest first. Seen on a machine
# whose queueing crossed 100 s of uptime (results/h200-2026-11-27/README.md). So wait past a near one.
$PY - <<'EOF'
import time
now = time.monotonic()
for mark in (100, 1_000, 10_000, 100_000):
    if now < mark < now + 90:  # queueing takes well under 90 s
        print(f"waiting {mark - now + 1:.0f} s: queue messages must not straddle {mark} s of uptime (kombu's order)")
        time.sleep(mark - now + 1)
EOF
N=0
EXTRA=(); [ "${COMPILE:-0}" = 1 ] && EXTRA=(-S runtime.compile=true)  # COMPILE=1: part B compiled (runtime only)
# A queued experiment stops at its evaluations (QUEUE_TARGETS): the store's one report is built at the
# end from every run, so per-experiment analyses and reports would only spend the deadline.
q() { local name=$1; shift; $PY -m dvc exp run --queue -n "$name" "$@" -S mlflow.log_model=${QUEUE_LOG_MODEL:-false} "${EXTRA[@]}" \
  ${QUEUE_TARGETS-evaluate} > /dev/null 2>> $L/queue.err \
  && N=$((N + 1)) || echo "could not queue $name: $(grep ERROR $L/queue.err | tail -1)"; }
if want long; then  # seed 0 at 40 epochs is part A's
  for s in ${LONG_SEEDS:-$SEEDS}; do [ "$s" = 0 ] || for m in $MODELS; do q e$LONG-s$s-$m -S seed=$s -S "models=[$m]"; done; done
fi
if want study; then  # issue 24: the study as one seed's queue, the longest first
  for m in $MODELS; do q study-e$LONG-$m -S "models=[$m]"; done
  for m in $MODELS; do q study-e$SHORT-$m -S epochs=$SHORT -S "models=[$m]"; done
fi
if want ablation; then  # torchvision's VGG init (conv Kaiming fan-out, linear N(0, 0.01)): the report wants 3 seeds
  for s in $SEEDS; do q torchvision-vgg16-e$LONG-s$s -S train.init=torchvision -S seed=$s -S 'models=[vgg16]'; done
fi
if want short; then
  for s in $SEEDS; do q e$SHORT-s$s -S epochs=$SHORT -S seed=$s -S "models=[${MODELS// /,}]"; done
fi
if want jpeg; then
  wait "${VARIANTS[@]}"  # the variant tarballs
  for q in $QUALITIES; do tail -1 $L/jpeg-q$q.log; done
  for m in $JPEG_MODELS; do for q in $QUALITIES; do for s in $JPEG_SEEDS; do
    q jpeg-q$q-e$LONG-s$s-$m -S data.source=$CARRY/cifar10-jpeg-q$q.tar.gz -S seed=$s -S "models=[$m]"
  done; done; done
fi
stamp "queued $N experiments"

# A. the recipe, its trainings alone on the GPU
R0=$(date +%s); REPRO_RC=skipped; REPRO=
if want recipe; then
  REPRO_RC=; $PY -m dvc repro > $L/repro.log 2>&1 &
  REPRO=$!
  while kill -0 $REPRO 2> /dev/null && ! grep -q "Running stage 'evaluate@" $L/repro.log; do sleep 2; done
  stamp "part A's trainings done, alone on the GPU:"; grep "s/epoch" $L/repro.log
fi
# B. the queue beside part A's evaluations, report and the rest
Q0=$(date +%s)
[ $N -gt 0 ] && $PY -m dvc queue start -j $WORKERS > /dev/null && stamp "queue started: $WORKERS workers"
DEADLINE=$(( T0 + BUDGET - PACK_S ))
busy() { local status; status=$($PY -m dvc queue status 2>&1) || return 0; [[ "$status" =~ Running|Queued ]]; }
while [ $(date +%s) -lt $DEADLINE ]; do
  if [ -z "$REPRO_RC" ] && ! kill -0 $REPRO 2> /dev/null; then
    wait $REPRO; REPRO_RC=$?
    stamp "dvc repro exit $REPRO_RC after $(( $(date +%s) - R0 )) s wall"
    mkdir -p $S/main && cp dvc.lock metrics.json params.yaml $S/main/ 2> /dev/null  # before any later report
  fi
  [ -n "$REPRO_RC" ] && { [ $N = 0 ] || ! busy; } && break
  sleep 3
done
if [ -z "$REPRO_RC" ] || { [ $N -gt 0 ] && busy; }; then
  stamp "time is up: stopping what still runs (a training cut mid-way ends its MLflow run KILLED)"
  $PY -m dvc queue status 2>&1 | tee $L/queue_status_at_deadline.txt
  running=$(awk '$0 ~ /Running/ {print $2}' $L/queue_status_at_deadline.txt)
  $PY -m dvc queue remove --queued > /dev/null 2>&1
  [ -n "$running" ] && $PY -m dvc queue kill $running
  [ -z "$REPRO_RC" ] && kill -INT $REPRO 2> /dev/null
  for i in $(seq 20); do busy || break; sleep 1; done
fi
[ $N -gt 0 ] && stamp "queue done or stopped: $(( $(date +%s) - Q0 )) s after its start (polled every 3 s)"
$PY -m dvc queue status 2>&1 | tee $L/queue_status.txt
for task in $(awk '$0 ~ /Failed/ {print $2}' $L/queue_status.txt); do
  $PY -m dvc queue logs $task > $L/failed-$task.log 2>&1; echo "failed: $task, its log: logs/failed-$task.log"
done
$PY -m dvc queue stop > /dev/null 2>&1
[ -n "$REPRO" ] && grep -E "test accuracy|wrote reports" $L/repro.log

# the report of everything, then the store
$PY -m stages.report > $L/report.log 2>&1; tail -2 $L/report.log
$PY -m dvc exp show --no-pager --csv > $L/exp_show.csv 2> /dev/null
$PY -c "import sqlite3; sqlite3.connect('mlflow.db').backup(sqlite3.connect('$S/mlflow.db'))"  # a consistent copy
kill -KILL -- -$SERVER 2> /dev/null
[ $MPS_ON = 1 ] && echo quit | nvidia-cuda-mps-control
cp params.yaml $S/; cp -r reports $S/report; cp -r $L $S/logs
mkdir -p $S/mlartifacts && tar -C mlartifacts -c --exclude='./*/models' . | tar -C $S/mlartifacts -x
du -sb mlartifacts/*/models/* 2> /dev/null | sed "s|mlartifacts/||" > $S/model_sizes.txt
echo "models logged (not packed): $(wc -l < $S/model_sizes.txt), $(awk '{s += $1} END {printf "%.0f", s / 1e6}' $S/model_sizes.txt) MB"
for dir in outputs/*/; do
  m=$(basename "$dir"); [ -f "$dir/record.json" ] || continue
  mkdir -p $S/outputs/$m/eval && cp "$dir/record.json" $S/outputs/$m/
  cp -r "$dir/eval/figures" "$dir/eval/metrics.json" $S/outputs/$m/eval/ 2> /dev/null
done
$PY -m benchmarks.portable_store $S | head -3  # says "already portable", or fails naming what is not
# the runs the store came with are in git already: only the new ones' artifacts travel back
[ -n "${STORE_IN:-}" ] && for d in "$STORE_IN"/mlartifacts/*/*/; do d=${d%/}; rm -rf "$S/mlartifacts/${d#$STORE_IN/mlartifacts/}"; done
tar -czf "$OUT/artifacts.tar.gz" -C $S mlartifacts
[ -d $S/main ] && tar -czf "$OUT/main.tar.gz" -C $S/main . && rm -r $S/main
cp "$OUT/log.txt" $S/logs/
tar -czf "$OUT/store.tar.gz" -C $S --exclude=./mlartifacts .
for f in "$OUT"/*.tar.gz; do  # a file over 16 MB would not come back: cut it (cat the parts to join them)
  [ $(stat -c %s "$f") -gt 15000000 ] && split -b 15000000 -d "$f" "$f.part-" && rm "$f" && echo "split $(basename $f)"
done
stamp "packed: $(cd "$OUT" && du -h *.tar.gz | tr '\n' ' ')"
