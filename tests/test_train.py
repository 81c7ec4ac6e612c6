import csv
import json
import subprocess
import sys

import mlflow
import pytest
import torch
import yaml
from conftest import TINY, project_params, project_settings, subprocess_env

from models.network import build_model
from stages.prepare import prepare
from stages.train import run_training
from study.metrics import EPOCH_METRICS
from study.training.device import precision_choice

SETTINGS = project_settings(**TINY)


@pytest.fixture()
def project(tmp_path, image_tree, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare(source=str(image_tree), out_dir=tmp_path / "data" / "cifar10")
    return tmp_path


def test_training_writes_outputs_and_one_mlflow_run(project):
    out = run_training(model="vgg8", settings=SETTINGS, progress=False)
    metrics = json.loads((project / "outputs/vgg8/metrics.json").read_text())
    record = json.loads((project / "outputs/vgg8/record.json").read_text())
    assert metrics["num_parameters"] == 13_119_050
    # the summary numbers, and the training they come from (study.outputs)
    assert {k for k, v in metrics.items() if not isinstance(v, (int, float))} == {"record_id", "record_sha256"}
    assert metrics["record_id"] == record["record_id"]
    assert record["recipe"]["epochs"] == 2 and record["summary"]["train_images"] == 30
    assert record["summary"]["test_images"] == 20
    with (project / "outputs/vgg8/history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [int(h["epoch"]) for h in history] == [1, 2]
    # the names of study.metrics, the one declaration: the engine's records, history.csv, metrics.json
    from study.metrics import HISTORY_COLUMNS, METRICS_JSON, SUMMARY_METRICS

    assert tuple(history[0]) == HISTORY_COLUMNS and set(record["history"][0]) == set(HISTORY_COLUMNS)
    assert set(SUMMARY_METRICS) <= set(record["summary"]) and set(METRICS_JSON) <= set(SUMMARY_METRICS)
    assert set(metrics) - {"record_id", "record_sha256"} == set(METRICS_JSON)
    assert float(history[-1]["test_acc"]) == pytest.approx(metrics["final_test_acc"])
    assert float(history[0]["lr"]) == pytest.approx(0.01) and float(history[1]["lr"]) == pytest.approx(0.005)
    # test accuracy on 20 images is a multiple of 5%
    assert metrics["final_test_acc"] % 5 == pytest.approx(0) and 0 <= metrics["final_test_acc"] <= 100
    prov = record["provenance"]
    assert record["recipe"]["seed"] == 0 and prov["device"] == "cpu" and prov["torch_version"] == torch.__version__
    assert len(prov["data_sha256"]) == 64 and record["recipe"]["data"]["source"].endswith("cifar")
    # what ran, not what was asked: params.yaml asks for bf16 and CUDA graphs; the CPU ran without graphs, and in
    # bf16 only where it has native bf16
    assert record["runtime"] == {"device": "cpu", "precision": precision_choice("cpu", "bf16")[0],
                                 "channels_last": True, "compile": False,
                                 "cuda_graphs": False, "deterministic": False}

    ckpt = torch.load(project / "outputs/vgg8/checkpoint.pt", weights_only=True)
    assert ckpt["model_name"] == "vgg8" and ckpt["record"] == record
    model = build_model("vgg8")
    model.load_state_dict(ckpt["state_dict"])

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["test-exp"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.mlflow.runName"] == "vgg8-e2-s0" and run["status"] == "FINISHED"
    assert run["run_id"] == record["mlflow_run_id"] == out["record"]["mlflow_run_id"]
    assert run["params.model"] == "vgg8" and run["params.epochs"] == "2" and run["params.seed"] == "0"
    assert run["params.train.batch_size"] == "16" and run["params.num_parameters"] == "13119050"
    assert run["params.runtime.precision"] == record["runtime"]["precision"]
    assert run["params.runtime.cuda_graphs"] == "False"
    assert run["params.data.sha256"] == prov["data_sha256"] and run["tags.record_id"] == record["record_id"]
    assert "vgg8" in run["tags.mlflow.note.content"] and "test accuracy" in run["tags.mlflow.note.content"]
    assert run["tags.data_sha256"] == prov["data_sha256"] and run["tags.torch_version"] == torch.__version__
    assert run["tags.dvc_stage"] == "train@vgg8"
    client = mlflow.MlflowClient()
    for name in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run["run_id"], name)]
        assert sorted(steps) == [1, 2], name
    test_acc = {m.step: m.value for m in client.get_metric_history(run["run_id"], "test_acc")}
    assert test_acc[2] == pytest.approx(metrics["final_test_acc"])
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert artifacts == {"metrics.json", "history.csv", "record.json", "environment.txt"}
    assert mlflow.get_experiment_by_name("test-exp").artifact_location == (project / "mlartifacts").as_uri()


# the stage as DVC runs it, with a note at exit of every MLflow, SQLAlchemy or Alembic module it had imported,
# and of torch's compiler (1.2-1.5 s of one core to import; a training that does not compile never needs it)
HEAVY = ("mlflow", "sqlalchemy", "alembic")
RECORD_IMPORTS = ("import atexit, json, runpy, sys; atexit.register(lambda: open('imported.json', 'w').write("
                  f"json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
                  "or m.startswith(('torch._dynamo', 'torch._inductor'))))))"
                  "; sys.argv = ['train', '--model', 'vgg8']; runpy.run_module('stages.train', run_name='__main__')")


def test_the_training_process_never_imports_mlflow_or_the_compiler_and_owns_its_run(project):
    """Its helper process does all of MLflow (study.tracking.process); the run it opens names the
    training's process as its owner, so a later start's sweep judges the right one."""
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(**TINY)))
    with subprocess.Popen([sys.executable, "-c", RECORD_IMPORTS], cwd=project, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=subprocess_env()) as proc:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads((project / "imported.json").read_text()) == []
    record = json.loads((project / "outputs/vgg8/record.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["pid"] == str(proc.pid)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [1, 2]
    assert run.data.metrics["final_test_acc"] == pytest.approx(record["summary"]["final_test_acc"])


def test_same_seed_same_numbers_in_two_processes_and_another_seed_differs(project):
    """Trainings of seed 0, each in a process of its own, agree bit for bit in every weight and every
    number of their history: two with `runtime.deterministic` on (what it promises: the same sha256
    of the weights), and one with it off, which on the CPU happens to agree too; seed 1 (trained
    here, in this process) differs in both."""
    import hashlib

    procs = {}
    for name, deterministic in (("a", False), ("b", True), ("c", True)):
        folder = project / name
        folder.mkdir()
        (folder / "data").symlink_to(project / "data")
        params = project_params(**{**TINY, "runtime": {**TINY.get("runtime", {}), "deterministic": deterministic}})
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        procs[name] = subprocess.Popen([sys.executable, "-m", "stages.train", "--model", "alexnet", "--no-mlflow"],
                                       cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=subprocess_env())
    other = run_training(model="alexnet", settings=project_settings(**{**TINY, "seed": 1}), track=False,
                         progress=False)
    trained = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        trained[name] = torch.load(project / name / "outputs/alexnet/checkpoint.pt", weights_only=True)
    assert [trained[n]["record"]["runtime"]["deterministic"] for n in "abc"] == [False, True, True]

    def weights_sha256(name):
        state = trained[name]["state_dict"]
        return hashlib.sha256(b"".join(state[k].cpu().numpy().tobytes() for k in sorted(state))).hexdigest()

    assert weights_sha256("b") == weights_sha256("c")  # deterministic: the promise
    assert weights_sha256("a") == weights_sha256("b")  # off, on this CPU: identical anyway
    (weights, again), other_weights = [trained[n]["state_dict"] for n in "ab"], torch.load(
        project / "outputs/alexnet/checkpoint.pt", weights_only=True)["state_dict"]
    history, history_again = ([{k: v for k, v in h.items() if k != "epoch_time_s"} for h in trained[n]["record"][
        "history"]] for n in "ab")
    assert len(history) == TINY["epochs"] and history == history_again
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    assert [h["train_loss"] for h in other["history"]] != [h["train_loss"] for h in history]
    assert not torch.equal(weights["features.0.weight"], other_weights["features.0.weight"])


def test_unreachable_tracking_server_fails_fast_before_any_output(project):
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(**TINY)))
    env = subprocess_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "stages.train", "--model", "vgg8"], cwd=project,
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow tracking store http://127.0.0.1:9 is unreachable")
    assert "MLFLOW_TRACKING_URI" in last and "Traceback" not in proc.stderr
    assert not (project / "outputs").exists()
