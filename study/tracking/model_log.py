"""The trained network as an MLflow model, logged into its training's run by the evaluate stage
(or the report stage, for a run it logs again). A module of its own because it needs torch,
and study.tracking.content, which the report imports, does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from study.errors import StageError
from study.outputs import refuse_damaged, refuse_other_weights
from study.tracking.naming import CHECKPOINT_TAG, UNCHECKED_TAG, model_name
from study.tracking.reopen import reopened
from study.training.batches import MEAN, STD


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


def preload() -> None:
    """Import what ``log_model`` needs (torch.export alone takes seconds), without touching a store."""
    import mlflow.pyfunc  # noqa: F401
    import torch.export._trace  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401

    from models.network import build_model  # noqa: F401


def logged_model_id(client, run, checkpoint_sha256: str) -> str | None:
    """The id of the model already logged and checked in ``run`` from this checkpoint, if there
    is one. A model of this checkpoint whose check never ended is deleted on the way."""
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    for model in models:
        if model.tags.get(UNCHECKED_TAG) == checkpoint_sha256 and CHECKPOINT_TAG not in model.tags:
            _forget(client, model.model_id)
    return next((m.model_id for m in models if m.tags.get(CHECKPOINT_TAG) == checkpoint_sha256), None)


def _forget(client, model_id: str) -> None:
    """The run keeps no model that failed its check; if even the deletion fails, the failure
    being reported is the check's."""
    with contextlib.suppress(Exception):
        client.delete_logged_model(model_id)


def log_model(client, run_id: str, record: dict[str, Any], checkpoint: Path) -> tuple[str, bool]:
    """The trained network as an MLflow model (``mlflow.pytorch``, saved with torch.export:
    no pickle, and no code of this project needed to load it), with a signature and an input
    example of what it really takes: uint8 NCHW 3x32x32 images, float32 logits out. Loaded
    back on the CPU, it must give the checkpoint's logits, or this raises. A run that holds
    this checkpoint's model already (the evaluation ran again) gets no second copy. Returns the
    model's id, and whether the run held it already."""
    import mlflow
    import numpy as np

    from models.network import build_model

    with checkpoint.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    run = client.get_run(run_id)
    if (found := logged_model_id(client, run, digest)) is not None:
        return found, True
    network = record["recipe"]["model"]
    fix = f"restore it with `dvc checkout {checkpoint}` or retrain with `dvc repro -f train@{network}`"
    refuse_damaged(checkpoint, fix)  # the report logs from the workspace's checkpoint too: never other weights
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    refuse_other_weights(checkpoint, state, fix)
    net = build_model(network)
    # copied into the net's own tensors, not assigned: torch.export's archive warns about tensors
    # that share one storage, as a checkpoint's loaded tensors do
    net.load_state_dict(state["state_dict"])
    model = UInt8Classifier(net).eval()
    example = np.random.default_rng(0).integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    with torch.inference_mode():
        logits = model(torch.from_numpy(example)).numpy()
    # the fluent API writes to (and loads from) the store MLflow's global URI names: the client's, meanwhile
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        return _log_checked(client, run, model, example, logits, digest, model_name(record["recipe"])), False
    finally:
        mlflow.set_tracking_uri(previous_uri)


def _log_checked(client, run, model: nn.Module, example, logits, digest: str, name: str) -> str:
    """``log_model``'s logging into ``run`` and its load-back check."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    run_id = run.info.run_id
    with reopened(client, run):  # log_model writes into the active run: the finished run, closed as it was after
        # MLflow's own check of the example only warns, and fails on CUDA machines (it
        # loads there, where exported CPU weights can't go): ours below raises instead
        info = mlflow.pytorch.log_model(model, name=name, signature=infer_signature(example, logits),
                                        input_example=example, validate_serving_input=False,
                                        tags={UNCHECKED_TAG: digest},
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per check: noise in DVC's log
    try:  # into a folder removed after: left to MLflow, each check leaked a copy of the model in the temporary folder
        with tempfile.TemporaryDirectory(prefix="model-check-") as copy:
            served = mlflow.pyfunc.load_model(info.model_uri, dst_path=copy, model_config={"device": "cpu"})
            same = np.allclose(np.asarray(served.predict(example)), logits, rtol=1e-4, atol=1e-4)
    except Exception as err:
        _forget(client, info.model_id)
        raise StageError(f"the MLflow model logged in run {run_id} does not load back ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160]}); set mlflow.log_model: false to go on without it") from err
    if not same:
        _forget(client, info.model_id)
        raise StageError(f"the MLflow model logged in run {run_id} does not give the checkpoint's logits; "
                         "set mlflow.log_model: false to go on without it")
    client.set_logged_model_tags(info.model_id, {CHECKPOINT_TAG: digest})  # checked: found, not logged, next time
    with contextlib.suppress(Exception):  # one tag per state: checked replaces unchecked
        client.delete_logged_model_tag(info.model_id, UNCHECKED_TAG)
    return info.model_id
