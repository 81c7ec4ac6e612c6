"""No silently wrong record (issue 20), through the stages' real command lines: a resume never
mixes code, a diverged training never ends FINISHED, a full disk loses and leaves nothing, and a
healthy store is never called broken."""

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, prepared_images, project_params, subprocess_env

from stages.evaluate import per_class_accuracy

PARAMS = project_params(**{**TINY, "epochs": 3})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_images(tmp_path_factory, "integrity", 8, 2)


def make_project(root: Path, prepared: Path, code: bool = False, **overrides) -> Path:
    """A folder to run stages in; with ``code``, a git repository holding its own copy of the
    project's code (the stages run that copy, as a queued experiment does)."""
    root.mkdir(parents=True)
    (root / "data").mkdir()
    os.symlink(prepared, root / "data" / "cifar10")
    params = {**PARAMS, **overrides}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    if code:
        for name in ("stages", "study", "models"):
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
        (root / ".gitignore").write_text("data/\nmlflow.db*\nmlartifacts/\n.train_state/\noutputs/\n")
        git(root, "init", "-q")
        commit(root, "the study")
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True,
                          env=subprocess_env()).stdout.strip()


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def stage(root: Path, *args: str, preexec=None, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=root, capture_output=True, text=True, timeout=300,
                          env=subprocess_env(**env), preexec_fn=preexec)


def runs(root: Path, experiment: str = "test-exp") -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment])


def new_experiment(root: Path) -> str:
    """The study's experiment made by hand, its artifacts inside the project (not ./mlruns of the test runner)."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client.create_experiment("test-exp", artifact_location=(root / "mlartifacts").as_uri())


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_resume_across_a_code_change_starts_fresh_under_the_new_commit(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, code=True, epochs=3)
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", "--model", "vgg8"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    deadline = time.time() + 240
    while not list((project / ".train_state").glob("*.pt")):  # epoch 1 saved
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    model_code = project / "models" / "network.py"
    model_code.write_text(model_code.read_text().replace("dropout: float = 0.5", "dropout: float = 0.3"))
    new_commit = commit(project, "dropout 0.3")

    rerun = stage(project, "stages.train", "--model", "vgg8")
    assert rerun.returncode == 0, rerun.stderr
    assert "code changed in models/network.py" in rerun.stdout and "starting fresh" in rerun.stdout
    assert "resuming" not in rerun.stdout
    finished = runs(project).query("status == 'FINISHED'")
    assert len(finished) == 1
    assert finished["tags.git_commit"].iloc[0] == new_commit
    assert finished["tags.git_commits"].iloc[0] == new_commit
    assert finished["metrics.final_test_acc"].notna().all()


def test_a_resume_under_a_new_commit_with_the_same_code_names_both_commits(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, code=True, epochs=3)
    first_commit = git(project, "rev-parse", "HEAD")
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", "--model", "vgg8"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    deadline = time.time() + 240
    while not list((project / ".train_state").glob("*.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (project / "NOTES.md").write_text("a change that does not touch the training\n")
    second_commit = commit(project, "notes")

    rerun = stage(project, "stages.train", "--model", "vgg8")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming after epoch" in rerun.stdout
    run = runs(project).query("status == 'FINISHED'").iloc[0]
    assert run["tags.git_commits"] == f"{first_commit},{second_commit}"
    assert second_commit[:10] in run["tags.mlflow.note.content"]


def test_a_diverged_training_fails_in_one_line_and_the_report_still_builds(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=1, models=["alexnet", "vgg8"])
    assert stage(project, "stages.train", "--model", "vgg8").returncode == 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = 1e6
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    proc = stage(project, "stages.train", "--model", "alexnet")
    line = error_line(proc)
    assert "alexnet: the loss became " in line and " at epoch 1/1, so the training diverged" in line
    assert not (project / "outputs" / "alexnet").exists()
    assert not list((project / ".train_state").glob("alexnet-*"))
    table = runs(project)
    failed = table.query("`tags.mlflow.runName`.str.startswith('alexnet')")
    assert list(failed["status"]) == ["FAILED"]
    assert "Diverged" in failed["tags.failed_because"].iloc[0]
    finished = table.query("status == 'FINISHED'")
    assert np.isfinite(finished.filter(like="metrics.").to_numpy(dtype=float)[~finished.filter(
        like="metrics.").isna().to_numpy()]).all()

    params["train"]["lr"] = 0.01
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    report = stage(project, "stages.report")
    assert report.returncode == 0, report.stderr
    # the failed training is in no table; the finished one is, with its own number
    table5 = pd.read_csv(project / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")
    assert table5.loc["AlexNet", "ours (1 ep)"].startswith("not run"), table5
    assert table5.loc["VGG-8", "ours (1 ep)"] == f"{finished['metrics.final_test_acc'].iloc[0]:.2f}", table5
    seeds = pd.read_csv(project / "reports/tables/seed_values.csv")
    assert list(seeds["run_id"]) == list(finished["run_id"])


def limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


FILL_AFTER_EPOCH_1 = r"""
set -u
mount -t tmpfs -o size=6m tmpfs "$STORE" && mkdir "$STORE/mlartifacts" || exit 97
python -m stages.train --model alexnet > out1.log 2> err1.log & pid=$!
until grep -q "epoch 1/" out1.log; do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
dd if=/dev/zero of="$STORE/filler" bs=64k 2>/dev/null
wait $pid; echo $? > rc1
rm "$STORE/filler"
python -m stages.train --model alexnet > out2.log 2> err2.log; echo $? > rc2
python -c "import mlflow, json; c = mlflow.MlflowClient('sqlite:///$STORE/mlflow.db'); r = c.search_runs(['1'])
steps = lambda x: [m.step for m in c.get_metric_history(x.info.run_id, 'test_acc')]
print(json.dumps([[x.info.status, steps(x)] for x in r]))" > runs.json
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mount namespaces and tmpfs are Linux's")
def test_a_full_disk_under_the_store_is_one_warning_naming_it_and_nothing_is_lost(tmp_path, prepared):
    """The store and its artifacts on a 6 MB tmpfs, filled after epoch 1 (a mount namespace of its own)."""
    project = make_project(tmp_path / "p", prepared, epochs=4, models=["alexnet"])
    store = tmp_path / "store"
    store.mkdir()
    os.symlink(store / "mlartifacts", project / "mlartifacts")
    env = subprocess_env(STORE=str(store), MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}")
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    proc = subprocess.run([*unshare, "sh", "-c", FILL_AFTER_EPOCH_1], cwd=project, env=env, capture_output=True,
                          text=True, timeout=400)
    # never a skip: README promises this behaviour, and a skip would hide it on the machine CI runs on
    assert proc.returncode != 97 and "unshare" not in proc.stderr, (
        "this test mounts a 6 MB tmpfs in a mount namespace of its own: run it as root or where unprivileged "
        f"user namespaces are allowed (kernel.unprivileged_userns_clone=1); here: {proc.stderr.strip()[:200]}")
    err = (project / "err1.log").read_text().splitlines()
    assert len(err) == 2, err  # one warning while it trains, one line at the end: no traceback
    assert err[0].startswith(f"warning: MLflow store {store / 'mlflow.db'} is out of disk space (0.0 MB free there)")
    assert err[1].startswith(f"error: MLflow store {store / 'mlflow.db'} is out of disk space")
    assert "free space there and rerun `dvc repro`" in err[1] and "unreachable" not in " ".join(err)
    assert (project / "rc1").read_text().strip() == "1"
    assert (project / "rc2").read_text().strip() == "0", (project / "err2.log").read_text()
    assert json.loads((project / "runs.json").read_text()) == [["FINISHED", [1, 2, 3, 4]]]  # every epoch once


def test_out_of_space_names_the_folder_and_its_free_space(tmp_path):
    import errno

    from mlflow.exceptions import MlflowException

    from study.tracking.store import out_of_space, store_error

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as cause:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full") from cause
    except MlflowException as err:
        line = out_of_space(uri, err)
    assert line.startswith(f"MLflow store {tmp_path / 'mlflow.db'} is out of disk space (") and "MB free there" in line
    written = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mlartifacts/1/r/artifacts/a.json"))
    assert out_of_space(uri, written).startswith(f"MLflow store {tmp_path / 'mlartifacts/1/r/artifacts'} is out")
    assert "server http://h:5000 is out of disk space" in out_of_space("http://u:pw@h:5000", written.__class__(
        "INTERNAL_ERROR: database or disk is full"))
    assert out_of_space(uri, ConnectionError("refused")) is None
    assert str(store_error(uri, written)).endswith("; free space there and rerun")


def test_a_failed_state_write_leaves_nothing_and_says_how_much_it_needed(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=2)
    proc = stage(project, "stages.train", "--model", "vgg8", preexec=limit_file_size(20 << 20))
    line = error_line(proc)
    assert "could not write the training state to" in line and "it needs about 105 MB" in line
    assert list((project / ".train_state").iterdir()) == []  # no hidden temporary file left
    assert not (project / "outputs").exists()
    assert list(runs(project)["status"]) == ["FAILED"]

    again = stage(project, "stages.train", "--model", "vgg8")  # space again: it trains
    assert again.returncode == 0, again.stderr
    assert list(runs(project)["status"]) == ["FINISHED", "FAILED"]


def test_a_failed_output_write_keeps_the_state_and_the_rerun_only_writes(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=1)
    (project / "outputs").mkdir()
    (project / "outputs" / "vgg8").write_text("in the way")  # the outputs folder cannot be made
    line = error_line(stage(project, "stages.train", "--model", "vgg8"))
    assert "could not write vgg8's outputs to outputs/vgg8" in line and "training state is kept" in line
    assert len(list((project / ".train_state").glob("vgg8-*.pt"))) == 1

    (project / "outputs" / "vgg8").unlink()
    rerun = stage(project, "stages.train", "--model", "vgg8")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming after epoch 1/1" in rerun.stdout and "vgg8 epoch 1/1" not in rerun.stdout
    assert (project / "outputs" / "vgg8" / "checkpoint.pt").exists()
    assert list((project / ".train_state").iterdir()) == []
    assert list(runs(project)["status"]) == ["FINISHED"]  # the same run, reopened and finished


def test_a_locked_store_is_waited_for_then_named(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=1)
    new_experiment(project)
    holder = sqlite3.connect(project / "mlflow.db")
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        proc = stage(project, "stages.train", "--model", "vgg8", MLFLOW_STORE_LOCK_WAIT_S="3")
    finally:
        holder.rollback()
        holder.close()
    line = error_line(proc)
    assert "mlflow.db stayed locked by another process for 3 s" in line and "fuser" in line
    assert "mv " not in line  # a healthy store is never to be moved aside
    assert runs(project).empty and not (project / "outputs").exists()


def connect_in_process(monkeypatch, db: Path):
    """study.tracking.store.connect on ``db`` in this process, MLflow's global URI put back after."""
    from study.tracking import store as tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    previous = mlflow.get_tracking_uri()
    try:
        return tracking.connect("test-exp", root=db.parent)
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_store_another_process_is_creating_is_waited_for(tmp_path, monkeypatch):
    """Any reader (`mlflow ui`, a script) that opens a new SQLite store runs MLflow's migrations
    on it, and they take no lock: a training arriving meanwhile failed (4 times in 4, with
    "table ... already exists"). Now it waits, read-only, for the store to be whole, and the
    other process is left to finish its work."""
    db = tmp_path / "mlflow.db"
    other = subprocess.Popen([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient('sqlite:///{db}')"
                              ".search_experiments()"], env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    while not db.exists():  # the other process has begun; its migrations take about a second
        assert other.poll() is None, "the other process ended without making the store"
        time.sleep(0.002)
    client, experiment_id = connect_in_process(monkeypatch, db)
    assert other.wait(timeout=120) == 0, other.stderr.read()[-2000:]
    assert client.get_experiment(experiment_id).name == "test-exp"


def test_a_new_store_appears_whole(tmp_path, monkeypatch):
    """A training that creates the store makes it under a hidden name and links it into place:
    a reader polling mlflow.db meanwhile never finds it half migrated."""
    import threading

    from mlflow.store.db.utils import _get_latest_schema_revision

    db, seen, done = tmp_path / "mlflow.db", set(), threading.Event()

    def poll():
        while not done.is_set():
            if db.exists():
                with contextlib.suppress(sqlite3.DatabaseError):  # locked by the writer: look again
                    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as store:
                        tables = {t for (t,) in store.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                        version = store.execute("SELECT version_num FROM alembic_version").fetchone() \
                            if "alembic_version" in tables else None
                        seen.add((version[0] if version else None, any(t.startswith("_alembic") for t in tables)))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        connect_in_process(monkeypatch, db)
    finally:
        done.set()
        reader.join()
    assert seen == {(_get_latest_schema_revision(), False)}, f"a reader saw the store half made: {seen}"
    assert not list(tmp_path.glob(".mlflow.db.creating-*"))


def test_a_deleted_experiment_names_the_restore_command_and_it_works(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=1)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    client.delete_experiment(new_experiment(project))
    line = error_line(stage(project, "stages.train", "--model", "vgg8"))
    assert "experiment 'test-exp' (id 1) is deleted" in line and "mv " not in line
    command = line.split("restore it with `", 1)[1].split("`", 1)[0]
    env_var, cli = command.split(" ", 1)
    subprocess.run(cli.split(), cwd=project, check=True, capture_output=True,
                   env=subprocess_env(**dict([env_var.split("=", 1)])))
    assert stage(project, "stages.train", "--model", "vgg8").returncode == 0
    assert list(runs(project)["status"]) == ["FINISHED"]


def test_a_renamed_experiment_is_named_never_replaced(tmp_path, prepared):
    project = make_project(tmp_path / "p", prepared, epochs=1)
    first = stage(project, "stages.train", "--model", "vgg8")
    assert "created MLflow experiment 'test-exp' (id 1)" in first.stdout, first.stderr
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    client.rename_experiment("1", "cifar-study-2026")  # as an EDIT member may, in the UI
    for args in (("stages.train", "--model", "vgg8"), ("stages.report",)):
        line = error_line(stage(project, *args))
        assert "experiment 'test-exp' is not in" in line and "renamed to 'cifar-study-2026' (id 1)" in line
        assert "-S mlflow.experiment='cifar-study-2026'" in line
    assert [e.name for e in client.search_experiments() if e.name != "Default"] == ["cifar-study-2026"]  # none made
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mlflow"]["experiment"] = "cifar-study-2026"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage(project, "stages.report").returncode == 0  # pointed at it: its run is the report's
    assert len(runs(project, "cifar-study-2026")) == 1


@pytest.mark.parametrize(("revision", "expected"), [("ffffffffffff", "written by a newer MLflow"),
                                                     ("0584bdc529eb", "written by an older MLflow")])
def test_a_store_of_another_mlflow_version_is_named_not_called_broken(tmp_path, prepared, revision, expected):
    project = make_project(tmp_path / "p", prepared, epochs=1)
    new_experiment(project)
    with sqlite3.connect(project / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    line = error_line(stage(project, "stages.report"))
    assert expected in line and "mv " not in line


def test_yaml_1_2_numbers_are_numbers(tmp_path):
    from study.config import load_settings

    text = (ROOT / "params.yaml").read_text().replace("lr: 0.01", "lr: 1e-3")
    (tmp_path / "params.yaml").write_text(text)
    assert load_settings(tmp_path / "params.yaml").train.lr == 0.001


def test_a_class_without_test_images_has_no_accuracy(tmp_path):
    matrix = np.array([[2, 1, 0], [0, 0, 0], [0, 1, 3]])
    accuracy = per_class_accuracy(matrix)
    assert accuracy[0] == pytest.approx(200 / 3) and np.isnan(accuracy[1]) and accuracy[2] == 75.0
    pd.DataFrame({"class": ["a", "b", "c"], "accuracy": accuracy}).to_csv(tmp_path / "per_class.csv", index=False)
    assert (tmp_path / "per_class.csv").read_text().splitlines()[2] == "b,"  # empty, not 0.0


def test_trainings_that_start_together_on_new_data_all_link_its_dataset(tmp_path):
    """Seen on DVC's queue with two workers: both trainings insert the same new dataset, one hits
    the store's unique key and failed as 'unreachable or unusable'. Eight at once, a real store."""
    import threading

    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from study.tracking.content import log_dataset

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("race")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    dataset = DatasetInput(Dataset(name="cifar10-train-200", digest="0" * 32, source_type="local",
                                   source="file:///data"), tags=[InputTag("mlflow.data.context", "training")])
    barrier, errors = threading.Barrier(len(runs)), []

    def link(run_id):
        barrier.wait()
        try:
            log_dataset(client, run_id, dataset)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {str(err)[:120]}")

    threads = [threading.Thread(target=link, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for run_id in runs:
        assert [d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs] == ["0" * 32]


def test_the_torn_writes_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    from study.files import atomic_entries, sweep_torn_entries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    torn = tmp_path / f".checkpoint.pt+record.json+metrics.json+history.csv.{gone.stdout.strip()}-ab12cd34"
    torn.mkdir()
    (torn / "checkpoint.pt").write_bytes(b"half a checkpoint")
    (tmp_path / "record.json").write_text("{}")
    with atomic_entries(tmp_path, ("metrics.json",)) as live:  # this process's own write, under way
        assert sweep_torn_entries(tmp_path) == [torn]
        assert live.exists()
        (live / "metrics.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "record.json"]
