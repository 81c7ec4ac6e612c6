"""Outputs bound to their training (issue 35): record.json, metrics.json and the evaluation
name the checkpoint's training by id and digest; an edited or swapped file is refused in one
line naming it and the `dvc checkout` that mends it, before any number reaches MLflow, the
top-level metrics.json or the report. A run whose artifacts were lost is completed again."""

from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import mlflow
import pytest
from conftest import prepared_images
from test_record_integrity import error_line, make_project, runs, stage

from study.outputs import bound_record, record_digest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two trainings of AlexNet (seeds 0 and 1), each evaluated, each in its own project; the first
    logged to its store, the second (a source of foreign files only) not logged."""
    prepared = prepared_images(tmp_path_factory, "bound", 6, 2)
    projects = []
    for seed in (0, 1):
        project = make_project(tmp_path_factory.mktemp("bound") / f"s{seed}", prepared, epochs=1, seed=seed,
                               models=["alexnet"])
        logged = () if seed == 0 else ("--no-mlflow",)
        for args in (("stages.train", "--model", "alexnet"), ("stages.evaluate", "--model", "alexnet")):
            proc = stage(project, *args, *logged)
            assert proc.returncode == 0, proc.stderr
        projects.append(project)
    return projects


@pytest.fixture()
def project(trained, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(trained[0], copy, symlinks=True)
    return copy


def edit_json(path, **changes):
    value = json.loads(path.read_text())
    for dotted, new in changes.items():
        *parents, key = dotted.split(".")
        node = value
        for part in parents:
            node = node[part]
        node[key] = new
    path.write_text(json.dumps(value))


def test_the_outputs_carry_their_trainings_id_and_digest(trained):
    out = trained[0] / "outputs" / "alexnet"
    record = json.loads((out / "record.json").read_text())
    for path in (out / "metrics.json", out / "eval" / "metrics.json"):
        bound = json.loads(path.read_text())
        assert bound["record_id"] == record["record_id"]
        assert bound["record_sha256"] == record_digest(record)
    assert bound_record("alexnet", trained[0] / "outputs")["record_id"] == record["record_id"]


def test_an_edited_record_never_reaches_a_restored_run(project):
    edit_json(project / "outputs/alexnet/record.json", **{"summary.final_test_acc": 98.0})
    (project / "mlflow.db").unlink()  # a fresh store: the report would log the run again from the record
    shutil.rmtree(project / "mlartifacts")
    line = error_line(stage(project, "stages.report"))
    assert "outputs/alexnet/record.json does not match outputs/alexnet/checkpoint.pt" in line
    assert "summary.final_test_acc: 98.0 here" in line and "`dvc checkout train@alexnet`" in line
    assert runs(project).empty  # nothing logged


def test_an_edited_metrics_file_never_reaches_the_summary(project):
    edit_json(project / "outputs/alexnet/metrics.json", final_test_acc=98.0)
    line = error_line(stage(project, "stages.summary"))
    assert line.startswith("error: outputs/alexnet/metrics.json does not match its training's record")
    assert "final_test_acc: 98.0 here" in line and "`dvc checkout train@alexnet`" in line
    assert not (project / "metrics.json").exists()


def test_a_checkpoint_of_another_training_is_not_evaluated_into_this_run(project, trained):
    shutil.copy(trained[1] / "outputs/alexnet/checkpoint.pt", project / "outputs/alexnet/checkpoint.pt")
    before = (project / "outputs/alexnet/eval/metrics.json").read_text()
    line = error_line(stage(project, "stages.evaluate", "--model", "alexnet"))
    assert "outputs/alexnet/record.json does not match outputs/alexnet/checkpoint.pt (it records training" in line
    assert (project / "outputs/alexnet/eval/metrics.json").read_text() == before  # nothing written


def test_a_whole_training_swapped_in_but_its_metrics_is_named(project, trained):
    for name in ("checkpoint.pt", "record.json"):  # a consistent pair from the other training
        shutil.copy(trained[1] / "outputs/alexnet" / name, project / "outputs/alexnet" / name)
    line = error_line(stage(project, "stages.summary"))
    assert "outputs/alexnet/metrics.json does not match its training's record" in line


def test_an_evaluation_of_another_training_is_named(project, trained):
    shutil.copy(trained[1] / "outputs/alexnet/eval/metrics.json", project / "outputs/alexnet/eval/metrics.json")
    line = error_line(stage(project, "stages.report"))
    assert "outputs/alexnet/eval/metrics.json evaluated another training" in line
    assert "`dvc repro evaluate@alexnet`" in line


def test_a_run_whose_artifacts_are_gone_is_completed_from_the_outputs(trained):
    # the first training's own project (a copy's store would still point at the original's artifacts):
    # the other tests work on copies, and this one ends with its artifacts whole again
    project = trained[0]
    run = runs(project).iloc[0]
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    held = sorted(info.path for info in client.list_artifacts(run["run_id"]))
    assert {"record.json", "metrics.json", "history.csv", "figures", "eval"} <= set(held)
    shutil.rmtree(urlparse(run["artifact_uri"]).path)

    proc = stage(project, "stages.report")
    assert proc.returncode == 0, proc.stderr
    assert f"logged again to MLflow run {run['run_id']}" in proc.stdout
    assert sorted(info.path for info in client.list_artifacts(run["run_id"])) == held
    again = stage(project, "stages.report")  # whole now: nothing more to log
    assert "logged again" not in again.stdout


def test_a_purged_run_is_never_named_the_training_logged_again_is(project, trained):
    """`mlflow gc` purged the training's run: the report logs the training again from its record, and
    its figures section names that run, never the purged one."""
    import sqlite3
    import subprocess
    import sys

    from conftest import subprocess_env

    with sqlite3.connect(project / "mlflow.db") as db:  # the copy's own artifacts: gc must not touch the original's
        old, new = (trained[0] / "mlartifacts").as_uri(), (project / "mlartifacts").as_uri()
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    db.close()
    purged = runs(project).iloc[0]["run_id"]
    mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").delete_run(purged)
    store = f"sqlite:///{project / 'mlflow.db'}"
    gc = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", store, "--run-ids", purged],
                        capture_output=True, text=True, env=subprocess_env(MLFLOW_TRACKING_URI=store))
    assert gc.returncode == 0, gc.stderr[-2000:]
    proc = stage(project, "stages.report")
    assert proc.returncode == 0, proc.stderr
    [again] = list(runs(project)["run_id"])
    assert again != purged and f"logged alexnet-e1-s0 to MLflow from outputs/alexnet/record.json (run {again}" \
        in proc.stdout
    text = (project / "reports/report.md").read_text()
    assert f"MLflow run `{again}`" in text and purged not in text


def test_a_checkpoint_whose_weights_changed_is_never_evaluated(project):
    """One weight changed in checkpoint.pt (a flipped bit in a copy or a cache), the file still a valid
    checkpoint: evaluate refuses it in one line naming the fix, and writes nothing (before: it evaluated
    the corrupted network and logged its accuracy into the training's run)."""
    import torch

    path = project / "outputs/alexnet/checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert len(checkpoint["weights_sha256"]) == 64
    before = (project / "outputs/alexnet/eval/metrics.json").read_text()
    weight = checkpoint["state_dict"]["features.0.weight"]
    weight[0, 0, 0, 0] = -weight[0, 0, 0, 0] * 2**20  # an exponent bit, as a flip does
    torch.save(checkpoint, path)
    line = error_line(stage(project, "stages.evaluate", "--model", "alexnet"))
    assert "outputs/alexnet/checkpoint.pt: its weights are not the ones its training wrote" in line
    assert "`dvc checkout" in line
    assert (project / "outputs/alexnet/eval/metrics.json").read_text() == before
