"""A team on three machines, simulated with real processes: a bare git repository as origin,
a folder as the DVC remote, one `mlflow server` on 127.0.0.1. A and B each train two models
and push their experiments; C trains nothing, pulls, and builds the full report."""

import json
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import ROOT, free_port, project_params, start_server, stop_server, subprocess_env

from stages.report import NAMES

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "models", "pyproject.toml", "reports/README.md"]


def sh(args, cwd, **env):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def dvc(*args, cwd, **env):
    return sh([sys.executable, "-m", "dvc", *args], cwd, **env)


@pytest.fixture()
def team(tmp_path, image_tarball):
    """origin (bare git), the DVC remote (a folder), the tracking server, and the project pushed to origin."""
    origin, remote, server_dir = tmp_path / "origin.git", tmp_path / "dvc-remote", tmp_path / "server"
    server_dir.mkdir()
    sh(["git", "init", "-q", "--bare", "-b", "main", origin], tmp_path)
    seed = tmp_path / "seed"
    for name in PROJECT_FILES:
        src, dst = ROOT / name, seed / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() \
            else shutil.copy(src, dst)
    params = project_params(epochs=2, data={"source": str(image_tarball), "train_subset": 30, "test_subset": 20},
                            train={"batch_size": 16}, runtime={"device": "cpu"}, mlflow={"log_model": False})
    (seed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q", "-b", "main"], seed)
    dvc("init", "-q", cwd=seed)
    dvc("config", "core.analytics", "false", cwd=seed)
    dvc("remote", "add", "-d", "storage", remote, cwd=seed)
    sh(["git", "add", "-A"], seed)
    sh(["git", "commit", "-qm", "the study"], seed)
    sh(["git", "remote", "add", "origin", origin], seed)
    sh(["git", "push", "-q", "origin", "main"], seed)
    port = free_port()
    server = start_server(server_dir, port)
    yield {"origin": origin, "uri": f"http://127.0.0.1:{port}", "root": tmp_path}
    stop_server(server)


def clone(team, name):
    path = team["root"] / name
    sh(["git", "clone", "-q", team["origin"], path], team["root"])
    return path


def server_runs(uri):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("alexnet-vgg-cifar10")
    return {r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])}


def test_three_machines_one_study(team):
    uri = {"MLFLOW_TRACKING_URI": team["uri"]}
    trained = {}
    for machine, models in (("a", ["alexnet", "vgg8"]), ("b", ["vgg16", "vgg16_bn"])):
        repo = clone(team, machine)
        dvc("exp", "run", "-n", f"team-{machine}", "-S", f"models=[{','.join(models)}]", cwd=repo, **uri)
        dvc("exp", "push", "origin", f"team-{machine}", cwd=repo)  # git refs, params, metrics, and the cache
        for model in models:
            trained[model] = json.loads((repo / "outputs" / model / "record.json").read_text())

    c = clone(team, "c")
    for machine in ("a", "b"):
        dvc("exp", "pull", "origin", f"team-{machine}", cwd=c)
    shown = dvc("exp", "show", "--csv", "--no-pager", cwd=c)
    assert "team-a" in shown and "team-b" in shown
    # C builds the whole report from the server, trained nothing, needs no path of A or B
    out = sh([sys.executable, "-m", "stages.report"], c, **uri)
    assert "Traceback" not in out
    table = pd.read_csv(c / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")["ours (2 ep)"]
    runs = server_runs(team["uri"])
    assert len(runs) == 4 and {r.info.status for r in runs.values()} == {"FINISHED"}
    for model, record in trained.items():
        run = runs[f"{model}-e2-s0"]
        assert run.info.run_id == record["mlflow_run_id"]
        assert table[NAMES[model]] == f"{record['summary']['final_test_acc']:.2f}"
    assert not (c / "outputs").exists(), "C trained nothing"
    report = (c / "reports/report.md").read_text()
    assert str(team["root"] / "a") not in report and str(team["root"] / "b") not in report

    assert not (c / "mlflow.db").exists(), "C's report came from the server alone: C has no local store"

    # a pulled checkpoint evaluates on C, with the data pulled too (prepare ran on A only)
    dvc("exp", "apply", "team-a", cwd=c)
    dvc("pull", cwd=c)
    out = sh([sys.executable, "-m", "stages.evaluate", "--model", "alexnet"], c, **uri)
    assert "test accuracy" in out and f"logged to MLflow run {trained['alexnet']['mlflow_run_id']}" in out
