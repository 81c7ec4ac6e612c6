#!/usr/bin/env bash
# The MLflow UI screenshots of docs/mlflow.md, from a copy of a results store, with headless
# Chromium from Debian's packages driven by playwright-core:
#   docs/figures/mlflow_runs_table.png        the runs table with the study's metric columns
#   docs/figures/mlflow_learning_curves.png   the chart view: test_acc and train_loss per epoch
#   docs/figures/mlflow_run_page.png          the page of the run RUN_NAME (default vgg16_bn-e40-s0)
#
#   apt-get install chromium && npm install --prefix .screenshots playwright-core   # once
#   bash docs/mlflow_screenshots.sh [results/h200-2026-11-27]
set -euo pipefail
STORE=${1:-results/h200-2026-11-27}
RUN_NAME=${RUN_NAME:-vgg16_bn-e40-s0}
PORT=${PORT:-5077}
[ -d .screenshots/node_modules/playwright-core ] || {
  echo "error: playwright-core is missing; run: npm install --prefix .screenshots playwright-core"; exit 1; }
TMP=$(mktemp -d)
cp "$STORE/mlflow.db" "$TMP/"  # a copy: the server must not change the store; it reads the files in place
if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; then
  echo "error: something already serves port $PORT; stop it or set PORT=<free port>"; exit 1
fi
# its own process group: `mlflow server` starts the web server as a child, which must go too
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid mlflow server --backend-store-uri "sqlite:///$TMP/mlflow.db" \
  --host 127.0.0.1 --port "$PORT" --serve-artifacts --artifacts-destination "$(realpath "$STORE")/mlartifacts" \
  > "$TMP/server.log" 2>&1 &
SERVER=$!
trap 'kill -- -$SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
for i in $(seq 61); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  [ "$i" = 61 ] && { tail -5 "$TMP/server.log"; echo "error: mlflow server did not start in 60 s"; exit 1; }
  sleep 1
done
read -r EXP RUN < <(python - "$TMP/mlflow.db" "$RUN_NAME" <<'PY'
import sys
import mlflow
client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}")
exp = client.get_experiment_by_name("alexnet-vgg-cifar10")
[run] = client.search_runs([exp.experiment_id], f"attributes.run_name = '{sys.argv[2]}'", max_results=1)
print(exp.experiment_id, run.info.run_id)
PY
)
node docs/mlflow_screenshots.mjs "http://127.0.0.1:$PORT" "$EXP" "$RUN" \
  docs/figures
git rm -q --cached --ignore-unmatch docs/figures/mlflow_compare_h100_study.png > /dev/null 2>&1 || true
echo "wrote docs/figures/mlflow_runs_table.png, mlflow_learning_curves.png and mlflow_run_page.png from $STORE"
