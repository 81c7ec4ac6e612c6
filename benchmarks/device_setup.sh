# Sourced by the device scripts, with PY and CARRY set, from the repo root: says which GPU and
# torch the machine has, installs what it lacks from the carried wheels, and makes the checkout
# the bundled commit (every run records the commit that produced it).
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
$PY -c 'import torch; print("torch", torch.__version__)'
if ! $PY -c 'import mlflow, dvc, flask_cors' 2>/dev/null; then  # flask, flask-cors: for `mlflow server`
  [ -d .device/wheels ] || { echo "no mlflow and dvc here, and no .device/wheels: carry it, or run" \
    "benchmarks/device_install.sh in a call just before this one on the same warm machine"; exit 1; }
  . benchmarks/device_install.sh
fi
command -v git >/dev/null || { echo "no git on this machine"; exit 1; }
git init -q && git fetch -q "$CARRY/repo.bundle" HEAD && git reset -q FETCH_HEAD
echo "git commit $(git rev-parse HEAD); changed files: $(git status --porcelain --untracked-files=no | wc -l)"
$PY -m dvc config core.analytics false
