"""What a training's MLflow run holds beyond params and per-epoch metrics: the dataset as
an input, the evaluation (per-class metrics, figures, the run's learning curve), the
trained model as an MLflow model, and system metrics while it trains.

Called by the train stage (dataset, system metrics), the evaluate stage (evaluation,
model) and the report stage (the same for a run it logs again from a training's record).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study.provenance import now_ms
from study.tracking.naming import run_label
from study.tracking.store import retry_busy

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
EVAL_MARK = "eval/test_acc"  # a run holding this metric has its evaluation logged


# Two trainings that start together on data the store has not seen both insert its dataset: the
# store checks for it, then inserts, so one of them hits the table's unique key (sqlite, postgres).
# The second try finds the other's row and links it.
DATASET_RACE = re.compile(r"UNIQUE constraint failed: datasets\.|duplicate key value violates unique constraint")


def log_dataset(client, run_id: str, dataset) -> None:
    """Link ``dataset`` to the run, once more if a concurrent run inserted it first."""
    for attempt in range(3):
        try:
            return retry_busy(lambda: client.log_inputs(run_id, datasets=[dataset]))
        except Exception as err:
            if attempt == 2 or not DATASET_RACE.search(str(err)):
                raise
            time.sleep(0.1 * (attempt + 1))



def dataset_name(source: str, split: str, subset: int) -> str:
    """What the data is, by source and split: ``cifar10-official-train``, ``cifar10-jpeg-test``,
    ``cifar10-jpeg-q25-train``; a subset adds its size (``cifar10-jpeg-train-300``)."""
    if source == "official":
        stem = "cifar10-official"
    else:
        stem = Path(source.rstrip("/")).name
        for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
            stem = stem.removesuffix(suffix)
    return f"{stem}-{split}" + (f"-{subset}" if subset else "")


def dataset_schema():
    """The prepared arrays as MLflow sees them: uint8 NHWC images, int64 labels."""
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    return Schema([TensorSpec(np.dtype(np.uint8), (-1, 32, 32, 3), "image"),
                   TensorSpec(np.dtype(np.int64), (-1,), "label")])


def portable_source(source: str) -> str:
    """A local ``data.source`` as any reader can find it: relative to the project when it is
    inside it or was given relative, else by its name alone (an absolute path is one machine's)."""
    from study.paths import project_root

    path = Path(source)
    if not path.is_absolute():
        return source
    root = project_root().resolve()
    return path.resolve().relative_to(root).as_posix() if path.resolve().is_relative_to(root) else path.name


def dataset_input(record: dict[str, Any], context: str):
    """The split a run trained or was evaluated on as an MLflow dataset input: named by source and
    split, its source the ``data.source`` with no machine's path (``portable_source``), the arrays'
    schema, the digest of that split's own arrays (as trained on: the subset, where one was taken)
    and its profile (images, one image's shape, count per class). MLflow keeps a digest of at
    most 36 characters: the first 32 of the split's sha256 (the whole one is in the record's
    ``provenance.data_splits``). A record made before splits were recorded has the whole data's."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    data = record["recipe"]["data"]
    source = data["source"]
    if source == "official":
        origin = HTTPDatasetSource(OFFICIAL_URL)
    else:  # MLflow's local-file source type, given the source as a reader can find it
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # "can be interpreted in multiple ways": twice the same local source
            warnings.simplefilter("ignore", UserWarning)
            local = type(resolve_dataset_source(Path(source).resolve().as_uri()))
        origin = local(portable_source(source))
    split = "train" if context == "training" else "test"
    profile = record["provenance"].get("data_splits", {}).get(split)
    digest = (profile or {}).get("sha256", record["provenance"]["data_sha256"])[:32]
    dataset = _profiled()(origin, name=dataset_name(source, split, data[f"{split}_subset"]), digest=digest,
                              schema=dataset_schema(), profile={k: v for k, v in (profile or {}).items()
                                                                if k != "sha256"} or None)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


@functools.cache
def _profiled():  # MLflow's dataset classes load with the first dataset, not with this module
    from mlflow.data.meta_dataset import MetaDataset

    class ProfiledDataset(MetaDataset):
        """MLflow's MetaDataset with a profile (MLflow's own gives none)."""

        def __init__(self, source, name: str, digest: str, schema, profile: dict | None):
            super().__init__(source, name=name, digest=digest, schema=schema)
            self._profile = profile

        @property
        def profile(self):
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), **({"profile": json.dumps(self._profile)} if self._profile else {})}

    return ProfiledDataset


@contextlib.contextmanager
def system_metrics(run_id: str, enabled: bool) -> Iterator[None]:
    """CPU, memory, disk and network (and GPU where NVML is installed) every 5 s into the
    run, from a background thread that never touches the training loop."""
    if not enabled:
        yield
        return
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # one missing GPU library is no news, and a store that fails says so once, from the training's own logging
    logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=5)  # short GPU trainings last seconds
    monitor.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a store gone away must not hide how training ended
            monitor.finish()


def _learning_curve(record: dict[str, Any], path: Path) -> None:
    from study.figures import plot_curves

    history = record["history"]
    recipe = record["recipe"]
    plot_curves([{"epochs": [h["epoch"] for h in history], "test_acc": [h["test_acc"] for h in history],
                  "train_loss": [h["train_loss"] for h in history], "style": "-", "color": "C0",
                  "label": recipe["model"]}], path,
                f"{run_label(recipe)} ({record['provenance']['device_name']})")


def log_evaluation_artifacts(client, run_id: str, record: dict[str, Any], eval_dir: Path) -> None:
    """The evaluation's figures and tables, and the run's learning curve, as the run's artifacts."""
    for figure in sorted((eval_dir / "figures").glob("*.png")):
        client.log_artifact(run_id, str(figure), "figures")
    for table in ("per_class.csv", "confusion.csv"):
        if (eval_dir / table).exists():
            client.log_artifact(run_id, str(eval_dir / table), "eval")
    with tempfile.TemporaryDirectory() as tmp:
        curve = Path(tmp) / "learning_curve.png"
        _learning_curve(record, curve)
        client.log_artifact(run_id, str(curve), "figures")


def log_evaluation(client, run_id: str, record: dict[str, Any], eval_dir: Path, checkpoint: Path | None) -> str | None:
    """Log the evaluate stage's outputs into the training's run: metrics, per-class metrics,
    figures, tables, the evaluation dataset, and the model when ``checkpoint`` is given. Returns
    the id of that checkpoint's model when the run held it already (study.tracking.model_log)."""
    from mlflow.entities import Metric, RunTag

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    now = now_ms()
    step = record["recipe"]["epochs"]
    # every number the evaluation wrote, under eval/ (test_acc last, as the mark), each class's accuracy
    values = {**{f"eval/{k}": v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "test_acc"},
              **{f"test_acc_class/{cls}": acc for cls, acc in metrics["per_class_acc"].items()}}
    held = client.get_run(run_id).data.metrics  # an earlier attempt that lost its store logged some: once each
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()
                                      if held.get(k) != float(v)])
    evaluation = dataset_input(record, "evaluation")
    log_dataset(client, run_id, evaluation)
    log_evaluation_artifacts(client, run_id, record, eval_dir)
    model_id, found = None, None
    if checkpoint is not None:
        from study.tracking.model_log import log_model  # torch and torch.export: only when a model is logged

        model_id, already = log_model(client, run_id, record, checkpoint)
        found = model_id if already else None
    # the mark last: a run that has it has all of the above, else the report stage logs it again. It
    # names the model and the test set it measured, so the model's page lists the dataset it was evaluated on
    mark = Metric(EVAL_MARK, float(metrics["test_acc"]), now, step, model_id=model_id,
                  dataset_name=evaluation.dataset.name, dataset_digest=evaluation.dataset.digest)
    again = held.get(EVAL_MARK) == mark.value and (model_id is None or found is not None)  # nothing new to link
    client.log_batch(run_id, metrics=[] if again else [mark], tags=[RunTag("evaluated", "true")])
    return found


def log_environment(client, run_id: str, record: dict) -> None:
    """environment.txt: the environment the training ran in, from its record (none for a record
    made before the environment was recorded)."""
    from study.environment import environment_text

    env = record.get("provenance", {}).get("environment")
    if env:
        client.log_text(run_id, environment_text(env), "environment.txt")
