"""What a user finds in MLflow after train and evaluate, through the real stages, in the local
store and on a real `mlflow server` (SQLite backend, artifacts served by the server): the
evaluation, the figures, the model (loaded back and predicting), the dataset, the description."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, free_port, project_params, start_server, stop_server, subprocess_env

from models.network import build_model
from stages.prepare import prepare
from study.data import CLASSES, load_prepared
from study.training.batches import Normalizer


def run_stage(project, *args, **env):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=project, capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("store", ["local", "server"])
def test_a_run_holds_its_evaluation_model_dataset_and_description(tmp_path, image_tree, store):
    project = tmp_path / "project"
    prepare(source=str(image_tree), out_dir=project / "data" / "cifar10")
    # at full size (the tiny data's 40 and 20 images): what the registry's reference needs
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(**{**TINY, "data": {
        **TINY["data"], "train_subset": 0, "test_subset": 0}})))
    env, server = {}, None
    if store == "server":
        port = free_port()
        (tmp_path / "server").mkdir()
        server = start_server(tmp_path / "server", port)
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    uri = env.get("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    try:
        scratch = tmp_path / "tmp"  # the stages' temporary files: none may outlive them
        scratch.mkdir()
        run_stage(project, "stages.train", "--model", "alexnet", TMPDIR=str(scratch), **env)
        out = run_stage(project, "stages.evaluate", "--model", "alexnet", TMPDIR=str(scratch), **env)
        assert "evaluation and model logged to MLflow run" in out.stdout
        # the stage's own breakdown, the model log's wait in it
        assert re.search(r"^alexnet: stage [\d.]+ s = start-up [\d.]+, imports, evaluation and figures [\d.]+, "
                         r"waiting for MLflow [\d.]+$", out.stdout, re.MULTILINE), out.stdout
        # (torch's Inductor cache, torchinductor_<user>, is reused across processes by design)
        left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
        assert not left, f"left in the temporary folder: {left}"
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("test-exp")
        assert "with the study's recipe (its section 5.1)" in experiment.tags["mlflow.note.content"]
        [run] = client.search_runs([experiment.experiment_id])
        run_id, metrics, tags = run.info.run_id, run.data.metrics, run.data.tags
        assert run.info.status == "FINISHED"
        record = torch.load(project / "outputs/alexnet/checkpoint.pt", weights_only=True)["record"]
        # the evaluation: its metrics beside the training's, per class too
        assert metrics["eval/test_acc"] == pytest.approx(metrics["test_acc"])
        assert {f"test_acc_class/{c}" for c in CLASSES} <= set(metrics)
        assert "eval/params_per_accuracy_point" in metrics
        # how far the first layer moved from this seed's initial filters: 2 tiny epochs leave it where it was
        evaluation = json.loads((project / "outputs/alexnet/eval/metrics.json").read_text())
        assert 0.99 < evaluation["first_layer_init_corr"] <= 1.0
        assert metrics["eval/first_layer_init_corr"] == pytest.approx(evaluation["first_layer_init_corr"])
        assert 0.0 <= metrics["eval/feature_maps_clipped"] <= 1.0
        figures = {a.path for a in client.list_artifacts(run_id, "figures")}
        assert figures == {f"figures/{n}.png" for n in ("confusion", "filters", "feature_maps", "learning_curve")}
        # the dataset, with the data's digest, as training and as evaluation input
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "evaluation"}
        # each split by the digest of its own arrays and its profile (before: both the whole data's digest, no profile)
        splits = record["provenance"]["data_splits"]
        assert inputs["training"].digest == splits["train"]["sha256"][:32] != inputs["evaluation"].digest
        assert inputs["evaluation"].digest == splits["test"]["sha256"][:32]
        assert json.loads(inputs["training"].profile) == {"images": 40, "shape": [32, 32, 3],
                                                          "per_class": {c: 4 for c in CLASSES}}
        assert json.loads(inputs["evaluation"].profile)["per_class"] == {c: 2 for c in CLASSES}
        # named by source and split; the source outside the project given by its name (no machine's path), a schema
        assert inputs["training"].name == f"{image_tree.name}-train"
        assert inputs["evaluation"].name == f"{image_tree.name}-test"
        assert record["recipe"]["data"]["source"].startswith("/")
        assert json.loads(inputs["training"].source) == {"uri": image_tree.name}
        assert json.loads(inputs["training"].schema)["mlflow_colspec"][0]["tensor-spec"] == {
            "dtype": "uint8", "shape": [-1, 32, 32, 3]}
        assert "dvc_exp_name" not in tags and "DVC experiment" not in tags["mlflow.note.content"]  # not in one
        # description and source
        assert "**alexnet**, 2 epochs, seed 0" in tags["mlflow.note.content"] and "test accuracy" in tags[
            "mlflow.note.content"]
        assert tags["mlflow.source.name"] == project.resolve().name  # the repository by name, no machine path
        # the environment it ran in: tags, environment.txt, and record.json's copy, one digest of the package set
        ran_in = record["provenance"]["environment"]
        assert tags["env.torch"] == torch.__version__ == ran_in["torch"] and tags["env.mlflow"] == mlflow.__version__
        assert tags["env.packages_sha256"] == ran_in["packages_sha256"] and len(ran_in["packages_sha256"]) == 64
        assert tags["env.lock"] == ran_in["lock"]
        assert {"env.cuda", "env.cudnn", "env.gpu_driver", "env.dvc", "env.numpy"} <= set(tags)
        text = client.download_artifacts(run_id, "environment.txt", str(scratch))
        listed = Path(text).read_text()
        assert f"packages_sha256: {ran_in['packages_sha256']}" in listed
        assert f"torch=={torch.__version__.split('+')[0]}" in listed
        # the model: loaded back through pyfunc, it predicts what the checkpoint predicts
        arrays, _ = load_prepared(project / "data" / "cifar10")
        images = np.ascontiguousarray(arrays["test_images"][:8].transpose(0, 3, 1, 2))  # uint8 NCHW
        mlflow.set_tracking_uri(uri)
        net = build_model("alexnet")
        net.load_state_dict(torch.load(project / "outputs/alexnet/checkpoint.pt", weights_only=True)["state_dict"])
        with torch.inference_mode():  # the logits through the training's own input path, not the served wrapper
            expected = net.eval()(Normalizer("cpu", channels_last=False)(torch.from_numpy(images))).numpy()
        if store == "server":  # by its run and name (the local store loads it through the registry, below)
            served = mlflow.pyfunc.load_model(f"runs:/{run_id}/alexnet-e2", dst_path=str(scratch))
            assert served.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
            np.testing.assert_allclose(np.asarray(served.predict(images)), expected, rtol=1e-4, atol=1e-5)
        # evaluated again (a changed evaluate setting, `dvc repro -f`): the run keeps one model
        [model] = client.search_logged_models([experiment.experiment_id])
        assert model.source_run_id == run_id and model.name == "alexnet-e2"
        # its page's "Datasets used": the test set its accuracy was measured on
        linked = {(m.key, m.dataset_name, m.dataset_digest) for m in model.metrics if m.dataset_name}
        assert linked == {("eval/test_acc", inputs["evaluation"].name, inputs["evaluation"].digest)}
        ours = {key for key in model.tags if not key.startswith("mlflow.")}
        assert ours == {"checkpoint_sha256"}  # checked: one tag per state, the unchecked one gone
        out = run_stage(project, "stages.evaluate", "--model", "alexnet", TMPDIR=str(scratch), **env)
        assert f"its model was there already, from this checkpoint (model {model.model_id})" in out.stdout
        assert [m.model_id for m in client.search_logged_models([experiment.experiment_id])] == [model.model_id]
        if store == "local":  # the report never writes the registry; `stages.register` aliases the reference
            run_stage(project, "stages.report", **env)
            assert client.search_registered_models() == []
            # the report's provenance names the environment the training ran in
            import pandas as pd

            provenance = pd.read_csv(project / "reports/tables/provenance_runs.csv", dtype=str)
            lock = "the lock" if ran_in["lock"].startswith("matches") else ran_in["lock"].split(":")[0]
            assert list(provenance["environment"]) == [f"{ran_in['packages_sha256'][:12]} ({lock})"]
            out = run_stage(project, "stages.register", **env)
            assert out.stdout.splitlines() == [
                f"test-exp-alexnet@reference: version 1 added, run {run_id}",
                "warning: no finished run of the recipe (2 epochs, seed 0, full size) with a checked model for vgg16, "
                "vgg16_bn, vgg8: `dvc repro` trains and evaluates it (mlflow.log_model: true)"]
            out = run_stage(project, "stages.register", "--load", "alexnet", **env)
            assert out.stdout == f"alexnet@reference (run {run_id}) loads: uint8 images Nx3x32x32 in, logits out\n"
            version = client.get_model_version_by_alias("test-exp-alexnet", "reference")
            assert version.source == f"models:/{model.model_id}" and version.run_id == run_id
            linked = client.get_logged_model(model.model_id).tags["mlflow.modelVersions"]  # the model page's link
            assert json.loads(linked) == [{"name": "test-exp-alexnet", "version": "1"}]
            (scratch / "again").mkdir()
            again = mlflow.pyfunc.load_model("models:/test-exp-alexnet@reference", dst_path=str(scratch / "again"))
            assert again.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
            np.testing.assert_allclose(np.asarray(again.predict(images)), expected, rtol=1e-4, atol=1e-5)
    finally:
        if server is not None:
            stop_server(server)


def test_a_run_left_open_by_a_lost_store_is_completed_not_doubled(tmp_path, image_tree, monkeypatch):
    """The store went away before the training's end: the report stage finishes that run
    from the record instead of logging a second run of the same training."""
    import json

    from study.tracking.restore import ensure_logged
    from study.tracking.runs import TrainingRun, open_run
    from study.tracking.store import connect

    project = tmp_path / "project"
    prepare(source=str(image_tree), out_dir=project / "data" / "cifar10")
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(**TINY)))
    run_stage(project, "stages.train", "--model", "alexnet", "--no-mlflow")
    record_path = project / "outputs/alexnet/record.json"
    record = json.loads(record_path.read_text())
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client, experiment_id = connect("test-exp")
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    left_open = open_run(client, experiment_id, record)  # owned by this live process
    TrainingRun(client, left_open).log_epoch(record["history"][0])  # epoch 2 never reached the store
    lines, _ = ensure_logged([record_path], "test-exp")
    assert lines == [f"MLflow run {left_open} of alexnet-e2-s0 is still being written by process {os.getpid()}; "
                     "left as it is"]
    assert [r.info.status for r in client.search_runs([experiment_id])] == ["RUNNING"]

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client.set_tag(left_open, "pid", gone.stdout.strip())  # its process has ended
    lines, _ = ensure_logged([record_path], "test-exp")
    assert lines == [f"completed MLflow run {left_open} (alexnet-e2-s0, left RUNNING) from {record_path}"]
    [run] = client.search_runs([experiment_id])
    assert run.info.run_id == left_open and run.info.status == "FINISHED"
    assert run.info.end_time == record["ended_ms"]
    assert "its run was left RUNNING" in run.data.tags["completed_by"]
    steps = {m.step: m.value for m in client.get_metric_history(left_open, "test_acc")}
    assert steps == {h["epoch"]: pytest.approx(h["test_acc"]) for h in record["history"]}
    assert run.data.metrics["final_test_acc"] == pytest.approx(record["summary"]["final_test_acc"])
    assert {"record.json", "metrics.json", "history.csv"} <= {a.path for a in client.list_artifacts(left_open)}
    assert ensure_logged([record_path], "test-exp")[0] == []  # complete now: nothing more to do


def test_a_model_that_fails_or_never_ends_its_check_is_not_left_in_the_run(tmp_path, image_tree, monkeypatch):
    """A logged model that does not load back is deleted before the stage says so: the run
    never holds a model that failed its check. One whose process stopped during the check is
    tagged unchecked, and the next evaluation replaces it: one checked model in the end."""
    import importlib
    import json

    from study.errors import StageError
    from study.tracking.model_log import log_model

    project = tmp_path / "project"
    prepare(source=str(image_tree), out_dir=project / "data" / "cifar10")
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(**TINY)))
    run_stage(project, "stages.train", "--model", "vgg8")
    record = json.loads((project / "outputs/vgg8/record.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-exp")

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    # the one failure no real input gives here; the module itself, not mlflow's lazy stand-in for it
    monkeypatch.setattr(importlib.import_module("mlflow.pyfunc"), "load_model", broken)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # MLflow's global URI: another store
    mlflow.set_tracking_uri(elsewhere)
    with pytest.raises(StageError, match="does not load back"):
        log_model(client, record["mlflow_run_id"], record, project / "outputs/vgg8/checkpoint.pt")
    assert client.search_logged_models([experiment.experiment_id]) == []
    assert mlflow.get_tracking_uri() == elsewhere  # the client's store was used, and the global put back

    def stopped(*_args, **_kwargs):  # the process ends mid-check (SIGTERM's SystemExit, a kill): no clean-up runs
        raise SystemExit(143)

    monkeypatch.setattr(importlib.import_module("mlflow.pyfunc"), "load_model", stopped)
    with pytest.raises(SystemExit):
        log_model(client, record["mlflow_run_id"], record, project / "outputs/vgg8/checkpoint.pt")
    [left] = client.search_logged_models([experiment.experiment_id])
    assert "checkpoint_sha256_unchecked" in left.tags and "checkpoint_sha256" not in left.tags
    monkeypatch.undo()  # the real load_model again
    log_model(client, record["mlflow_run_id"], record, project / "outputs/vgg8/checkpoint.pt")
    [checked] = client.search_logged_models([experiment.experiment_id])
    assert checked.model_id != left.model_id and "checkpoint_sha256" in checked.tags
