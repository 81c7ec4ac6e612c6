"""The real tools end to end: `dvc repro`, `dvc exp run -S`, a queued experiment, all
in a temporary git repository on tiny data, all landing in one MLflow store."""

import json
import shutil
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import ROOT, subprocess_env

PROJECT_FILES = ["dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "data/.gitignore", "models", "stages"]
MODELS = ["alexnet", "vgg16", "vgg16_bn", "vgg8"]


def sh(args, cwd, timeout=600):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=subprocess_env(), timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def dvc(*args, cwd, timeout=600):
    return sh([sys.executable, "-m", "dvc", *args], cwd=cwd, timeout=timeout)


def runs_by_name(repo):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["alexnet-vgg-cifar10"], filter_string="attributes.status = 'FINISHED'")
    return runs.groupby("tags.mlflow.runName")["run_id"].apply(list).to_dict()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, image_tarball):
    repo = tmp_path_factory.mktemp("study")
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() \
            else shutil.copy(src, dst)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(epochs=1, models=MODELS)
    params["data"].update(source=str(image_tarball), train_subset=30, test_subset=20)
    params["train"].update(batch_size=16, device="cpu")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "study"], repo)
    return repo


def test_repro_then_exp_run_track_every_run(repo):
    dvc("repro", cwd=repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for model in MODELS:
        stage = lock["stages"][f"train@{model}"]
        assert stage["params"]["params.yaml"]["epochs"] == 1
        assert sorted(o["path"] for o in stage["outs"]) == [
            f"outputs/{model}/checkpoint.pt", f"outputs/{model}/history.csv", f"outputs/{model}/metrics.json"]
        assert (repo / f"outputs/{model}/metrics.json").exists()
    assert "prepare" in lock["stages"]
    assert "Data and pipelines are up to date" in dvc("status", cwd=repo)

    dvc("exp", "run", "-S", "epochs=2", cwd=repo)
    runs = runs_by_name(repo)
    client = mlflow.MlflowClient()
    for model in MODELS:
        assert len(runs[f"{model}-e1-s0"]) == 1 and len(runs[f"{model}-e2-s0"]) == 1
        history = client.get_metric_history(runs[f"{model}-e2-s0"][0], "test_acc")
        assert sorted(m.step for m in history) == [1, 2]
        run = client.get_run(runs[f"{model}-e2-s0"][0])
        assert run.data.tags["dvc_exp_name"]  # set by `dvc exp run`
    metrics = dvc("metrics", "show", "--json", cwd=repo)
    assert "final_test_acc" in metrics
    assert "epochs" in dvc("exp", "show", "--csv", cwd=repo)

    # the report: both epoch columns filled from MLflow, for all four models
    table5 = pd.read_csv(repo / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")
    assert list(table5.index) == ["AlexNet", "VGG-16", "VGG-16 with BN", "VGG-8"]
    for model, name in zip(MODELS, table5.index, strict=True):
        history = client.get_metric_history(runs[f"{model}-e1-s0"][0], "test_acc")
        assert table5.loc[name, "ours (1 ep)"] == f"{history[0].value:.2f}"
        assert float(table5.loc[name, "ours (2 ep)"]) >= 0
    report = (repo / "reports/report.md").read_text()
    for name in table5.index:
        assert f"| {name} |" in report
    for figure in ("learning_curves", "receptive_field_growth", "vgg8_filters", "alexnet_feature_maps",
                   "vgg16_bn_confusion"):
        assert (repo / f"reports/figures/{figure}.png").exists()
    evaluated = json.loads((repo / "outputs/vgg8/eval/metrics.json").read_text())
    trained = json.loads((repo / "outputs/vgg8/metrics.json").read_text())
    assert evaluated["test_acc"] == pytest.approx(trained["final_test_acc"])

    # deleting reports/ re-runs the report stage alone, from the cache and MLflow
    shutil.rmtree(repo / "reports")
    out = dvc("repro", cwd=repo)
    assert "Running stage 'report'" in out
    assert "Running stage 'train@" not in out and "Running stage 'evaluate@" not in out
    assert (repo / "reports/report.md").exists()


def test_queued_experiments_land_in_the_same_store(repo):
    dvc("exp", "run", "--queue", "-S", "seed=1", cwd=repo)
    dvc("exp", "run", "--queue", "-S", "seed=2", cwd=repo)
    dvc("queue", "start", "-j", "2", cwd=repo)
    wanted = {f"{m}-e2-s{s}" for m in MODELS for s in (1, 2)}
    deadline = time.time() + 480
    while time.time() < deadline:
        if wanted <= set(runs_by_name(repo)):
            break
        time.sleep(5)
    status = dvc("queue", "status", cwd=repo)
    dvc("queue", "stop", "--kill", cwd=repo)
    assert wanted <= set(runs_by_name(repo)), status
    assert not (repo / ".dvc" / "tmp" / "exps" / "mlflow.db").exists()
