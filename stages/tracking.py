"""MLflow plumbing: one store for every way a run starts (``dvc repro``, ``dvc exp run``,
queued experiments in a temporary copy of the repo), or a team server via
MLFLOW_TRACKING_URI."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.common import StageError, project_root

DEFAULT_EXPERIMENT = "alexnet-vgg-cifar10"
DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite file ``mlflow.db`` at the real project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(root or project_root()) / DB_NAME}"


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first-time creation of a local SQLite store, so two queued experiments
    starting together do not both run its schema migrations."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(experiment: str = DEFAULT_EXPERIMENT, root: Path | None = None) -> str:
    """Point MLflow at the store, create it and the experiment (with an explicit artifact
    location) if missing, and return the experiment id. An unreachable store is one
    clear error before any training starts."""
    # fail fast instead of MLflow's minutes of retries against a dead server
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow

    root = root or project_root()
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    try:
        with _store_lock(uri):
            found = mlflow.get_experiment_by_name(experiment)
            if found is not None:
                return found.experiment_id
            location = None if uri.startswith(("http", "databricks")) else (root / ARTIFACT_DIR).as_uri()
            return mlflow.create_experiment(experiment, artifact_location=location)
    except Exception as err:
        if "already exists" in str(err):  # a server-side race: someone created it first
            return mlflow.get_experiment_by_name(experiment).experiment_id
        raise StageError(f"MLflow tracking store {uri} is unreachable or unusable ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); start the server or unset "
                         "MLFLOW_TRACKING_URI to use the local mlflow.db") from err


def finished_runs(experiment: str = DEFAULT_EXPERIMENT, root: Path | None = None):
    """All finished runs of the experiment as a DataFrame (newest first), or an empty one."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        import pandas as pd

        return pd.DataFrame()
    return mlflow.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
