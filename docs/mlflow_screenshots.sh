#!/usr/bin/env bash
# The MLflow UI screenshots of README, made with headless Chromium from Debian's packages
# (`apt-get install chromium`) against a copy of a results store:
#   docs/figures/mlflow_runs_table.png        the experiment's runs table
#   docs/figures/mlflow_compare_h100_study.png the compare view of the four 40-epoch seed-0 runs
#   docs/figures/mlflow_run_page.png          one run's page, when a run id is given
#
#   bash docs/mlflow_screenshots.sh [results/h100-2026-11-27]
#   bash docs/mlflow_screenshots.sh <folder with mlflow.db and mlartifacts/> <run id>   # the run page only
set -euo pipefail
STORE=${1:-results/h100-2026-11-27}
RUN=${2:-}
PORT=${PORT:-5077}
TMP=$(mktemp -d)
cp "$STORE/mlflow.db" "$TMP/"  # a copy: the server must not change the store; it reads the files in place
if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; then
  echo "error: something already serves port $PORT; stop it or set PORT=<free port>"; exit 1
fi
# its own process group: `mlflow server` starts the web server as a child, which must go too
setsid mlflow server --backend-store-uri "sqlite:///$TMP/mlflow.db" --host 127.0.0.1 --port "$PORT" \
  --serve-artifacts --artifacts-destination "$(realpath "$STORE")/mlartifacts" \
  > "$TMP/server.log" 2>&1 &
SERVER=$!
trap 'kill -- -$SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
for i in $(seq 61); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  [ "$i" = 61 ] && { tail -5 "$TMP/server.log"; echo "error: mlflow server did not start in 60 s"; exit 1; }
  sleep 1
done
# the experiment's id and the four runs of the 40-epoch column, as URL-encoded JSON lists
read -r EXP RUNS < <(python - "$TMP/mlflow.db" <<'EOF'
import json, sys, urllib.parse
import mlflow
client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}")
exp = client.get_experiment_by_name("alexnet-vgg-cifar10")
runs = client.search_runs([exp.experiment_id], "params.epochs = '40' and params.seed = '0' and "
                          "params.`train.init` = 'default' and attributes.status = 'FINISHED'")
ids = [r.info.run_id for r in sorted(runs, key=lambda r: r.data.params["model"])]
print(exp.experiment_id, urllib.parse.quote(json.dumps(ids, separators=(",", ":"))) if len(ids) == 4 else "-")
EOF
)
URL="http://127.0.0.1:$PORT/#"
shot() {  # file, width, height, url
  timeout 120 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size="$2,$3" \
    --virtual-time-budget=25000 --screenshot="$1" "$4" > /dev/null 2>&1
}
if [ -n "$RUN" ]; then
  shot "$TMP/run.png" 1600 1600 "$URL/experiments/$EXP/runs/$RUN?workflowType=machine_learning"
  python -c "from PIL import Image; Image.open('$TMP/run.png').crop((0, 0, 1190, 1600)).save(
    'docs/figures/mlflow_run_page.png', optimize=True)"
  echo "wrote docs/figures/mlflow_run_page.png"
  exit 0
fi
[ "$RUNS" = - ] && { echo "error: $STORE lacks the four 40-epoch seed-0 runs of the study"; exit 1; }
# `workflowType=machine_learning`: MLflow 3.17's switch between its GenAI and Model training views
shot "$TMP/runs.png" 1600 1000 "$URL/experiments/$EXP/runs?workflowType=machine_learning"
shot "$TMP/compare.png" 1600 3200 \
  "$URL/compare-runs?runs=$RUNS&experiments=%5B%22$EXP%22%5D&workflowType=machine_learning"
python - "$TMP" <<'EOF'
import sys
from PIL import Image
tmp = sys.argv[1]
Image.open(f"{tmp}/runs.png").resize((1200, 750), Image.LANCZOS).save("docs/figures/mlflow_runs_table.png", optimize=True)
compare = Image.open(f"{tmp}/compare.png").crop((0, 0, 1600, 2660))  # down to the tags table
compare.resize((1200, 1995), Image.LANCZOS).save("docs/figures/mlflow_compare_h100_study.png", optimize=True)
EOF
echo "wrote docs/figures/mlflow_runs_table.png and docs/figures/mlflow_compare_h100_study.png"
