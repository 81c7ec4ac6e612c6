"""The study's reference run on a clone of main: its dvc.lock, metrics.json and params.yaml in its
results store, telling one story with the store's MLflow runs, shown by the commands the pages give."""

import json
import re
import shlex
import shutil
import sqlite3
import subprocess

from conftest import ROOT, subprocess_env

REFERENCE = ROOT / "results/h200-2026-11-27"


def test_the_reference_run_in_its_store_tells_the_story_of_its_mlflow_runs():
    """The store's dvc.lock ran with the store's params.yaml, and its metrics.json holds what the
    store's MLflow runs of that recipe (40 epochs, seed 0) hold: DVC and MLflow agree."""
    import yaml

    from benchmarks.reference_run import lock_disagreements

    params = yaml.safe_load((REFERENCE / "params.yaml").read_text())
    assert lock_disagreements(yaml.safe_load((REFERENCE / "dvc.lock").read_text()), params) == []
    metrics = json.loads((REFERENCE / "metrics.json").read_text())
    with sqlite3.connect(f"file:{REFERENCE / 'mlflow.db'}?mode=ro", uri=True) as db:
        logged = db.execute("SELECT r.name, m.key, m.value FROM runs r JOIN latest_metrics m ON r.run_uuid = "
                            "m.run_uuid WHERE r.status = 'FINISHED' AND m.key IN ('final_test_acc', "
                            "'mean_epoch_time_s')").fetchall()
    held = {(name, key): value for name, key, value in logged}
    assert sorted(metrics) == sorted(params["models"])
    for model, values in metrics.items():
        name = f"{model}-e{params['epochs']}-s{params['seed']}"
        assert values == {"acc": round(held[name, "final_test_acc"], 2),
                          "sec": round(held[name, "mean_epoch_time_s"], 3)}, model


def doc_commands(page, prefix):
    """The commands a page gives that start with ``prefix``, comments cut, as written."""
    lines = (ROOT / page).read_text().splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.startswith(prefix)]


def test_a_clone_of_main_shows_the_reference_run_and_sets_a_new_run_beside_it(tmp_path):
    """Only main travels: on a repository holding main's files and no tag, README's and
    docs/experiments.md's commands that name the reference print its four accuracies, and beside
    a new run's metrics.json, both."""
    clone = tmp_path / "clone"
    kept = ["dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore",
            *(f"results/{REFERENCE.name}/{name}" for name in ("params.yaml", "dvc.lock", "metrics.json"))]
    for name in kept:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, clone / name)
    env = subprocess_env()
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "main"]):
        subprocess.run(["git", *args], cwd=clone, check=True, env=env)
    assert not subprocess.run(["git", "tag"], cwd=clone, capture_output=True, text=True).stdout
    commands = doc_commands("README.md", "dvc metrics show") + doc_commands("docs/experiments.md", "$ dvc metrics show")
    assert len(commands) >= 2, commands
    (clone / "metrics.json").write_text('{"alexnet": {"acc": 12.34, "sec": 0.5}}')  # a new run's, as summary writes it
    for command in commands:
        proc = subprocess.run(shlex.split(command.removeprefix("$ ")), cwd=clone, capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0 and not proc.stderr.strip(), (command, proc.stderr)
        row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("results/"))
        assert row[1::2] == ["85.55", "10.0", "88.79", "84.83"], (command, proc.stdout)
        if " metrics.json " in f"{command} ":
            assert re.search(r"^metrics\.json +12\.34 ", proc.stdout, re.M), proc.stdout
