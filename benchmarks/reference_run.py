"""Keep a real study's `dvc repro` in its results store, where every clone of main has it: the
`params.yaml` it ran with, its `dvc.lock` and `metrics.json`, beside the store's MLflow runs.
Main keeps its own `params.yaml` (the official data) and no lock, so `dvc exp show` never prints
the reference run's accuracies beside parameters it did not run with; DVC reads the store's
files by path (`dvc metrics show metrics.json results/<store>/metrics.json`).

    python -m benchmarks.reference_run <folder with dvc.lock, metrics.json, params.yaml> \
        --commit <the commit that ran> --store results/h200-2026-11-27

Before it writes anything it checks that the files tell one story: every parameter and code
dependency `dvc.lock` records equals the run's `params.yaml` and the commit's files, and the
store's own `params.yaml` (what its report matches runs against) is the run's.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
from pathlib import Path

import yaml

from study.console import run_main
from study.errors import StageError
from study.files import atomic_path

RUN_FILES = ("params.yaml", "dvc.lock", "metrics.json")


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    if proc.returncode:
        raise StageError(f"git {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def _lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def disagreements(files: Path, commit: str, repo: Path) -> list[str]:
    """What the run's dvc.lock records that its params.yaml or the commit's files do not hold."""
    lock = yaml.safe_load((files / "dvc.lock").read_text())
    found = lock_disagreements(lock, yaml.safe_load((files / "params.yaml").read_text()))
    metrics_md5 = hashlib.md5((files / "metrics.json").read_bytes()).hexdigest()
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):  # the metrics file is the one the run wrote
            if out["path"] == "metrics.json" and out.get("md5") != metrics_md5:
                found.append("metrics.json is not the file dvc.lock recorded")
        for dep in stage.get("deps", []):
            path = dep["path"]
            if dep.get("md5", "").endswith(".dir") or not path.endswith(".py"):
                continue  # data and outputs: in DVC's cache, not in git
            blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True).stdout
            if hashlib.md5(blob).hexdigest() != dep["md5"]:
                found.append(f"{path} at {commit[:12]} is not the file dvc.lock recorded")
    return found


def lock_disagreements(lock: dict, params: dict) -> list[str]:
    """Each parameter ``dvc.lock`` records that ``params`` does not hold."""
    found = []
    for name, stage in lock["stages"].items():
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            try:
                held = _lookup(params, key)
            except (KeyError, TypeError):
                held = "absent"
            if held != value:
                found.append(f"{name}: {key} is {value!r} in dvc.lock, {held!r} in params.yaml")
    return found


def keep_reference(files: Path, commit: str, store: Path, repo: Path) -> list[Path]:
    """The run's dvc.lock and metrics.json (and params.yaml, where the store lacks one) written
    into ``store``, once they agree with ``commit``'s code and the store's params.yaml."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=repo)
    except StageError:
        raise StageError(f"no commit {commit!r} in {repo}; give the commit whose code ran (its records' "
                         "git_commit), fetched into this clone") from None
    if wrong := disagreements(files, commit, repo):
        raise StageError(f"{files} does not tell one story with {commit[:12]}: {'; '.join(wrong[:3])}"
                         + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    held = store / "params.yaml"
    if held.exists() and yaml.safe_load(held.read_text()) != yaml.safe_load((files / "params.yaml").read_text()):
        raise StageError(f"{held} is not the params.yaml the run ran with ({files / 'params.yaml'}); the store's "
                         "report would match its runs against other parameters")
    written = []
    for name in RUN_FILES:
        if name == "params.yaml" and held.exists():
            continue
        with atomic_path(store / name) as tmp:
            tmp.write_bytes((files / name).read_bytes())
        written.append(store / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description="Keep a real study's dvc.lock, metrics.json and params.yaml "
                                     "in its results store, checked against the commit that ran them.")
    parser.add_argument("files", type=Path, help="a folder holding the run's dvc.lock, metrics.json and "
                        "params.yaml (a device run's main.tar.gz unpacked)")
    parser.add_argument("--commit", required=True, help="the commit whose code ran (the records' git_commit)")
    parser.add_argument("--store", type=Path, required=True, help="the results store, e.g. results/h200-2026-11-27")
    args = parser.parse_args()
    missing = [name for name in RUN_FILES if not (args.files / name).is_file()]
    if missing:
        raise StageError(f"{args.files} lacks {', '.join(missing)}; unpack the device run's main.tar.gz there")
    if not args.store.is_dir():
        raise StageError(f"no results store {args.store}; give the folder that holds the run's mlflow.db")
    for path in keep_reference(args.files, args.commit, args.store, Path.cwd()):
        print(f"wrote {path}")
    print(f"`dvc metrics show metrics.json {args.store / 'metrics.json'}` sets a new run beside it")


if __name__ == "__main__":
    run_main(main)
