"""All MLflow in one place: connect, start a training run, log epochs and artifacts, end it,
and log a run again from a training's own record when the store lacks it.

One store for every way a run starts (``dvc repro``, ``dvc exp run``, queued experiments
in a temporary copy of the repo), or a team server via MLFLOW_TRACKING_URI. A training
run carries its parameters and tags from its first moment, so a run that dies still says
what it was; ``NullRun`` is its no-op twin for ``--no-mlflow``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.common import Interrupted, StageError, plural, process_start_ticks, project_root
from stages.config import flatten

DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s")
STUDY = ("Four networks (AlexNet adapted to 32x32, VGG-16, VGG-16-BN, VGG-8) trained on CIFAR-10 with one "
         "recipe: SGD lr 0.01 (cosine), momentum 0.9, weight decay 5e-4, batch 128, random crop and flip. "
         "One run per training: compare them in the runs table (Model training), with the columns "
         "`params.model`, `params.epochs`, `params.seed`, `metrics.test_acc`, `metrics.eval/test_acc`.")
# MLflow's own mark of a model-training experiment. MLflow 3.17's UI ignores it (its GenAI /
# Model training switch decides which view opens), so README and the report give the link.
EXPERIMENT_TAGS = {"mlflow.note.content": STUDY, "mlflow.experimentKind": "custom_model_development"}
SUMMARY_METRICS = ("final_test_acc", "best_test_acc", "final_train_loss", "mean_epoch_time_s",
                   "mean_epoch_time_s_after_first", "num_parameters")


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite file ``mlflow.db`` at the real project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(root or project_root()) / DB_NAME}"


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first-time creation of a local SQLite store, so two queued experiments
    starting together do not both run its schema migrations."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(f"{_sqlite_path(uri)[0]}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _access_error(uri: str, err: Exception) -> StageError | None:
    """A server with authentication (``mlflow server --app-name basic-auth``) that refused the
    credentials (401) or this user's permission (403), as one line; None for any other error."""
    status = getattr(err, "get_http_status_code", lambda: None)()
    if status not in (401, 403):
        return None
    from mlflow.utils.credentials import read_mlflow_creds

    user = read_mlflow_creds().username
    if status == 401:
        who = f"wrong password for user {user!r}, or no such user" if user else "no credentials were given"
        return StageError(f"MLflow server {uri} refused authentication (401: {who}); set MLFLOW_TRACKING_USERNAME "
                          "and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) to your account on it")
    endpoint = re.search(r"endpoint /api/[\d.]+/mlflow/(\S+)", str(err))
    action = f" to {endpoint.group(1)}" if endpoint else ""
    return StageError(f"MLflow server {uri} denied user {user!r} permission (403){action}: training and evaluating "
                      "need EDIT on the experiment (READ builds the report); ask the server's admin to grant it")


# how long a start waits for a SQLite store another process holds locked (seconds)
LOCK_WAIT_S = float(os.environ.get("MLFLOW_STORE_LOCK_WAIT_S", "60"))
# what MLflow's schema migrations say when another process (without our lock: `mlflow ui`, a
# reader) runs them on the same new SQLite file at the same moment
CREATION_RACE = re.compile(r"already exists|duplicate column name|Online migration expected to match one row")


def _store_error(uri: str, err: Exception) -> StageError:
    """One line saying what is really wrong with a store; moving it aside is advised only
    when it truly cannot be read, with what that loses."""
    if (refused := _access_error(uri, err)) is not None:
        return refused
    first = str(err).splitlines()[0][:200] if str(err) else ""
    text = f"{type(err).__name__}: {first}"
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if "database is locked" in first:
            return StageError(f"MLflow store {path} stayed locked by another process for {LOCK_WAIT_S:g} s; find it "
                              f"with `fuser {path}`, let it finish (or stop it) and rerun")
        schema = re.search(r"found version (\w+)|Can't locate revision identified by '(\w+)'", first)
        if schema:
            return _schema_error(path, schema.group(1) or schema.group(2))
        if any(s in first for s in ("file is not a database", "malformed", "no such table", "not a database")):
            return _unreadable(path, f"is not a readable MLflow database ({text})")
        return StageError(f"MLflow store {path} failed ({text}); the file may be fine: check it with "
                          f"`sqlite3 {path} 'pragma integrity_check'` before moving anything")
    return StageError(f"MLflow tracking store {uri} is unreachable or unusable ({text}); "
                      "start the server or unset MLFLOW_TRACKING_URI to use the local mlflow.db")


def _unreadable(path, what: str) -> StageError:
    return StageError(f"MLflow store {path} {what}; move it aside (mv {path} {path}.bad) and rerun: the trainings "
                      "in outputs/ are logged again from their records, but other runs (other seeds, experiments) "
                      "stay only in the moved file")


def _schema_error(path: str, revision: str) -> StageError:
    """A store of another MLflow version: an older one is upgraded in place, a newer one is not ours to touch."""
    import mlflow
    from mlflow.store import db_migrations

    known = any(f.name.startswith(revision) for f in (Path(db_migrations.__file__).parent / "versions").glob("*.py"))
    if known:
        return StageError(f"MLflow store {path} was written by an older MLflow (schema {revision}); back it up "
                          f"(cp {path} {path}.backup) and upgrade it with `mlflow db upgrade sqlite:///{path}`")
    return StageError(f"MLflow store {path} was written by a newer MLflow than this one ({mlflow.__version__}; "
                      f"schema {revision}); open it with that version, or point MLFLOW_TRACKING_URI at another store")


def _deleted_experiment(uri: str, experiment) -> StageError:
    where = f"MLFLOW_TRACKING_URI={uri} "
    return StageError(f"MLflow experiment {experiment.name!r} (id {experiment.experiment_id}) is deleted (in MLflow's "
                      f"trash); restore it with `{where}mlflow experiments restore --experiment-id "
                      f"{experiment.experiment_id}`, or use another with -S mlflow.experiment=<name>")


def preload() -> None:
    """Import what ``connect`` and ``open_training_run`` need, without touching any store: a
    helper process does it while its training loads (stages.tracking_process)."""
    import mlflow.data.http_dataset_source
    import mlflow.data.meta_dataset  # noqa: F401

    if tracking_uri().startswith("sqlite:"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def connect(experiment: str, root: Path | None = None, create: bool = True):
    """(client, experiment id or None) for the store, creating the store and the experiment
    (with an explicit artifact location) when ``create``. An unreachable or corrupt store is
    one clear error before anything is trained or written."""
    # fail fast instead of MLflow's minutes of retries against a dead server
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables": noise
    root = root or project_root()
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    deadline = time.monotonic() + LOCK_WAIT_S
    collided = False  # another process was creating the same SQLite store at the same moment
    while True:
        try:
            return _open_experiment(mlflow, uri, root, experiment, create)
        except StageError:
            raise
        except Exception as err:
            collided = collided or isinstance(err, StoreRace) or bool(CREATION_RACE.search(str(err)))
            # another process is writing, or creating the store (`mlflow ui` on a new file): wait for
            # it, a bounded time
            if ("database is locked" in str(err) or collided) and time.monotonic() < deadline:
                time.sleep(1)
                continue
            raise _store_error(uri, err) from err


class StoreRace(Exception):
    """Another process created the SQLite store while this one was making it."""


def _sqlite_path(uri: str) -> tuple[Path, str]:
    """The file of a ``sqlite:///`` URI, and its query (``?timeout=30``) apart."""
    path, sep, query = uri.removeprefix("sqlite:///").partition("?")
    return Path(path), sep + query


def _create_sqlite_store(mlflow, uri: str) -> None:
    """A new SQLite store is made whole under a hidden name and linked into place; one that
    exists is opened only once whole. MLflow's migrations take no lock: two processes opening
    a new file together both run them, and one failed or left the file half made
    (test_a_store_another_process_is_creating_is_waited_for: 4 failures in 4 before this)."""
    path, query = _sqlite_path(uri)
    if path.exists():
        _wait_until_whole(path)
        return
    for stale in path.parent.glob(f".{path.name}.creating-*"):  # a creator killed midway (ours hold the lock)
        stale.unlink(missing_ok=True)
    part = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        mlflow.MlflowClient(f"sqlite:///{part}{query}").search_experiments(max_results=1)
        try:
            os.link(part, path)  # never replaces a store another process made meanwhile
        except FileExistsError as err:
            raise StoreRace(f"{path} was created by another process meanwhile") from err
        except OSError:  # a file system without hard links: moved, the one instant unguarded
            if not path.exists():
                os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _wait_until_whole(path: Path) -> None:
    """Return once an existing store is not being migrated by another process: at this MLflow's
    schema, or at one that stays put for a second (another MLflow's, or not a database: MLflow's
    own open names which). Read-only: opening it through MLflow would run the migrations twice."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    head, seen, deadline = _get_latest_schema_revision(), (), time.monotonic() + LOCK_WAIT_S
    steady_since = time.monotonic()
    while time.monotonic() < deadline:
        look = _schema_look(path)
        if look is not None and look == (head, ()):
            return
        if look != seen:
            seen, steady_since = look, time.monotonic()
        elif time.monotonic() - steady_since >= 1.0:
            if look is not None and look[1]:  # a migration's scratch tables, and nobody migrating
                raise _unreadable(path, f"was left half made by a process that stopped while creating it "
                                        f"(schema {look[0]}, tables {', '.join(look[1])})")
            return
        time.sleep(0.1)


def _schema_look(path: Path) -> tuple[str | None, tuple[str, ...]] | None:
    """A SQLite store's schema version and a migration's leftover scratch tables, read-only;
    None while a writer holds it (or it is no database)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.1)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = db.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
            return (version[0] if version else None), tuple(sorted(t for t in tables if t.startswith("_alembic_tmp_")))
    except sqlite3.DatabaseError:
        return None


def _open_experiment(mlflow, uri: str, root: Path, experiment: str, create: bool):
    client = None
    try:
        with _store_lock(uri):
            if uri.startswith("sqlite:///"):
                _create_sqlite_store(mlflow, uri)
            client = mlflow.MlflowClient(uri)  # a SQLite store is opened (and migrated) here
            found = client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise _deleted_experiment(uri, found)
            if found is not None or not create:
                if found is not None and create:  # an experiment made before the tags existed
                    for key, value in EXPERIMENT_TAGS.items():
                        if key not in found.tags:
                            with contextlib.suppress(Exception):  # a server may not let this user tag it
                                client.set_experiment_tag(found.experiment_id, key, value)
                return client, found.experiment_id if found else None
            location = None if uri.startswith(("http", "databricks")) else (root / ARTIFACT_DIR).as_uri()
            return client, client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
    except Exception as err:
        if client is not None and "already exists" in str(err):  # a server-side race: someone created it first
            return client, client.get_experiment_by_name(experiment).experiment_id
        raise


# the study's values of the settings ablations change (report.ablation_keys): a run that differs carries
# the difference in its name; batch size and data subsets, which tiny test and demo runs change, do not
STUDY_TRAIN = {"init": "default", "lr": 0.01}


# a re-encoded data variant's tarball (benchmarks/jpeg_variants.py): cifar10-jpeg-q50.tar.gz
JPEG_VARIANT = re.compile(r"-q(\d+)\.(?:tar\.gz|tgz|tar)$")


def distinctions(recipe: dict[str, Any]) -> list[str]:
    """What sets a run apart from the study's recipe: each ablation setting that differs
    (``init_kaiming``) and the JPEG quality of a re-encoded data variant (``jpeg_q25``)."""
    changed = [f"{key}_{value}" for key, value in recipe.get("train", {}).items()
               if key in STUDY_TRAIN and value != STUDY_TRAIN[key]]
    variant = JPEG_VARIANT.search(str(recipe.get("data", {}).get("source", "")))
    if variant:
        changed.append(f"jpeg_q{variant.group(1)}")
    return changed


def run_name(recipe: dict[str, Any]) -> str:
    """``<model>-e<epochs>-s<seed>``, then its ``distinctions`` (``vgg16-e40-s0-init_kaiming``,
    ``alexnet-e40-s0-jpeg_q25``), so that no variant shares a name with the recipe's run."""
    return "-".join([f"{recipe['model']}-e{recipe['epochs']}-s{recipe['seed']}", *distinctions(recipe)])


def run_label(recipe: dict[str, Any]) -> str:
    """The run in words for a figure's title: ``alexnet, 40 epochs, seed 0, jpeg_q25``."""
    return ", ".join([f"{recipe['model']}, {plural(recipe['epochs'], 'epoch')}, seed {recipe['seed']}",
                      *distinctions(recipe)])


def run_params(record: dict[str, Any]) -> dict[str, Any]:
    """The MLflow params of a training: its recipe, its data and the runtime that really ran."""
    return {**flatten(record["recipe"]), "data.sha256": record["provenance"]["data_sha256"],
            **flatten({"runtime": record["runtime"]}), "num_parameters": record["num_parameters"]}


def git_commits(record: dict[str, Any]) -> list[str]:
    """Every commit the training ran under, in order: the start's, then each resume's."""
    commits = [record["provenance"]["git_commit"], *(r["git_commit"] for r in record.get("resumed", []))]
    return list(dict.fromkeys(commits))


def run_tags(record: dict[str, Any]) -> dict[str, str]:
    prov = record["provenance"]
    return {
        "record_id": record["record_id"], "git_commit": prov["git_commit"],
        "git_commits": ",".join(git_commits(record)),
        "mlflow.source.git.commit": prov["git_commit"], "mlflow.source.type": "LOCAL",
        "mlflow.source.name": str(project_root()),  # the real repository, also for queued experiments
        "mlflow.runName": run_name(record["recipe"]),
        "dvc_exp_name": record.get("dvc_exp_name", ""), "dvc_stage": f"train@{record['recipe']['model']}",
        "device": record["runtime"]["device"], "device_name": prov["device_name"],
        "precision": record["runtime"]["precision"], "torch_version": prov["torch_version"],
        "data_sha256": prov["data_sha256"], "mlflow.note.content": description(record), **process_tags(),
    }


# ---------------------------------------------------------------- runs whose process died
def process_tags(pid: int | None = None) -> dict[str, str]:
    """Which process owns a RUNNING run (this one unless ``pid``): lets a later start tell a
    live run from an orphan."""
    pid = pid or os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_started": process_start_ticks(pid)}


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    now = process_start_ticks(pid)
    return not (started and now and now != started)


def _owned_by_live_process(run) -> bool:
    """Whether a RUNNING run belongs to a process of this host that is still alive."""
    tags = run.data.tags
    pid = int(tags.get("pid", "0") or 0)
    return tags.get("host") == socket.gethostname() and bool(pid) and _alive(pid, tags.get("pid_started", ""))


def sweep_orphans(client, experiment_id: str, keep: str | None = None) -> list[str]:
    """End as KILLED the runs of this experiment left RUNNING by a process of this host that no
    longer exists (SIGKILL, power loss), tagged so. Runs of live processes, of other hosts,
    and ``keep`` (the run being resumed) are left alone."""
    host = socket.gethostname()
    lines = []
    for run in client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and "
                                  f"tags.host = '{host}'", max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = int(tags.get("pid", "0") or 0)
        if run_id == keep or not pid or _owned_by_live_process(run):
            continue
        client.set_tag(run_id, "ended_by", f"sweep at a later start: its process {pid} on {host} had died "
                       "without ending it (killed or power loss)")
        client.set_terminated(run_id, "KILLED")
        lines.append(f"ended MLflow run {run_id} ({tags.get('mlflow.runName', '?')}) as KILLED: its process "
                     f"{pid} on {host} no longer exists")
    return lines


def description(record: dict[str, Any]) -> str:
    recipe, prov, summary = record["recipe"], record["provenance"], record.get("summary")
    train = recipe["train"]
    result = (f"**Result:** {summary['final_test_acc']:.2f}% test accuracy after {plural(recipe['epochs'], 'epoch')}, "
              f"{summary['mean_epoch_time_s']:.2f} s/epoch over all epochs, the first included"
              + (f"; {after:.2f} s/epoch after the first (the report's Table 6)"
                 if (after := summary.get("mean_epoch_time_s_after_first")) else "") + "."
              if summary else "**Result:** training…")
    return "\n".join([
        f"**{recipe['model']}**, {recipe['epochs']} epochs, seed {recipe['seed']}: SGD lr {train['lr']} (cosine), "
        f"momentum {train['momentum']}, weight decay {train['weight_decay']}, batch {train['batch_size']}, "
        f"init {train['init']}.",
        f"**Data:** `{recipe['data']['source']}` (sha256 {prov['data_sha256'][:12]}…), train subset "
        f"{recipe['data']['train_subset'] or 'all'}, test subset {recipe['data']['test_subset'] or 'all'}.",
        f"**Ran on** {prov['device_name']} ({record['runtime']['precision']}), torch {prov['torch_version']}, "
        f"git {', then '.join(c[:10] for c in git_commits(record))}"
        f"{' (resumed under a later commit; same training code)' if len(git_commits(record)) > 1 else ''}, "
        f"DVC experiment `{record.get('dvc_exp_name') or '-'}`.",
        result])


class NullRun:
    """The no-op twin of ``TrainingRun`` (``--no-mlflow``)."""

    run_id = None

    def log_epoch(self, record: dict) -> None:
        pass

    def finish(self, record: dict, artifacts: list[Path]) -> None:
        pass


class TrackingOffline(StageError):
    """The tracking store went away and did not come back before the training ended."""


# A busy server (429, 503, a SQLite store locked by another writer, which an MLflow server
# answers with 500) answers again within seconds, unlike one that is gone: wait and retry it.
BUSY = re.compile(r"database is locked|too many (?:429|500|502|503|504) error responses|"
                  r"error code (?:429|502|503|504)\b")
BUSY_WAITS_S = (0.25, 0.5, 1, 2, 4, 8)  # about 16 s in all; then the epochs wait for the next flush


# Two trainings that start together on data the store has not seen both insert its dataset: the
# store checks for it, then inserts, so one of them hits the table's unique key (sqlite, postgres).
# The second try finds the other's row and links it.
DATASET_RACE = re.compile(r"UNIQUE constraint failed: datasets\.|duplicate key value violates unique constraint")


def log_dataset(client, run_id: str, dataset) -> None:
    """Link ``dataset`` to the run, once more if a concurrent run inserted it first."""
    for attempt in range(3):
        try:
            return _retry_busy(lambda: client.log_inputs(run_id, datasets=[dataset]))
        except Exception as err:
            if attempt == 2 or not DATASET_RACE.search(str(err)):
                raise
            time.sleep(0.1 * (attempt + 1))


def _retry_busy(call):
    """``call()``, again after a short wait while the store says it is busy."""
    for wait in (*BUSY_WAITS_S, None):
        try:
            return call()
        except Exception as err:
            if wait is None or not BUSY.search(str(err)):
                raise
            time.sleep(wait)


class TrainingRun:
    """A training's run: epochs are logged as they end; while the store is unreachable
    they wait in memory (and in the saved training state) and go in once it answers."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.pending: list[dict] = []
        self.offline_since: int | None = None

    def _flush(self) -> bool:
        from mlflow.entities import Metric

        if not self.pending:
            return True
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(r[k]), now, r["epoch"]) for r in self.pending for k in EPOCH_METRICS]
        try:
            for start in range(0, len(metrics), 1000):  # MLflow's batch limit; a batch sent twice is deduplicated
                _retry_busy(lambda start=start: self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000]))
        except Exception as err:
            if self.offline_since is None:
                self.offline_since = self.pending[0]["epoch"]
                print(f"warning: MLflow store {tracking_uri()} unreachable at epoch {self.offline_since} "
                      f"({type(err).__name__}); training goes on, its metrics wait here", file=sys.stderr)
            return False
        if self.offline_since is not None:
            print(f"MLflow store is back: logged epochs {self.pending[0]['epoch']}-{self.pending[-1]['epoch']}",
                  file=sys.stderr)
            self.offline_since = None
        self.pending.clear()
        return True

    def log_epoch(self, record: dict) -> None:
        self.pending.append(record)
        self._flush()

    def catch_up(self, history: list[dict]) -> None:
        """Log the epochs of ``history`` the run lacks (a resumed run, a store that was down)."""
        try:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, "test_acc")}
        except Exception:
            logged = set()
        self.pending = [h for h in history if h["epoch"] not in logged] + self.pending
        self._flush()

    def finish(self, record: dict, artifacts: list[Path]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        try:
            if not self._flush():
                raise ConnectionError("still unreachable")
            summary = [Metric(k, float(record["summary"][k]), now, 0) for k in SUMMARY_METRICS]
            _retry_busy(lambda: self.client.log_batch(self.run_id, metrics=summary,
                                                      tags=[RunTag("mlflow.note.content", description(record))]))
            for path in artifacts:
                _retry_busy(lambda path=path: self.client.log_artifact(self.run_id, str(path)))
        except Exception as err:
            raise TrackingOffline(
                f"MLflow store {tracking_uri()} is unreachable ({type(err).__name__}), so run {self.run_id} "
                f"is not complete there; the training is saved locally (outputs/{record['recipe']['model']} "
                "and its training state): rerun `dvc repro` once the store is back to log it without "
                "training again") from err


def _open_run(client, experiment_id: str, record: dict, start_time: int | None = None, extra_tags=None):
    from mlflow.entities import Param

    tags = {**run_tags(record), **(extra_tags or {})}
    from stages.run_content import dataset_input

    run = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name(record["recipe"]))
    try:
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in run_params(record).items()])
        log_dataset(client, run.info.run_id, dataset_input(record, "training"))
    except Exception:  # a run that could not be opened whole is not left RUNNING
        with contextlib.suppress(Exception):
            client.set_terminated(run.info.run_id, status="FAILED")
        raise
    return run.info.run_id


def _reopen(client, experiment_id: str, run_id: str, epochs_done: int, record: dict,
            owner: dict[str, str]) -> str | None:
    """Reopen a resumed training's run in this store, or None if the store lacks it; its tags
    then name every commit the training ran under."""
    try:
        run = client.get_run(run_id)
    except Exception:
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    from mlflow.entities import RunTag

    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in
                                   {**owner, "resumed_after_epoch": str(epochs_done),
                                    "git_commits": ",".join(git_commits(record)),
                                    "mlflow.note.content": description(record)}.items()])
    return run_id


def open_training_run(client, experiment_id: str, record: dict, history: list[dict] | None = None,
                      log=print, owner_pid: int | None = None) -> TrainingRun:
    """Open the training's run with its params and tags, or reopen it when the training
    resumes (``record["mlflow_run_id"]``, ``history`` its finished epochs). Runs of dead
    processes are swept first. ``owner_pid``: the training's process, when another one
    (stages.tracking_process) keeps its run."""
    resumed = record.get("mlflow_run_id")
    owner = process_tags(owner_pid)
    try:
        for line in sweep_orphans(client, experiment_id, keep=resumed):
            log(line)
        run_id = _reopen(client, experiment_id, resumed, len(history or []), record, owner) if resumed else None
        if resumed and run_id is None:
            log(f"the MLflow store lacks run {resumed} of this training; logging it as a new run")
        run_id = run_id or _open_run(client, experiment_id, record, extra_tags=owner)
    except Exception as err:
        raise _store_error(tracking_uri(), err) from err
    run = TrainingRun(client, run_id)
    run.catch_up(history or [])
    return run


def end_status(err: BaseException | None) -> tuple[str | None, str | None]:
    """How a training's run ends when ``err`` (None: none) ended the training: (status, why).
    Ctrl-C and SIGTERM end it KILLED; a store gone away leaves it open (status None), for the
    next start to complete; anything else (a diverged loss, a full disk, a bug) FAILED, with why."""
    if err is None:
        return "FINISHED", None
    if isinstance(err, (KeyboardInterrupt, Interrupted)):
        return "KILLED", None
    if isinstance(err, TrackingOffline):
        return None, None
    return "FAILED", f"{type(err).__name__}: {err}"[:4000]


def end_training_run(client, run_id: str, status: str | None, why: str | None = None) -> None:
    """End the run as ``end_status`` says; a failure to do so is a warning, never hiding the
    error that ended the training."""
    if why:
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "failed_because", why)
    if status is None:
        return
    try:
        client.set_terminated(run_id, status)
    except Exception as err:
        print(f"warning: could not mark MLflow run {run_id} {status} ({type(err).__name__})", file=sys.stderr)


# ---------------------------------------------------------------- DVC and MLflow in step
def find_run(client, experiment_id: str, record_id: str, finished: bool = True):
    """The finished run of this store that logged the training ``record_id``, or None; with
    ``finished=False`` any live run of it, a finished one first."""
    status = " and attributes.status = 'FINISHED'" if finished else ""
    runs = client.search_runs([experiment_id], filter_string=f"tags.record_id = '{record_id}'{status}",
                              max_results=100)
    runs.sort(key=lambda run: run.info.status != "FINISHED")
    return runs[0] if runs else None


def complete_run(client, found, record: dict, artifacts: list[Path]) -> None:
    """Finish from its record the run of a training that completed while its run did not (the
    store went away before the end, or a sweep ended the run of its dead process): the
    missing epochs, the summary, the artifacts, FINISHED at the training's end."""
    from mlflow.entities import RunTag

    run_id = found.info.run_id
    run = TrainingRun(client, run_id)
    run.catch_up(record["history"])
    run.finish(record, artifacts)
    if "ended_by" in found.data.tags:  # the sweep's "killed" no longer holds
        client.delete_tag(run_id, "ended_by")
    client.log_batch(run_id, tags=[RunTag("completed_by", f"the report stage, from the training's record: the "
                                          f"training completed but its run was left {found.info.status}")])
    client.set_terminated(run_id, "FINISHED", end_time=record.get("ended_ms") or int(time.time() * 1000))


def restore_run(client, experiment_id: str, record: dict, artifacts: list[Path]) -> str:
    """Log a finished training to this store from its record, without training: the same
    params, tags, per-epoch metrics and artifacts, tagged as restored."""
    from mlflow.entities import Metric

    run_id = _open_run(client, experiment_id, record, start_time=record.get("started_ms"), extra_tags={
        "restored": "true", "restored_from_run_id": str(record.get("mlflow_run_id")),
        "restored_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    ended = record.get("ended_ms") or int(time.time() * 1000)
    metrics = [Metric(k, float(h[k]), ended, h["epoch"]) for h in record["history"] for k in EPOCH_METRICS]
    metrics += [Metric(k, float(record["summary"][k]), ended, 0) for k in SUMMARY_METRICS]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED", end_time=ended)
    return run_id


def ensure_logged(record_paths: list[Path], experiment: str, log_model: bool = False) -> tuple[list[str], set[str]]:
    """For every training record in the workspace, make sure the current store holds its run,
    and its evaluation where the workspace has one; log what is missing from the record and
    the evaluate stage's outputs. Returns one line per run logged or completed, and the
    records' ids (the trainings DVC has in the workspace)."""
    from stages.run_content import EVAL_MARK, log_evaluation

    if not record_paths:
        return [], set()
    client, experiment_id = connect(experiment)
    lines, record_ids = [], set()
    for path in record_paths:
        try:
            record = json.loads(path.read_text())
            missing = {"record_id", "recipe", "runtime", "provenance", "history", "summary"} - set(record)
        except (OSError, ValueError) as err:
            raise StageError(f"{path} is not a readable training record ({err}); restore it with "
                             f"`dvc checkout {path}`") from err
        if missing:
            raise StageError(f"{path} is not a training record of this project (no {', '.join(sorted(missing))}); "
                             f"restore it with `dvc checkout {path}`")
        record_ids.add(record["record_id"])
        eval_dir, checkpoint = path.with_name("eval"), path.with_name("checkpoint.pt")
        try:
            found = find_run(client, experiment_id, record["record_id"], finished=False)
            siblings = [p for p in (path.with_name("history.csv"), path.with_name("metrics.json")) if p.exists()]
            if found is None:
                run_id = restore_run(client, experiment_id, record, [path, *siblings])
                lines.append(f"logged {run_name(record['recipe'])} to MLflow from {path} (run {run_id}, restored "
                             f"from {record.get('mlflow_run_id') or 'an untracked training'})")
            elif found.info.status == "RUNNING" and _owned_by_live_process(found):
                lines.append(f"MLflow run {found.info.run_id} of {run_name(record['recipe'])} is still being "
                             f"written by process {found.data.tags['pid']}; left as it is")
                continue
            else:
                run_id = found.info.run_id
                if found.info.status != "FINISHED":  # complete it: a second run would double the training
                    complete_run(client, found, record, [path, *siblings])
                    lines.append(f"completed MLflow run {run_id} ({run_name(record['recipe'])}, left "
                                 f"{found.info.status}) from {path}")
                    found = client.get_run(run_id)
            if (eval_dir / "metrics.json").exists() and (found is None or EVAL_MARK not in found.data.metrics):
                model_found = log_evaluation(client, run_id, record, eval_dir,
                                             checkpoint if log_model and checkpoint.exists() else None)
                lines.append(f"logged the evaluation of {run_name(record['recipe'])} to MLflow run {run_id}"
                             + (f" (its model was there already: {model_found})" if model_found else ""))
        except StageError:
            raise
        except Exception as err:
            raise _store_error(tracking_uri(), err) from err
    return lines, record_ids


def runs_table_link(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table: MLflow 3.17's UI opens an experiment on its GenAI
    view unless the URL (or the browser's last choice) says Model training."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    if uri.startswith("sqlite:///"):  # artifacts beside the database, also a copied store's mlflow-artifacts:/ URIs
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / ARTIFACT_DIR
        return (f"`mlflow server --backend-store-uri {uri} --serve-artifacts --artifacts-destination {artifacts}`, "
                f"then http://127.0.0.1:5000/{page}")
    return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"


def finished_runs(experiment: str):
    """All finished runs of the experiment as a DataFrame (newest first), or an empty one."""
    import mlflow
    import pandas as pd

    client, experiment_id = connect(experiment, create=False)
    if experiment_id is None:
        return pd.DataFrame()
    try:
        return mlflow.search_runs([experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=50000)
    except Exception as err:
        raise _store_error(tracking_uri(), err) from err
