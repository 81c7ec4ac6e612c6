"""A training's outputs bound to one training: the checkpoint's embedded record is the
source, record.json must equal it, metrics.json and the evaluation's metrics.json name it
by id and digest. The evaluate, summary, report stages and the restore of a run check
them, so a hand-edited or swapped file is refused in one line instead of reaching a table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from study.errors import StageError
from study.metrics import METRICS_JSON
from study.paths import OUTPUT_ROOT, output_paths


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of the record as canonical JSON: the same for the checkpoint's embedded dict and
    for record.json read back (JSON keeps Python's floats exactly)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_sha256(state_dict) -> str:
    """sha256 of a network's weights, tensor by tensor in name order: written into the checkpoint
    when it is trained, checked whenever it is loaded, so a flipped bit is never evaluated."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def refuse_damaged(path: Path, fix: str) -> None:
    """Before a checkpoint is loaded: every member's CRC-32 as written (torch.load checks none)."""
    from study.files import damaged_member

    if (damaged := damaged_member(path)) is not None:
        raise StageError(f"{path} is damaged: {damaged} fails the CRC-32 it was written with (a flipped bit, a bad "
                         f"copy or cache); {fix}")


def refuse_other_weights(path: Path, checkpoint: dict, fix: str) -> None:
    """After it is loaded: its weights are the ones its training wrote (checkpoints since it wrote their digest)."""
    expected = checkpoint.get("weights_sha256")
    if expected is not None and weights_sha256(checkpoint["state_dict"]) != expected:
        raise StageError(f"{path}: its weights are not the ones its training wrote (their sha256 differs: a flipped "
                         f"bit, a bad copy or cache); {fix}")


def binding(record: dict[str, Any]) -> dict[str, str]:
    """The identity a file derived from ``record`` carries: its training's id and digest."""
    return {"record_id": record["record_id"], "record_sha256": record_digest(record)}


def training_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a training: its summary numbers and the record they come from."""
    return {**{key: record["summary"][key] for key in METRICS_JSON}, **binding(record)}


def read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise StageError(f"{path} not found; {fix}") from err
    except (OSError, ValueError) as err:
        raise StageError(f"{path} is not readable JSON ({type(err).__name__}: {str(err)[:80]}); {fix}") from err
    if not isinstance(value, dict):
        raise StageError(f"{path} holds a {type(value).__name__}, not an object; {fix}")
    return value


def checkpoint_record(path: Path, fix: str) -> dict[str, Any]:
    """The record embedded in a checkpoint, its weights left on disk (memory-mapped, never read)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError as err:
        raise StageError(f"{path} not found; {fix}") from err
    except Exception as err:  # truncation, garbage, a pickle asking for code
        first = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
        raise StageError(f"{path} is not a readable checkpoint ({type(err).__name__}: {first}); {fix}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("record"), dict):
        raise StageError(f"{path} is not a checkpoint written by the train stage (no record); {fix}")
    return checkpoint["record"]


def first_difference(ours: Any, theirs: Any, where: str = "") -> str:
    """Where two JSON values first differ, as ``key.sub: A here, B there``."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            if key not in ours or key not in theirs:
                return f"{where}{key} only in {'this file' if key in ours else 'the checkpoint'}"
            if record_digest({"v": ours[key]}) != record_digest({"v": theirs[key]}):
                return first_difference(ours[key], theirs[key], f"{where}{key}.")
    return f"{where.rstrip('.') or 'value'}: {json.dumps(ours)[:40]} here, {json.dumps(theirs)[:40]} in the checkpoint"


def restore_hint(model: str) -> str:
    return (f"restore the training's outputs as DVC recorded them with `dvc checkout train@{model}`, "
            f"or retrain with `dvc repro -f train@{model}`")


def check_record(path: Path, record: dict[str, Any], source: dict[str, Any], source_path: Path, model: str) -> None:
    """record.json (``record``) against the checkpoint's embedded record (``source``)."""
    if record_digest(record) == record_digest(source):
        return
    if record.get("record_id") != source.get("record_id"):
        detail = (f"it records training {str(record.get('record_id'))[:8]}, the checkpoint training "
                  f"{str(source.get('record_id'))[:8]}")
    else:
        detail = f"edited: {first_difference(record, source)}"
    raise StageError(f"{path} does not match {source_path} ({detail}); {restore_hint(model)}")


def check_metrics(path: Path, metrics: dict[str, Any], record: dict[str, Any], model: str) -> None:
    """metrics.json against the record it was written from: the same numbers, the same training."""
    expected = training_metrics(record)
    wrong = [key for key in expected if metrics.get(key) != expected[key]]
    if wrong:
        key = wrong[0]
        raise StageError(f"{path} does not match its training's record ({key}: {metrics.get(key)!r} here, "
                         f"{expected[key]!r} in the record); {restore_hint(model)}")


def check_evaluation(path: Path, evaluation: dict[str, Any], record: dict[str, Any], model: str) -> None:
    """The evaluate stage's metrics.json against the training it claims to have evaluated."""
    if evaluation.get("record_sha256") != record_digest(record):
        raise StageError(f"{path} evaluated another training (record {str(evaluation.get('record_id'))[:8]}) than "
                         f"outputs/{model} holds ({record['record_id'][:8]}); evaluate this one with "
                         f"`dvc repro evaluate@{model}` (or `dvc checkout evaluate@{model}` for DVC's own)")


def bound_record(model: str, output_root: Path = OUTPUT_ROOT, *, checkpoint: bool = True, metrics: bool = True,
                 evaluation: bool = True) -> dict[str, Any]:
    """The training record of outputs/<model>, every output checked to belong to it: record.json
    equal to the checkpoint's record (with ``checkpoint``), metrics.json written from it (with ``metrics``), and
    the evaluation (with ``evaluation``, where there is one) of it. One line naming the file that
    differs otherwise."""
    paths = output_paths(model, output_root)
    record = read_json(paths["record"], restore_hint(model))
    if checkpoint:
        check_record(paths["record"], record, checkpoint_record(paths["checkpoint"], restore_hint(model)),
                     paths["checkpoint"], model)
    missing = {"record_id", "recipe", "runtime", "provenance", "history", "summary"} - set(record)
    if missing:
        raise StageError(f"{paths['record']} is not a training record of this project (no "
                         f"{', '.join(sorted(missing))}); {restore_hint(model)}")
    if metrics:
        check_metrics(paths["metrics"], read_json(paths["metrics"], restore_hint(model)), record, model)
    eval_metrics = paths["record"].with_name("eval") / "metrics.json"
    if evaluation and eval_metrics.exists():
        check_evaluation(eval_metrics, read_json(eval_metrics, f"rerun `dvc repro evaluate@{model}`"), record, model)
    return record
