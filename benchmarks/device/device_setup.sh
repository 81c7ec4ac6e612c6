# Sourced by the device scripts, with PY and CARRY set, from the repo root: says which GPU and
# torch the machine has, installs what it lacks from the carried wheels, and makes the checkout
# the bundled commit (every run records the commit that produced it).
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
$PY -c 'import torch; print("torch", torch.__version__)'
if ! $PY -c 'import mlflow, dvc, flask_cors' 2>/dev/null; then  # flask, flask-cors: for `mlflow server`
  [ -d .device/wheels ] || { echo "no mlflow and dvc here, and no .device/wheels: carry it, or run" \
    "benchmarks/device/device_install.sh in a call just before this one on the same warm machine"; exit 1; }
  . benchmarks/device/device_install.sh
fi
command -v git >/dev/null || { echo "no git on this machine"; exit 1; }
# the bundle holds the commit and the trees of its history, not their files: fetched as a partial clone, then the
# working tree's files (the same commit's) written in as its blobs, so that the commit is whole
# (DVC's queue checks it out) and no promisor is left to ask for more; the blobs go in before the
# reset, which may read some of them (it asked the bundle for README.md's, which it lacks)
git init -q && { git remote remove bundle 2>/dev/null; true; } && git config core.repositoryformatversion 1 \
  && git remote add bundle "$CARRY/repo.bundle" && git config remote.bundle.promisor true \
  && git config extensions.partialClone bundle && git fetch -q --filter=blob:none bundle HEAD 2>/dev/null \
  && git ls-tree -r -z --name-only FETCH_HEAD | xargs -0 git hash-object -w -- > /dev/null \
  && git reset -q FETCH_HEAD \
  && git config --unset extensions.partialClone && git remote remove bundle \
  && git archive HEAD > /dev/null || { echo "could not make the bundled commit whole here"; exit 1; }
git rev-parse HEAD > .git/shallow  # its history has no files here: DVC's queue, copying the commit, stops at it
echo "git commit $(git rev-parse HEAD); changed files: $(git status --porcelain --untracked-files=no | wc -l)"
$PY -m dvc config core.analytics false
