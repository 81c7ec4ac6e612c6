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


def flip_byte(path, at: float = 0.5) -> None:
    """One bit changed in place, as a bad disk, copy or cache entry changes it."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_checkpoint_damaged_in_place_is_refused_by_the_crc_it_was_written_with(project):
    """torch.load reads a bit flipped in checkpoint.pt as a wrong number; evaluate checks every
    member's CRC-32 first: one line naming the member and the fix, nothing written."""
    before = (project / "outputs/alexnet/eval/metrics.json").read_text()
    flip_byte(project / "outputs/alexnet/checkpoint.pt")
    line = error_line(stage(project, "stages.evaluate", "--model", "alexnet"))
    assert "outputs/alexnet/checkpoint.pt is damaged: " in line and "fails the CRC-32 it was written with" in line
    assert "`dvc checkout" in line
    assert (project / "outputs/alexnet/eval/metrics.json").read_text() == before


def test_prepared_data_changed_after_prepare_is_never_trained_on(project, tmp_path):
    """A bit flipped in a prepared array (a bad DVC cache entry restored by `dvc checkout`): the
    training refuses it in one line before a run opens (before: it trained on the changed images
    and recorded the digest prepare had written, which they no longer have)."""
    data = tmp_path / "data"
    shutil.copytree((project / "data/cifar10").resolve(), data)  # the fixture's own data stays whole
    (project / "data/cifar10").unlink()
    (project / "data/cifar10").symlink_to(data)
    flip_byte(data / "train_images.npy", at=0.9)
    before = len(runs(project))
    line = error_line(stage(project, "stages.train", "--model", "alexnet"))
    assert "data/cifar10/train_images.npy does not match the sha256 prepare recorded in meta.json" in line
    assert "`dvc checkout data/cifar10`" in line and "`dvc repro -f prepare`" in line
    assert len(runs(project)) == before


def test_a_resumable_state_with_a_flipped_bit_is_never_resumed(tmp_path):
    """The saved training state is resumed only whole: a bit flipped in its weights moves it aside
    with one line and the training starts fresh (before: it resumed the changed weights)."""
    import torch

    from study.training.resume import fingerprint, load_resumable, state_path

    record = {"recipe": {"model": "alexnet", "epochs": 3}, "provenance": {"data_sha256": "0" * 64},
              "runtime": {"device": "cpu"}, "code_sha256": {}}
    path = state_path("alexnet", fingerprint(record), tmp_path)
    path.parent.mkdir()
    state = {"fingerprint": fingerprint(record), "history": [], "record": record, "saved_ms": 0,
             "trainer": {"epochs_done": 1, "model": {"w": torch.ones(256, 256)}}}
    torch.save(state, path)
    assert load_resumable("alexnet", record, tmp_path)[0]["trainer"]["epochs_done"] == 1  # whole: resumed
    flip_byte(path, at=0.6)
    saved, line = load_resumable("alexnet", record, tmp_path)
    assert saved is None and not path.exists() and path.with_suffix(".bad").exists()
    assert line.startswith(f"alexnet: saved state {path} is damaged (") and "fails its CRC-32" in line


def file_digests(folder):
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def artifact_locations(project):
    import sqlite3

    with sqlite3.connect(project / "mlflow.db") as con:
        found = [row[0] for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                                              ("logged_models", "artifact_location"))
                 for row in con.execute(f"select {column} from {table}") if row[0]]
    con.close()
    return found


def test_a_copied_or_moved_project_logs_into_its_own_folder(trained, project, tmp_path):
    """`cp -a` then `mv` of a project: its stages log into its own mlartifacts/, never the folder it
    was made in, with one line saying so (before: a copy wrote into the original's folder, and a
    moved project recreated the old one); a copy without mlartifacts/ is one line naming the fix."""
    original = trained[0]
    before = file_digests(original / "mlartifacts")
    out = stage(project, "stages.evaluate", "--model", "alexnet")
    assert out.returncode == 0, out.stderr
    assert f"MLflow store mlflow.db was made in {original.resolve()}: its " in out.stdout
    assert "artifact locations now point into this project's mlartifacts/" in out.stdout
    assert file_digests(original / "mlartifacts") == before, "the copy wrote into the original's folder"
    here = [loc for loc in artifact_locations(project) if "mlartifacts" in loc]
    assert here and all(loc.startswith(project.resolve().as_uri()) for loc in here), here
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    out = stage(moved, "stages.evaluate", "--model", "alexnet")
    assert out.returncode == 0 and f"was made in {project.resolve()}" in out.stdout, out.stderr
    assert not project.exists(), "the moved project's old folder was made again"
    assert all(loc.startswith(moved.resolve().as_uri()) for loc in artifact_locations(moved) if "mlartifacts" in loc)
    again = stage(moved, "stages.evaluate", "--model", "alexnet")
    assert "was made in" not in again.stdout  # said once, when it moved
    bare = tmp_path / "bare"
    shutil.copytree(original, bare, symlinks=True, ignore=shutil.ignore_patterns("mlartifacts"))
    line = error_line(stage(bare, "stages.train", "--model", "alexnet"))
    assert f"keeps its runs' files in {original.resolve() / 'mlartifacts'}, another project folder" in line
    assert line.endswith(f"(`cp -a {original.resolve() / 'mlartifacts'} mlartifacts`) and rerun")
    warned = stage(bare, "stages.evaluate", "--model", "alexnet")  # evaluate's outputs stand; the line whole
    assert warned.returncode == 0 and "mlartifacts`) and rerun); the report stage logs it" in warned.stdout


SKEWED_CLOCK = '''import os, time
if os.environ.get("TEST_CLOCK_SKEW_S"):
    _real = time.time
    time.time = lambda: _real() + float(os.environ["TEST_CLOCK_SKEW_S"])
'''


def test_the_latest_run_of_a_seed_is_the_last_opened_whatever_the_clocks_said(project, tmp_path):
    """A training under a clock a day ahead, then one under the right clock, of the same seed: the
    tables take the second (the runs' own sequence), not the one that claims the later start
    (before: the skewed run hid every later run of its seed)."""
    from study.analysis.selection import select
    from study.config import load_settings
    from study.data import prepared_meta

    (tmp_path / "clock").mkdir()
    (tmp_path / "clock" / "sitecustomize.py").write_text(SKEWED_CLOCK)  # every process of the stage, helper too
    ahead = stage(project, "stages.train", "--model", "alexnet", PYTHONPATH=str(tmp_path / "clock"),
                  TEST_CLOCK_SKEW_S="86400")
    assert ahead.returncode == 0, ahead.stderr
    skewed = json.loads((project / "outputs/alexnet/record.json").read_text())["mlflow_run_id"]
    right = stage(project, "stages.train", "--model", "alexnet")
    assert right.returncode == 0, right.stderr
    last = json.loads((project / "outputs/alexnet/record.json").read_text())["mlflow_run_id"]
    found = runs(project).set_index("run_id")
    assert found.loc[skewed, "start_time"] > found.loc[last, "start_time"]  # the skewed run claims the later start
    assert int(found.loc[last, "tags.sequence"]) == int(found.loc[skewed, "tags.sequence"]) + 1
    settings = load_settings(project / "params.yaml")
    data = prepared_meta(project / "data/cifar10")["sha256"]
    [run] = select(found.reset_index(), settings, data).study[("alexnet", settings.epochs)].runs
    assert run["run_id"] == last


def test_a_clock_stepped_back_moves_no_end_before_its_start(monkeypatch):
    """The times a process records come from one reading of the wall clock and the monotonic
    clock since: a system clock stepped back two hours mid-run leaves them in order."""
    import time

    from study import provenance

    start = provenance.now_ms()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 7200)
    time.sleep(0.01)
    assert provenance.now_ms() >= start + 10


def test_a_store_lost_while_evaluate_holds_the_run_open_leaves_it_as_it_was(tmp_path, monkeypatch):
    """Evaluate reopens the finished run to log the model; the store goes away before it closes it
    again: the next evaluate (or report) closes it FINISHED at its own end, with no `completed_by`
    blaming the training, and a second logging of the evaluation adds no second value of any
    metric (before: RUNNING until a report, then 19 metrics twice and the training blamed)."""
    import mlflow

    from study.tracking.reopen import REOPENED_TAG, reopened, settle_reopened

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # MLflow's fluent API (the reopened run) writes there too
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("e")
    run_id = client.create_run(experiment, start_time=1_000).info.run_id
    client.set_terminated(run_id, "FINISHED", end_time=2_000)
    finished = client.get_run(run_id)
    closing = mlflow.MlflowClient.set_terminated
    with monkeypatch.context() as lost:  # the store gone before the run is closed, for MLflow's own close too
        lost.setattr(mlflow.MlflowClient, "set_terminated",
                     lambda *a, **k: (_ for _ in ()).throw(ConnectionError("lost")))
        with pytest.raises(ConnectionError), reopened(client, finished):
            mlflow.log_param("logged_while_open", "1")
    assert mlflow.MlflowClient.set_terminated is closing
    left = client.get_run(run_id)
    assert left.info.status == "RUNNING" and REOPENED_TAG in left.data.tags
    assert settle_reopened(client, left).info.status == "RUNNING"  # this process, still alive, holds it
    monkeypatch.setattr("study.tracking.reopen.alive", lambda pid, started="": False)  # the evaluate is gone
    settled = settle_reopened(client, left)
    assert (settled.info.status, settled.info.end_time) == ("FINISHED", 2_000)
    assert REOPENED_TAG not in settled.data.tags and "completed_by" not in settled.data.tags
    while mlflow.active_run():  # what MLflow's failed close left on this process's run stack
        mlflow.end_run()


def test_an_evaluation_logged_twice_holds_each_metric_once(project):
    """The evaluate stage run again on the same outputs (an attempt that lost its store halfway,
    `dvc repro -f`): every evaluation metric keeps one value."""
    import mlflow

    record = json.loads((project / "outputs/alexnet/record.json").read_text())
    again = stage(project, "stages.evaluate", "--model", "alexnet")
    assert again.returncode == 0, again.stderr
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    evaluated = [k for k in run.data.metrics if k.startswith(("eval/", "test_acc_class/"))]
    assert len(evaluated) > 12
    doubled = {k: n for k in evaluated if (n := len(client.get_metric_history(run.info.run_id, k))) != 1}
    assert doubled == {}


def test_the_report_never_logs_a_model_of_weights_its_training_did_not_write(project):
    """The report logs a model from the workspace's checkpoint where the run lacks one: weights that
    changed after training are refused in one line (before: the report logged them as the model)."""
    import torch

    from study.errors import StageError
    from study.tracking.model_log import log_model

    path = project / "outputs/alexnet/checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["features.0.weight"][0, 0, 0, 0] += 1.0
    torch.save(checkpoint, path)
    record = json.loads((project / "outputs/alexnet/record.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    before = len(client.search_logged_models([client.get_run(record["mlflow_run_id"]).info.experiment_id]))
    with pytest.raises(StageError, match="its weights are not the ones its training wrote.*`dvc checkout"):
        log_model(client, record["mlflow_run_id"], record, path)
    assert len(client.search_logged_models([client.get_run(record["mlflow_run_id"]).info.experiment_id])) == before
