"""The real tools end to end: `dvc repro`, `dvc exp run -S`, queued experiments, all in a
temporary git repository on tiny data, all landing in one MLflow store; and DVC and MLflow
kept in step whichever way outputs reach the workspace."""

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import ROOT, project_params, subprocess_env
from filelock import FileLock  # comes with torch

PROJECT_FILES = ["dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "data/.gitignore", "models", "stages", "study"]
# two of the study's networks, of both kinds of design: the pipeline's plumbing is the same for each, and
# every further network costs the shared study a training and an evaluation per run (the networks
# themselves: tests/test_models.py, test_train.py)
MODELS = ["alexnet", "vgg8"]
LIGHT = ["vgg8"]  # the quickest network: for tests about the pipeline's plumbing, not about the models


def sh(args, cwd, timeout=1200, **env):
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=subprocess_env(**env),
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:  # one clear line, not a traceback through subprocess
        raise AssertionError(f"{' '.join(map(str, args))} did not end within {timeout} s (a loaded machine?)") from err
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def dvc(*args, cwd, timeout=1200, **env):
    return sh([sys.executable, "-m", "dvc", *args], cwd=cwd, timeout=timeout, **env)


def finished_runs(db):
    # MLflow keeps one engine (and its open SQLite connections) per URI: a deleted and
    # recreated file must be read afresh
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    for engine in SqlAlchemyStore._engine_map.values():
        engine.dispose()
    SqlAlchemyStore._engine_map.clear()
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return mlflow.search_runs(experiment_names=["alexnet-vgg-cifar10"], filter_string="attributes.status = 'FINISHED'")


def runs_by_name(db):
    runs = finished_runs(db)
    return runs.groupby("tags.mlflow.runName")["run_id"].apply(list).to_dict() if len(runs) else {}


def table5(repo):
    return pd.read_csv(repo / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")


def assert_full_report(repo, epochs):
    """Every model's cell for ``epochs`` holds a number: no "not run" for a trained model."""
    column = table5(repo)[f"ours ({epochs} ep)"]
    assert all(re.fullmatch(r"\d+\.\d\d", v) for v in column), column.to_dict()


STUDY_TEST = "test_repro_then_exp_run_track_every_run"
on_the_study = pytest.mark.study  # conftest schedules these first


def fresh_project(repo, image_tarball):
    """The project in a new git repository with DVC, on tiny data, committed."""
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() \
            else shutil.copy(src, dst)
    # the study's own train settings (one batch of 30 images), so the runs keep the recipe's names;
    # model logging is covered by test_mlflow_content, here it would cost ~15 s per evaluation
    params = project_params(epochs=1, models=MODELS, data={"source": str(image_tarball), "train_subset": 30,
                                                           "test_subset": 20},
                            runtime={"device": "cpu"}, mlflow={"log_model": False})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "study"], repo)
    return repo


def build_study(repo, image_tarball) -> dict:
    """What the user does first: `dvc repro` (1 epoch), commit, `dvc exp run -S epochs=2`.
    Returns what the first test checks, or the error that stopped it."""
    facts = {"repo": str(repo), "error": None}
    try:
        fresh_project(repo, image_tarball)
        dvc("repro", cwd=repo)
        facts["lock"] = yaml.safe_load((repo / "dvc.lock").read_text())
        facts["status"] = json.loads(dvc("status", "--json", cwd=repo))
        facts["summary"] = json.loads((repo / "metrics.json").read_text())
        sh(["git", "add", "-A"], repo)  # the first experiment, committed as a user would
        sh(["git", "commit", "-qm", "one epoch"], repo)
        dvc("exp", "run", "-n", "e2", "-S", "epochs=2", cwd=repo)
    except AssertionError as err:
        facts["error"] = str(err)
    return facts


@pytest.fixture(scope="session")
def study(tmp_path_factory, image_tarball):
    """The one expensive pipeline run of the session, built by whichever pytest-xdist worker
    needs it first (the others wait for it); tests never change it, they work on copies."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one folder for all workers
    facts = shared / "study.json"
    with FileLock(shared / "study.lock"):
        if not facts.exists():
            facts.write_text(json.dumps(build_study(shared / "study", image_tarball)))
    return json.loads(facts.read_text())


def copy_study(base, repo):
    """An independent copy of the study's repository: git, DVC (its cache hard-linked: DVC
    never writes a cache file in place), workspace and MLflow store, artifacts moved along."""
    def copy(src, dst):
        return os.link(src, dst) if "/.dvc/cache/" in src else shutil.copy2(src, dst)

    shutil.copytree(base, repo, symlinks=True, copy_function=copy, ignore=lambda folder, names: [
        n for n in names if n == "tmp" and folder == str(base / ".dvc")])  # locks, queue: never shared
    with sqlite3.connect(repo / "mlflow.db") as db:
        old, new = (base / "mlartifacts").as_uri(), (repo / "mlartifacts").as_uri()
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    db.close()
    return repo


@pytest.fixture()
def repo(study, request, tmp_path):
    """A copy of the study for one test: what a test changes no other test sees. If the study
    did not build, its own test fails saying why and the tests built on it are skipped."""
    if study["error"]:
        if request.node.name != STUDY_TEST and any(item.name == STUDY_TEST for item in request.session.items):
            pytest.skip(f"the shared study did not build: {STUDY_TEST} fails with the reason")
        pytest.fail(f"the shared study did not build: {study['error']}", pytrace=False)
    return copy_study(Path(study["repo"]), tmp_path / "repo")


@on_the_study
def test_repro_then_exp_run_track_every_run(study, repo):
    lock = study["lock"]  # as `dvc repro` left it, before the experiment
    for model in MODELS:
        stage = lock["stages"][f"train@{model}"]
        assert stage["params"]["params.yaml"]["epochs"] == 1
        assert sorted(o["path"] for o in stage["outs"]) == [
            f"outputs/{model}/checkpoint.pt", f"outputs/{model}/history.csv", f"outputs/{model}/metrics.json",
            f"outputs/{model}/record.json"]
    assert "prepare" in lock["stages"]
    # only the report, which reads MLflow (outside DVC's view), is always rebuilt
    assert study["status"] == {"report": ["always changed"]}

    summary = study["summary"]  # numbers only, the study in one small file
    assert set(summary) == set(MODELS) and all(set(v) == {"acc", "sec"} for v in summary.values())

    runs = runs_by_name(repo / "mlflow.db")
    client = mlflow.MlflowClient()
    for model in MODELS:
        assert len(runs[f"{model}-e1-s0"]) == 1 and len(runs[f"{model}-e2-s0"]) == 1
        history = client.get_metric_history(runs[f"{model}-e2-s0"][0], "test_acc")
        assert sorted(m.step for m in history) == [1, 2]
        assert client.get_run(runs[f"{model}-e2-s0"][0]).data.tags["dvc_exp_name"]  # set by `dvc exp run`
    compare_with_dvc(repo, summary)

    # the report: both epoch columns filled from MLflow, for every model
    t5 = table5(repo)
    assert list(t5.index) == ["AlexNet", "VGG-8"]
    for model, name in zip(MODELS, t5.index, strict=True):
        history = client.get_metric_history(runs[f"{model}-e1-s0"][0], "test_acc")
        assert t5.loc[name, "ours (1 ep)"] == f"{history[0].value:.2f}"
    assert_full_report(repo, 2)
    for figure in ("learning_curves", "receptive_field_growth", "vgg8_filters", "alexnet_feature_maps",
                   "vgg8_confusion"):
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


def exp_metrics(repo) -> dict[str, dict]:
    """Experiment or commit name -> its metrics.json, as `dvc exp show --json` reports it."""
    found = {}
    for row in json.loads(dvc("exp", "show", "--json", cwd=repo)):
        for entry in [row, *(rev for exp in row.get("experiments") or [] for rev in exp["revs"])]:
            found[entry.get("name") or entry["rev"]] = entry["data"]["metrics"]["metrics.json"].get("data")
    return found


def compare_with_dvc(repo, first):
    """DVC's own comparison of the committed 1-epoch run and the 2-epoch experiment."""
    shown = exp_metrics(repo)
    for name in ("main", "e2"):
        assert all(isinstance(shown[name][m]["acc"], float) for m in MODELS), shown[name]
    assert shown["main"] == first
    changed = {m for m in MODELS if shown["main"][m]["acc"] != shown["e2"][m]["acc"]}
    diff = json.loads(dvc("metrics", "diff", "main", "e2", "--json", cwd=repo))["metrics.json"]
    assert {k.split(".")[0] for k in diff if k.endswith(".acc")} == changed
    assert all(diff[f"{m}.acc"]["new"] == shown["e2"][m]["acc"] for m in changed)
    def curves(data):  # one plot per network, from dvc.yaml's per-network stages
        return {(r["rev"], path.split("/")[1], r["epoch"]) for path, plot in data.items()
                if path.endswith("history.csv") for r in plot[0]["content"]["data"]["values"]}

    plots = json.loads(dvc("plots", "diff", "main", "e2", "--json", cwd=repo))["data"]
    assert curves(plots) == {
        (rev, m, str(e)) for rev, epochs in (("main", 1), ("e2", 2)) for m in MODELS for e in range(1, epochs + 1)}
    assert {path for path in plots if path.endswith("confusion.csv")} == {f"outputs/{m}/eval/confusion.csv"
                                                                          for m in MODELS}
    # `dvc plots show`: the workspace's own curves (e2's, applied by `dvc exp run`)
    shown = json.loads(dvc("plots", "show", "--json", cwd=repo))
    assert not shown.get("errors"), shown["errors"]
    assert curves(shown["data"]) == {("workspace", m, str(e)) for m in MODELS for e in (1, 2)}
    out = sh([sys.executable, "-m", "stages.compare", "main", "e2"], repo)
    assert f"wrote reports/compare.png: test_acc of {len(MODELS)} models in main, e2" in out
    assert (repo / "reports/compare.png").read_bytes()[:4] == b"\x89PNG"


def restored_runs(db, originals):
    runs = finished_runs(db)
    assert len(runs) == len(MODELS) and set(runs["tags.restored"]) == {"true"}
    assert set(runs["tags.restored_from_run_id"]) == set(originals)
    return runs


@on_the_study
def test_a_deleted_store_is_refilled_from_the_outputs_without_training(repo):
    originals = {json.loads((repo / f"outputs/{m}/record.json").read_text())["mlflow_run_id"] for m in MODELS}
    original_acc = {r["run_id"]: r["metrics.final_test_acc"] for _, r in finished_runs(repo / "mlflow.db").iterrows()}
    (repo / "mlflow.db").unlink()
    out = dvc("repro", cwd=repo)
    assert "Running stage 'train@" not in out
    assert "logged vgg8-e2-s0 to MLflow from outputs/vgg8/record.json" in out
    runs = restored_runs(repo / "mlflow.db", originals)
    for _, run in runs.iterrows():
        assert run["metrics.final_test_acc"] == original_acc[run["tags.restored_from_run_id"]]
        history = mlflow.MlflowClient().get_metric_history(run["run_id"], "test_acc")
        assert sorted(m.step for m in history) == [1, 2]
    assert_full_report(repo, 2)
    assert "logged" not in dvc("repro", cwd=repo)  # once is enough
    assert len(finished_runs(repo / "mlflow.db")) == len(MODELS)


@on_the_study
def test_a_new_tracking_uri_gets_the_workspace_runs(repo):
    originals = {json.loads((repo / f"outputs/{m}/record.json").read_text())["mlflow_run_id"] for m in MODELS}
    team = repo / "team.db"
    dvc("repro", cwd=repo, MLFLOW_TRACKING_URI=f"sqlite:///{team}")
    restored_runs(team, originals)
    assert_full_report(repo, 2)
    team.unlink()


@on_the_study
def test_an_applied_experiment_from_another_store_is_logged(repo):
    elsewhere = repo.parent / "elsewhere.db"
    # one of the models: what is checked is the record's way between stores, not each model's
    out = dvc("exp", "run", "--temp", "-S", "epochs=3", "-S", f"models=[{','.join(LIGHT)}]", cwd=repo,
              MLFLOW_TRACKING_URI=f"sqlite:///{elsewhere}")
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    assert "vgg8-e3-s0" in runs_by_name(elsewhere) and "vgg8-e3-s0" not in runs_by_name(repo / "mlflow.db")
    dvc("exp", "apply", name, cwd=repo)
    out = dvc("repro", cwd=repo)
    assert "Running stage 'train@" not in out and "logged vgg8-e3-s0 to MLflow" in out
    assert_full_report(repo, 3)
    assert all(re.fullmatch(r"\d+\.\d\d", v) for v in table5(repo)["ours (2 ep)"])


@on_the_study
def test_a_clone_sharing_the_run_cache_restores_trainings_and_their_runs(repo, tmp_path):
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "two epochs"], repo)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    dvc("cache", "dir", str(repo / ".dvc" / "cache"), cwd=clone)
    out = dvc("repro", cwd=clone)
    assert "Running stage 'train@" not in out and "Running stage 'evaluate@" not in out
    assert "Stage 'train@vgg8' is cached - skipping run" in out
    assert len(finished_runs(clone / "mlflow.db")) == len(MODELS)
    assert_full_report(clone, 2)
    ours, theirs = table5(clone), table5(repo)
    assert ours["ours (2 ep)"].equals(theirs["ours (2 ep)"])


@contextlib.contextmanager
def queue_workers(repo, workers: int, log: Path):
    """`dvc queue start -j workers`, its output in ``log``, not in pipes: its workers are daemons
    that inherit them, and once (a clean-clone CI run) a worker whose kombu monitor had failed
    outlived its queue and kept `dvc queue start` from returning for 20 minutes, though both
    experiments had finished in 90 s. The test checks what the workers ran; on the way out,
    any worker still alive is stopped."""
    with open(log, "w") as out:
        starter = subprocess.Popen([sys.executable, "-m", "dvc", "queue", "start", "-j", str(workers)], cwd=repo,
                                   stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert starter.wait(timeout=120) == 0, log.read_text()
        yield
    finally:
        for pid_file in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
            with contextlib.suppress(ValueError, OSError):  # gone already, or no /proc to tell it by
                pid = int(pid_file.read_text().strip())
                if b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():  # never a reused pid
                    os.kill(pid, signal.SIGKILL)
        starter.kill()
        starter.wait()


def failed_tasks(status: str) -> list[str]:
    return [line.split()[1] for line in status.splitlines() if line.split()[-1:] == ["Failed"]]


def failed_task_logs(repo, names: list[str], workers: bool = True) -> str:
    """The output of each failed queue task, and (``workers``) the celery workers' own logs (a
    task that fails before its first stage has no output of its own: DVC issue 10673)."""
    logs = []
    for name in names:
        proc = subprocess.run([sys.executable, "-m", "dvc", "queue", "logs", name], cwd=repo, capture_output=True,
                              text=True, env=subprocess_env())
        logs.append(f"\n--- dvc queue logs {name}:\n{proc.stdout[-4000:]}{proc.stderr[-1000:]}")
    if names and workers:
        logs += [f"\n--- {log.name}:\n" + log.read_text(errors="replace")[-4000:]
                 for log in sorted((repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.out"))]
    return "".join(logs)


QUEUED = {"cl-off-e4": (4, "false"), "cl-on-e5": (5, "true")}  # name: epochs, runtime.channels_last


def queue_experiment(repo, name):
    epochs, channels_last = QUEUED[name]
    dvc("exp", "run", "--queue", "-n", name, "-S", "seed=1", "-S", f"epochs={epochs}", "-S",
        f"models=[{','.join(LIGHT)}]", "-S", f"runtime.channels_last={channels_last}", cwd=repo)


def finished_names(db: Path) -> set[str]:
    """The FINISHED runs' names in a SQLite store, read-only and without MLflow: a reader that
    opens a new store through MLflow runs its migrations too, and once (CI) collided with a
    training creating the same store. Cheap enough to poll, unlike `dvc queue status`."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as store:
            return {name for (name,) in store.execute("SELECT name FROM runs WHERE status = 'FINISHED'")}
    except sqlite3.OperationalError:  # no store yet
        return set()


def run_queue(repo, log: Path, wanted: set[str]) -> str:
    """Two workers on the queue until the ``wanted`` runs have finished, a task has failed, or
    480 s; the queue's status once no task runs any more."""
    failed = ["git", "rev-parse", "--verify", "-q", "refs/exps/celery/failed"]  # DVC's failed-task stash
    with queue_workers(repo, 2, log):
        deadline = time.time() + 480
        while time.time() < deadline and not wanted <= finished_names(repo / "mlflow.db"):
            if subprocess.run(failed, cwd=repo, capture_output=True).returncode == 0:
                break  # no point waiting out the deadline: say why it failed now
            time.sleep(3)
        status = dvc("queue", "status", cwd=repo)
        while time.time() < deadline and re.search(r"\b(Running|Queued)\s*$", status, re.MULTILINE):
            time.sleep(3)  # the runs have finished; DVC collects the experiments
            status = dvc("queue", "status", cwd=repo)
    return status


@pytest.mark.long
def test_queued_experiments_differing_in_runtime_fill_one_report(tmp_path, image_tarball):
    repo = fresh_project(tmp_path / "repo", image_tarball)  # needs no earlier run: runs beside the study
    # the data prepared first, as after a user's `dvc repro`: two workers that both run the same stage
    # race on its run-cache entry (DVC's: "No such file or directory: .dvc/cache/runs/…/….tmp")
    dvc("repro", "prepare", cwd=repo)
    sh(["git", "add", "dvc.lock"], repo)
    sh(["git", "commit", "-qm", "data prepared"], repo)
    for name in QUEUED:
        queue_experiment(repo, name)
    wanted = {f"{m}-e{e}-s1" for m in LIGHT for e in (4, 5)}
    status = run_queue(repo, tmp_path / "queue-start.log", wanted)
    if failed := failed_tasks(status):
        # DVC issue 10673 (open): with more than one worker a task can fail before its first stage,
        # with no output of its own. That is DVC's, not the project's: such a task is queued again,
        # once. A task whose stages ran and failed fails the test, with its output.
        logs = failed_task_logs(repo, failed)
        assert "Running stage" not in failed_task_logs(repo, failed, workers=False), status + logs
        warnings.warn(f"DVC issue 10673: queued {failed} failed before any stage ran; queued again:{logs}",
                      stacklevel=1)
        dvc("queue", "remove", "--failed", cwd=repo)
        for name in failed:
            queue_experiment(repo, name)
        status = run_queue(repo, tmp_path / "queue-restart.log", wanted)
    assert wanted <= finished_names(repo / "mlflow.db"), status + failed_task_logs(repo, failed_tasks(status))
    assert not (repo / ".dvc" / "tmp" / "exps" / "mlflow.db").exists()
    runs = finished_runs(repo / "mlflow.db")
    assert set(runs[runs["tags.mlflow.runName"] == "vgg8-e4-s1"]["params.runtime.channels_last"]) == {"False"}
    assert set(runs["tags.mlflow.source.name"]) == {repo.name}  # the repository by name, never a temporary copy
    # apply the 5-epoch one: the report takes the 4-epoch runs too, their runtime differs, not their recipe
    dvc("exp", "apply", "cl-on-e5", cwd=repo)
    dvc("repro", cwd=repo)
    assert_full_report(repo, 4)
    assert_full_report(repo, 5)


def test_compare_names_a_revision_that_gave_no_learning_curves(tmp_path, monkeypatch):
    """`dvc plots diff main tiny` on a fresh clone leaves `main` out without a word; compare says so,
    and why: main ran nothing (no dvc.lock: the reference run sits under its tag), or a run's
    outputs are not in this clone."""
    from stages.compare import missing_revisions, why_missing

    rows = [{"rev": "tiny", "filename": "vgg8/history.csv", "epoch": "1", "test_acc": "10.0"}]
    assert missing_revisions(rows, ["main", "tiny"]) == ["main"]
    assert missing_revisions(rows, ["tiny"]) == []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sh(["git", "init", "-q", "-b", "main"], tmp_path)
    sh(["git", "add", "-A"], tmp_path)
    sh(["git", "commit", "-qm", "code only"], tmp_path)
    assert "revision main holds no run (no dvc.lock there" in why_missing("main")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    sh(["git", "add", "-A"], tmp_path)
    sh(["git", "commit", "-qm", "a run"], tmp_path)
    assert "revision main has no learning curves here" in why_missing("main") and "`dvc pull`" in why_missing("main")
    assert "`dvc exp pull origin tiny`" in why_missing("tiny")
