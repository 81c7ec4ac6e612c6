"""The MLflow store: open it (a local SQLite file or a team server), create the study's
experiment, and say in one line what is wrong when it cannot be used.

One store for every way a run starts (``dvc repro``, ``dvc exp run``, queued experiments
in a temporary copy of the repo), or a team server via MLFLOW_TRACKING_URI. A new SQLite
store is made whole before anyone else opens it (MLflow's migrations take no lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from study.errors import StageError
from study.paths import project_root
from study.tracking.relocate import ARTIFACT_DIR, follow_the_project

DB_NAME = "mlflow.db"


def study_text() -> str:
    """The experiment's description: the study's recipe, as the paper states it."""
    from study.recipe import RECIPE

    return ("AlexNet and VGG networks trained on CIFAR-10 with the study's recipe (its section 5.1): "
            f"SGD lr {RECIPE['lr']:g} (cosine), momentum {RECIPE['momentum']:g}, weight decay "
            f"{RECIPE['weight_decay']:g}, batch {RECIPE['batch_size']}, random crop and flip. One run per training: "
            "compare them in the runs table (Model training), with the columns `params.model`, `params.epochs`, "
            "`params.seed`, `metrics.test_acc`, `metrics.eval/test_acc`.")


# MLflow's own mark of a model-training experiment. MLflow 3.17's UI ignores it (its GenAI /
# Model training switch decides which view opens), so README and the report give the link.
def experiment_tags() -> dict[str, str]:
    return {"mlflow.note.content": study_text(), "mlflow.experimentKind": "custom_model_development"}


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


def _http_status(err: Exception) -> int | None:
    """The HTTP status an MLflow error carries (a server's answer), else None."""
    return getattr(err, "get_http_status_code", lambda: None)()


def forbidden(err: Exception) -> bool:
    """A server with authentication that refused this user's permission (403)."""
    return _http_status(err) == 403


def current_user() -> str | None:
    """The user MLflow sends: its variables or credentials file, else the tracking URI's own user."""
    from urllib.parse import urlsplit

    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username or urlsplit(tracking_uri()).username


def _access_error(uri: str, err: Exception) -> StageError | None:
    """A server with authentication (``mlflow server --app-name basic-auth``) that refused the
    credentials (401) or this user's permission (403), as one line; None for any other error."""
    status = _http_status(err)
    if status not in (401, 403):
        return None
    user = current_user()
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


# a full disk under the store, as SQLite, MLflow's server and the OS say it
DISK_FULL = re.compile(r"database or disk is full|No space left on device|\[Errno 28\]|SQLITE_FULL")


def out_of_space(uri: str, err: BaseException) -> str | None:
    """``MLflow store <path> is out of disk space (<free> free there)`` when ``err`` or what caused it
    says a disk is full (the database's, or the artifacts' where a file write failed); else None."""
    chain, seen = [], err
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if not any(DISK_FULL.search(str(e)) or getattr(e, "errno", None) == errno.ENOSPC for e in chain):
        return None
    written = next((Path(e.filename) for e in chain if isinstance(e, OSError) and e.filename), None)
    if written is None and not uri.startswith("sqlite:///"):
        return f"MLflow server {store_label(uri)} is out of disk space (its store says so); ask its admin to free some"
    where = written.parent if written is not None else _sqlite_path(uri)[0]
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return f"MLflow store {where} is out of disk space ({free / 1e6:.1f} MB free there)"


def store_error(uri: str, err: Exception) -> StageError:
    """One line saying what is really wrong with a store; moving it aside is advised only
    when it truly cannot be read, with what that loses."""
    if (refused := _access_error(uri, err)) is not None:
        return refused
    if (full := out_of_space(uri, err)) is not None:
        return StageError(f"{full}; free space there and rerun")
    first = str(err).splitlines()[0][:200] if str(err) else ""
    text = f"{type(err).__name__}: {first}"
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if _lfs_pointer(Path(path)):
            return StageError(f"MLflow store {path} is a Git LFS pointer, not the database: fetch the file itself "
                              "(`git lfs pull`, or the store's whole folder) and rerun")
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
    if not uri.startswith(("http://", "https://", "databricks")) and "maintenance mode" in first:
        return StageError(f"MLflow tracking store {uri} is MLflow's file store, which this MLflow no longer serves "
                          "fully; set MLFLOW_TRACKING_URI to a database store (sqlite:///mlflow.db, what an unset one "
                          "uses) or a server")
    return StageError(f"MLflow tracking store {uri} is unreachable or unusable ({text}); "
                      "start the server or unset MLFLOW_TRACKING_URI to use the local mlflow.db")


def _lfs_pointer(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(40).startswith(b"version https://git-lfs.github.com/spec/")
    except OSError:
        return False


def require_store(uri: str) -> None:
    """Refuse, in one line, to read a local store that does not exist: opening it would create
    an empty one (a command that only reads must leave no store behind)."""
    if uri.startswith("sqlite:///") and not _sqlite_path(uri)[0].exists():
        raise StageError(f"no MLflow store at {_sqlite_path(uri)[0]}: train the study's recipe first (`dvc repro`), "
                         "or set MLFLOW_TRACKING_URI to the store that holds it")


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


# the name a project gave its experiment, kept as a tag: a rename in the UI (an EDIT member may) is
# found and named, never replaced by a new, empty experiment of the old name
PIN_TAG = "study_experiment"


def store_label(uri: str) -> str:
    """The store as printed: a SQLite file's path, a server without its user information."""
    from study.console import redact

    return uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else redact(uri)


def _refuse_renamed(client, uri: str, experiment: str) -> None:
    """Stop in one line when the experiment this project writes to was renamed: which one holds its runs
    now, and how to point the project at it."""
    from mlflow.entities import ViewType

    moved = [e for e in client.search_experiments(view_type=ViewType.ALL, max_results=1000)
             if e.tags.get(PIN_TAG) == experiment]  # compared here: a name may hold quotes
    if not moved:
        return
    now = moved[0]
    trash = " (now in MLflow's trash)" if now.lifecycle_stage == "deleted" else ""
    raise StageError(f"MLflow experiment {experiment!r} is not in {store_label(uri)}: it was renamed to {now.name!r} "
                     f"(id {now.experiment_id}){trash}, which holds its runs; point the project at it with "
                     f"`dvc exp run -S mlflow.experiment='{now.name}'` (or mlflow.experiment in params.yaml), or "
                     f"rename it back to {experiment!r} in the MLflow UI")


def preload() -> None:
    """Import what ``connect`` and ``open_training_run`` need, without touching any store: a
    helper process does it while its training loads (study.tracking.process)."""
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

    # "Creating initial tables" is noise, and each failed query's traceback too: the error itself is raised
    # to the caller, who says it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
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
            raise store_error(uri, err) from err


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
                if (moved := follow_the_project(_sqlite_path(uri)[0], root)) is not None:
                    print(moved)
            client = mlflow.MlflowClient(uri)  # a SQLite store is opened (and migrated) here
            found = client.get_experiment_by_name(experiment)
            if found is None:
                _refuse_renamed(client, uri, experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise _deleted_experiment(uri, found)
            if found is not None or not create:
                if found is not None and create:  # an experiment made before the tags (or the pin) existed
                    for key, value in {**experiment_tags(), PIN_TAG: experiment}.items():
                        if key not in found.tags:
                            with contextlib.suppress(Exception):  # a server may not let this user tag it
                                client.set_experiment_tag(found.experiment_id, key, value)
                return client, found.experiment_id if found else None
            location = None if uri.startswith(("http", "databricks")) else (root / ARTIFACT_DIR).as_uri()
            created = client.create_experiment(experiment, artifact_location=location,
                                               tags={**experiment_tags(), PIN_TAG: experiment})
            print(f"created MLflow experiment {experiment!r} (id {created}) in {store_label(uri)}")
            return client, created
    except Exception as err:
        if client is not None and "already exists" in str(err):  # a server-side race: someone created it first
            return client, client.get_experiment_by_name(experiment).experiment_id
        raise


# the study's values of the settings ablations change (report.ablation_keys): a run that differs carries



# A busy server (429, 503, a SQLite store locked by another writer, which an MLflow server
# answers with 500) answers again within seconds, unlike one that is gone: wait and retry it.
BUSY = re.compile(r"database is locked|too many (?:429|500|502|503|504) error responses|"
                  r"error code (?:429|502|503|504)\b")
BUSY_WAITS_S = (0.25, 0.5, 1, 2, 4, 8)  # about 16 s in all; then the epochs wait for the next flush


def retry_busy(call):
    """``call()``, again after a short wait while the store says it is busy."""
    for wait in (*BUSY_WAITS_S, None):
        try:
            return call()
        except Exception as err:
            if wait is None or not BUSY.search(str(err)):
                raise
            time.sleep(wait)



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
        raise store_error(tracking_uri(), err) from err
