"""Keep a real study's `dvc repro` as a tagged commit where DVC shows it whole: the code that
ran, the `params.yaml` it ran with, its `dvc.lock` and `metrics.json`. Main keeps its own
`params.yaml` (the official data) and no lock, so `dvc exp show` never prints the reference
run's accuracies beside parameters it did not run with; `dvc exp show --all-tags` and
`dvc metrics diff <tag>` find the run under its tag.

    python -m benchmarks.reference_tag <folder with dvc.lock, metrics.json, params.yaml> \
        --commit <the commit that ran> --tag h200-2026-11-27

Before it writes anything it checks that the three files tell one story: every parameter and
code dependency `dvc.lock` records equals the run's `params.yaml` and the commit's files. The
tag's commit has the code commit as parent; the current branch then merges it with `-s ours`
(its own files unchanged), so that every clone of the branch fetches the tag.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from study.console import run_main
from study.errors import StageError

RUN_FILES = ("params.yaml", "dvc.lock", "metrics.json")


def git(*args: str, cwd: Path, env: dict | None = None, data: bytes | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True,
                          env={**os.environ, **(env or {})})
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
    params = yaml.safe_load((files / "params.yaml").read_text())
    found = []
    for name, stage in lock["stages"].items():
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            try:
                held = _lookup(params, key)
            except (KeyError, TypeError):
                held = "absent"
            if held != value:
                found.append(f"{name}: {key} is {value!r} in dvc.lock, {held!r} in params.yaml")
        for dep in stage.get("deps", []):
            path = dep["path"]
            if dep.get("md5", "").endswith(".dir") or not path.endswith(".py"):
                continue  # data and outputs: in DVC's cache, not in git
            blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True).stdout
            if hashlib.md5(blob).hexdigest() != dep["md5"]:
                found.append(f"{name}: {path} at {commit[:12]} is not the file dvc.lock recorded")
    return found


def tag_reference(files: Path, commit: str, tag: str, repo: Path, merge: bool = True, date: str | None = None) -> str:
    """The tagged commit (commit + the run's three files, dated ``date``: when the run ended),
    merged into the current branch with ``-s ours``; its sha."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=repo)
    except StageError:
        raise StageError(f"no commit {commit!r} in {repo}; give the commit whose code ran (its records' "
                         "git_commit), fetched into this clone") from None
    if wrong := disagreements(files, commit, repo):
        raise StageError(f"{files} does not tell one story with {commit[:12]}: {'; '.join(wrong[:3])}"
                         + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", commit, cwd=repo, env=index)
        for name in RUN_FILES:
            blob = git("hash-object", "-w", "--stdin", cwd=repo, data=(files / name).read_bytes())
            git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", cwd=repo, env=index)
        tree = git("write-tree", cwd=repo, env=index)
    message = (f"The reference run {tag}: the code of {commit[:12]}, the params.yaml it ran with, its dvc.lock "
               "and metrics.json")
    dated = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {}  # `dvc exp show`'s Created
    reference = git("commit-tree", tree, "-p", commit, "-m", message, cwd=repo, env=dated)
    git("tag", "-a", tag, reference, "-m", message, cwd=repo, env=dated)
    if merge:
        git("merge", "-q", "-s", "ours", "--no-edit", "-m", f"Keep the reference run {tag} in main's history "
            "(its tag then comes with every clone); main's own files unchanged", tag, cwd=repo)
    return reference


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description="Tag a real study's dvc.lock, metrics.json and params.yaml "
                                     "on the commit that ran them, and merge the tag into the current branch.")
    parser.add_argument("files", type=Path, help="a folder holding the run's dvc.lock, metrics.json and "
                        "params.yaml (a device run's main.tar.gz unpacked)")
    parser.add_argument("--commit", required=True, help="the commit whose code ran (the records' git_commit)")
    parser.add_argument("--tag", required=True, help="the tag's name, e.g. h200-2026-11-27")
    parser.add_argument("--date", help="when the run ended (ISO 8601), shown as the tag's Created in `dvc exp "
                        "show`; default now")
    parser.add_argument("--no-merge", dest="merge", action="store_false",
                        help="only tag; do not merge the tag into the current branch")
    args = parser.parse_args()
    missing = [name for name in RUN_FILES if not (args.files / name).is_file()]
    if missing:
        raise StageError(f"{args.files} lacks {', '.join(missing)}; unpack the device run's main.tar.gz there")
    sha = tag_reference(args.files, args.commit, args.tag, Path.cwd(), args.merge, args.date)
    print(f"tagged {args.tag} ({sha[:12]}): `dvc exp show --all-tags` and `dvc metrics diff {args.tag}` show it")


if __name__ == "__main__":
    run_main(main)
