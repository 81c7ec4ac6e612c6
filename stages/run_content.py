"""What a training's MLflow run holds beyond params and per-epoch metrics: the dataset as
an input, the evaluation (per-class metrics, figures, the run's learning curve), the
trained model as an MLflow model, and system metrics while it trains.

Called by the train stage (dataset, system metrics), the evaluate stage (evaluation,
model) and the report stage (the same for a run it logs again from a training's record).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.common import StageError
from stages.engine import MEAN, STD

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
EVAL_MARK = "eval/test_acc"  # a run holding this metric has its evaluation logged

def dataset_input(record: dict[str, Any], context: str):
    """The prepared CIFAR-10 arrays as an MLflow dataset input. MLflow keeps a digest of at
    most 36 characters: the first 32 of the data sha256 (the whole one is the run's
    `data.sha256` param)."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    data = record["recipe"]["data"]
    source = data["source"]
    if source == "official":
        origin = HTTPDatasetSource(OFFICIAL_URL)
    else:  # a local archive or folder, as prepare resolved it
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # "can be interpreted in multiple ways": twice the same local source
            warnings.simplefilter("ignore", UserWarning)
            origin = resolve_dataset_source(Path(source).resolve().as_uri())
    split = "train" if context == "training" else "test"
    size = data[f"{split}_subset"] or (50000 if split == "train" else 10000)
    dataset = MetaDataset(origin, name=f"cifar10-{split}-{size}", digest=record["provenance"]["data_sha256"][:32])
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


@contextlib.contextmanager
def system_metrics(run_id: str, enabled: bool) -> Iterator[None]:
    """CPU, memory, disk and network (and GPU where NVML is installed) every 5 s into the
    run, from a background thread that never touches the training loop."""
    if not enabled:
        yield
        return
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)  # one missing GPU library is no news
    monitor = SystemMetricsMonitor(run_id, sampling_interval=5)  # a 5-epoch GPU training lasts ~10 s
    monitor.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a store gone away must not hide how training ended
            monitor.finish()


def _learning_curve(record: dict[str, Any], path: Path) -> None:
    from stages.figures import plot_curves

    history = record["history"]
    recipe = record["recipe"]
    plot_curves([{"epochs": [h["epoch"] for h in history], "test_acc": [h["test_acc"] for h in history],
                  "train_loss": [h["train_loss"] for h in history], "style": "-", "color": "C0",
                  "label": recipe["model"]}], path,
                f"{recipe['model']}, {recipe['epochs']} epochs, seed {recipe['seed']} "
                f"({record['provenance']['device_name']})")


def log_evaluation(client, run_id: str, record: dict[str, Any], eval_dir: Path, checkpoint: Path | None) -> None:
    """Log the evaluate stage's outputs into the training's run: metrics, per-class metrics,
    figures, tables, the evaluation dataset, and the model when ``checkpoint`` is given."""
    from mlflow.entities import Metric, RunTag

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    now = int(time.time() * 1000)
    step = record["recipe"]["epochs"]
    values = {"eval/params_per_accuracy_point": metrics["params_per_accuracy_point"],
              **{f"test_acc_class/{cls}": acc for cls, acc in metrics["per_class_acc"].items()}}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])
    from stages.tracking import log_dataset

    log_dataset(client, run_id, dataset_input(record, "evaluation"))
    for figure in sorted((eval_dir / "figures").glob("*.png")):
        client.log_artifact(run_id, str(figure), "figures")
    for table in ("per_class.csv", "confusion.csv"):
        if (eval_dir / table).exists():
            client.log_artifact(run_id, str(eval_dir / table), "eval")
    with tempfile.TemporaryDirectory() as tmp:
        curve = Path(tmp) / "learning_curve.png"
        _learning_curve(record, curve)
        client.log_artifact(run_id, str(curve), "figures")
    if checkpoint is not None:
        log_model(client, run_id, record, checkpoint)
    # the mark last: a run that has it has all of the above, else the report stage logs it again
    client.log_batch(run_id, metrics=[Metric(EVAL_MARK, float(metrics["test_acc"]), now, step)],
                     tags=[RunTag("evaluated", "true")])


class UInt8Classifier(nn.Module):
    """A trained network behind its input normalisation, as served: uint8 NCHW 3x32x32
    images in, float32 logits out."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner((images.float() - self.mean) / self.std).float()


def log_model(client, run_id: str, record: dict[str, Any], checkpoint: Path) -> None:
    """The trained network as an MLflow model (``mlflow.pytorch``, saved with torch.export:
    no pickle, and no code of this project needed to load it), with a signature and an input
    example of what it really takes: uint8 NCHW 3x32x32 images, float32 logits out. Loaded
    back on the CPU, it must give the checkpoint's logits, or this raises."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from models import skeleton

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = skeleton(record["recipe"]["model"])
    net.load_state_dict(state["state_dict"], assign=True)  # the checkpoint's tensors, no init first
    model = UInt8Classifier(net).eval()
    example = np.random.default_rng(0).integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    with torch.inference_mode():
        logits = model(torch.from_numpy(example)).numpy()
    run = client.get_run(run_id)
    try:  # log_model writes into the active run: reopen the finished run, then end it as it was
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            # MLflow's own check of the example only warns, and fails on CUDA machines (it
            # loads there, where exported CPU weights can't go): ours below raises instead
            info = mlflow.pytorch.log_model(model, name="model", signature=infer_signature(example, logits),
                                            input_example=example, validate_serving_input=False,
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"])
    finally:
        client.set_terminated(run_id, run.info.status, end_time=run.info.end_time)
    try:
        served = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})
        same = np.allclose(np.asarray(served.predict(example)), logits, rtol=1e-4, atol=1e-4)
    except Exception as err:
        raise StageError(f"the MLflow model logged in run {run_id} does not load back ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160]}); set mlflow.log_model: false to go on without it") from err
    if not same:
        raise StageError(f"the MLflow model logged in run {run_id} does not give the checkpoint's logits; "
                         "set mlflow.log_model: false to go on without it")
