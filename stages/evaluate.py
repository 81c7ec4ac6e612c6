"""Stage `evaluate@<model>`: from the checkpoint, test accuracy, per-class accuracy, the
confusion matrix, parameter efficiency (Table 7), and the study's section-7 pictures:
first-layer filters and first-layer feature maps for a fixed, seeded set of test images.

Writes outputs/<model>/eval/{metrics.json, confusion.csv, per_class.csv, figures/}.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from models.architectures import MODEL_NAMES
from study.config import load_settings
from study.console import exit_now, protect_output, run_main
from study.data import PREPARED_DIR
from study.errors import Interrupted, StageError, Terminated
from study.files import atomic_path, sweep_torn_entries, write_json
from study.outputs import binding, check_record, read_json, refuse_damaged, refuse_other_weights, restore_hint
from study.paths import OUTPUT_ROOT, output_paths
from study.processes import process_age_s
from study.tracking.process import Helper, ignore_interrupts, receive, reply

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

# torch, numpy, pandas and matplotlib are imported where used: main() starts the MLflow
# helper first, so that its imports run beside these (study.tracking.process)


def eval_dir(model: str, root: Path = OUTPUT_ROOT) -> Path:
    return root / model / "eval"


def load_checkpoint(model: str, root: Path = OUTPUT_ROOT, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The trained ``model`` and its training record. Loaded with ``weights_only=True``: a
    checkpoint travels through DVC remotes, so it may hold tensors and plain data only,
    never code; a corrupt, foreign or mismatched file is one clear error."""
    import torch

    from models.network import skeleton

    path = output_paths(model, root)["checkpoint"]
    if not path.exists():
        raise StageError(f"{path} not found; train it first with `dvc repro train@{model}`")
    fix = f"restore it with `dvc checkout {path}` or retrain with `dvc repro -f train@{model}`"
    refuse_damaged(path, fix)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling refusals, truncation and garbage all land here
        text = str(err).strip()
        if "WeightsUnpickler error:" in text:  # the pickle asks for more than tensors and plain data
            detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                           if line.strip()), "")
            reason = f"refused by weights-only loading: {detail[:100]}; a checkpoint holds only tensors and plain data"
        else:
            reason = f"{type(err).__name__}: {text.splitlines()[0][:120]}" if text else type(err).__name__
        raise StageError(f"{path} is not a safe, readable checkpoint ({reason}); {fix}") from err
    if not isinstance(checkpoint, dict) or not {"model_name", "state_dict", "record"} <= set(checkpoint):
        raise StageError(f"{path} is not a checkpoint written by the train stage (it needs model_name, state_dict "
                         f"and record); {fix}")
    if checkpoint["model_name"] != model or checkpoint["record"].get("recipe", {}).get("model") != model:
        raise StageError(f"{path} holds a {checkpoint['model_name']!r} checkpoint, not {model!r}; {fix}")
    refuse_other_weights(path, checkpoint, fix)
    net = skeleton(model)
    try:  # the checkpoint's tensors themselves (assign): no initialisation to overwrite
        net.load_state_dict(checkpoint["state_dict"], assign=True)
    except (RuntimeError, TypeError, AttributeError, KeyError) as err:
        raise StageError(f"{path}: its weights do not fit {model} ({str(err).splitlines()[0][:120]}); {fix}") from err
    broken = [name for name, t in checkpoint["state_dict"].items()
              if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # a diverged training: its accuracy would be chance, reported as if it meant something
        raise StageError(f"{path}: {len(broken)} weight tensors hold NaN or inf (first: {broken[0]}), so the "
                         f"training diverged; retrain with a lower train.lr (`dvc repro -f train@{model}`)")
    # assigned tensors keep the checkpoint's dtype: fp32 here, as a copy into a built net gave
    return net.to(device=device, dtype=torch.float32).eval(), checkpoint["record"]


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Accuracy (%) per actual class of a confusion matrix; NaN for a class with no test image
    (no made-up 0%: empty in the CSV, left out of the metrics and of MLflow)."""
    import numpy as np

    counts = matrix.sum(1)
    return np.where(counts > 0, 100.0 * np.diag(matrix) / counts.clip(min=1), np.nan)


def sample_indices(n_total: int, count: int, seed: int) -> np.ndarray:
    """The same test images for every model: chosen from the full test split by seed."""
    import numpy as np

    return np.sort(np.random.default_rng(seed).choice(n_total, size=min(count, n_total), replace=False))


def first_layer_maps(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Activations after the first ReLU of ``features`` (conv, [BN,] ReLU)."""
    import torch
    from torch import nn

    with torch.inference_mode():
        for layer in net.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                return x
    raise StageError("the model's features have no ReLU")


def init_correlation(model: str, recipe: dict, trained) -> float:
    """How close the trained first layer stayed to where it started: the mean, over its filters,
    of the Pearson correlation between each trained filter and the same filter of this seed's
    untrained network (built as the training built it: seeded, then the model). Near 1: the layer
    hardly moved. The first layer is built first, so every network starts it from the same
    weights at one seed."""
    import torch

    from models.network import build_model

    with torch.random.fork_rng(devices=[]):  # this process's own random state stays as it was
        torch.manual_seed(recipe["seed"])  # as study.training.engine.Trainer: the seed, then the model
        net = build_model(model, init=recipe["train"]["init"])
    start = first_conv(net)
    a = trained.detach().float().cpu().flatten(1)
    b = start.weight.detach().float().flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(corr.mean())


def evaluate_model(*, model: str, feature_map_images: int = 4, sample_seed: int = 0, device: str = "auto",
                   data_dir: Path = PREPARED_DIR, output_root: Path = OUTPUT_ROOT) -> dict:
    import numpy as np
    import torch

    from study.data import load_prepared
    from study.training.batches import Normalizer, balanced_subset, to_device_images
    from study.training.device import pick_device, precision_choice, reuse_freed_memory
    from study.training.engine import predict

    if model not in MODEL_NAMES:
        raise StageError(f"unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}")
    device = pick_device(device)
    reuse_freed_memory(device)
    net, record = load_checkpoint(model, output_root, device)
    # record.json must be the checkpoint's own record: MLflow logs this evaluation into the run it names
    paths = output_paths(model, output_root)
    check_record(paths["record"], read_json(paths["record"], restore_hint(model)), record, paths["checkpoint"], model)
    recipe, runtime = record["recipe"], record["runtime"]
    arrays, meta = load_prepared(data_dir)
    # the very test images the training stage scored: same subset rule, same seed
    test_idx = balanced_subset(arrays["test_labels"], recipe["data"]["test_subset"], recipe["seed"],
                               setting="data.test_subset")
    if runtime["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    # as trained, where this device has native bf16 (a GPU-trained model evaluated on an older CPU runs fp32)
    autocast = torch.bfloat16 if precision_choice(device, runtime["precision"])[0] == "bf16" else None
    normalize = Normalizer(device, runtime["channels_last"])
    labels = arrays["test_labels"][test_idx]
    predicted = predict(net, to_device_images(arrays["test_images"][test_idx], device), normalize,
                        autocast).argmax(1).cpu().numpy()
    matrix = np.zeros((len(meta["classes"]), len(meta["classes"])), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    metrics = evaluation_metrics(net, record, matrix, meta["classes"])
    sample = sample_indices(len(arrays["test_labels"]), feature_map_images, sample_seed)
    with torch.inference_mode():
        maps = first_layer_maps(net.float(), normalize(to_device_images(arrays["test_images"][sample], device)))
    metrics["first_layer_init_corr"] = init_correlation(model, recipe, first_conv(net).weight)

    out = eval_dir(model, output_root)
    sweep_torn_entries(out.parent)  # what a killed write left
    with atomic_path(out) as tmp:
        write_evaluation(tmp, net, recipe, metrics, matrix, meta["classes"], labels, predicted,
                         (sample, arrays["test_images"][sample], maps))
    return metrics


def first_conv(net):
    from torch import nn

    return next(m for m in net.features.modules() if isinstance(m, nn.Conv2d))


def evaluation_metrics(net, record: dict, matrix, classes: list[str]) -> dict:
    """The evaluation's numbers from the confusion matrix, bound to the training it evaluated by id
    and digest (study.outputs)."""
    import numpy as np

    from models.network import count_parameters

    per_class = per_class_accuracy(matrix)
    accuracy = 100.0 * np.trace(matrix) / matrix.sum()
    params = count_parameters(net)
    return {**binding(record), "test_acc": accuracy, "num_parameters": params, "test_images": int(matrix.sum()),
            "params_per_accuracy_point": params / accuracy if accuracy > 0 else 0.0,
            "per_class_acc": {cls: acc for cls, acc in zip(classes, per_class.tolist(), strict=True)
                              if np.isfinite(acc)}}


def write_evaluation(folder: Path, net, recipe: dict, metrics: dict, matrix, classes: list[str], labels, predicted,
                     sample) -> None:
    """outputs/<model>/eval/: the confusion and per-class tables, the figures, metrics.json."""
    import pandas as pd

    from study.figures import plot_confusion, plot_feature_maps, plot_filters
    from study.tracking.naming import run_label

    indices, images, maps = sample
    label = f"{run_label(recipe)}, test acc {metrics['test_acc']:.2f}%"  # a data variant or ablation named in it
    (folder / "figures").mkdir(parents=True)
    pd.DataFrame({"actual": [classes[i] for i in labels], "predicted": [classes[i] for i in predicted]}).to_csv(
        folder / "confusion.csv", index=False)
    pd.DataFrame({"class": classes, "accuracy": per_class_accuracy(matrix)}).to_csv(folder / "per_class.csv",
                                                                                  index=False)
    plot_confusion(matrix, classes, folder / "figures" / "confusion.png", f"Confusion matrix: {label}")
    plot_filters(first_conv(net).weight, folder / "figures" / "filters.png",
                 f"First-layer filters: {label}\nmean correlation with this seed's initial filters: "
                 f"{metrics['first_layer_init_corr']:.2f} (every network starts its first layer from the same "
                 "weights at one seed)")
    metrics["feature_maps_clipped"] = plot_feature_maps(
        images, maps, folder / "figures" / "feature_maps.png",
        f"First-layer feature maps (after ReLU), test images {indices.tolist()}: {label}")
    write_json(folder / "metrics.json", metrics)


def log_to_training_run(model: str, experiment: str, log_model: bool, output_root: Path = OUTPUT_ROOT) -> str:
    """Log the evaluation (and the model when ``log_model``) into the MLflow run of the
    training it evaluated; one line saying what happened. A store without that run, or
    unreachable, is no failure: the report stage logs both once the store has the run."""
    import json

    from study.tracking.content import log_evaluation
    from study.tracking.reopen import settle_reopened
    from study.tracking.restore import find_run
    from study.tracking.store import connect

    paths = output_paths(model, output_root)
    record = json.loads(paths["record"].read_text())
    later = f"the report stage logs it from outputs/{model} later"
    try:
        client, experiment_id = connect(experiment)
        # a run an earlier evaluate reopened and could not close (its store went away) closed as it was first
        run = settle_reopened(client, find_run(client, experiment_id, record["record_id"], finished=False))
        if run is None or run.info.status != "FINISHED":
            return f"{model}: the MLflow store has no finished run of this training yet; {later}"
        found = log_evaluation(client, run.info.run_id, record, eval_dir(model, output_root),
                               paths["checkpoint"] if log_model else None)
    except Exception as err:  # StageError from connect included: one line, the stage's outputs stand
        # our own one-line errors whole (their fix at the end); anything else cut to its first 160 characters
        first = str(err) if isinstance(err, StageError) else (str(err).splitlines()[0][:160] or type(err).__name__)
        return f"warning: {model}: evaluation not logged to MLflow ({first}); {later}"
    if found is not None:
        return (f"{model}: evaluation logged to MLflow run {run.info.run_id}; its model was there already, "
                f"from this checkpoint (model {found})")
    return f"{model}: evaluation{' and model' if log_model else ''} logged to MLflow run {run.info.run_id}"


class EvaluationLog(Helper):
    """The MLflow logging, the model's included, in a helper process that imports MLflow and
    torch.export (seconds of one core) while this one evaluates. ``log`` once the outputs are
    written: only then does it touch the store."""

    def __init__(self, model: str, experiment: str, log_model: bool):
        super().__init__(serve_evaluation_log, model, experiment, log_model)

    def log(self) -> str:
        """The line saying what was logged, or a warning: the stage's outputs stand either way."""
        try:
            return self.request("log")
        except StageError as err:
            return f"warning: evaluation not logged to MLflow ({err}); the report stage logs it later"


def serve_evaluation_log(conn, model: str, experiment: str, log_model: bool) -> None:
    """The helper: import, wait for the word, log, answer with the line."""
    ignore_interrupts()
    protect_output()  # a spawned process: its own streams
    from study.tracking import store as tracking

    tracking.preload()
    if log_model:
        from study.tracking import model_log

        model_log.preload()
    receive(conn)  # "log"
    reply(conn, "log", log_to_training_run(model, experiment, log_model))
    exit_now(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    parser.add_argument("--no-mlflow", action="store_true", help="evaluate without logging to MLflow")
    args = parser.parse_args()

    def work():
        startup = process_age_s()  # None where the process's start is unknown (not Linux)
        started = time.perf_counter()
        settings = load_settings(args.params)
        tracking = settings.mlflow
        logger = None if args.no_mlflow else EvaluationLog(args.model, tracking.experiment, tracking.log_model)
        try:
            m = evaluate_model(model=args.model, feature_map_images=settings.evaluate.feature_map_images,
                               sample_seed=settings.evaluate.sample_seed, device=settings.runtime.device)
            evaluated = time.perf_counter()
            per_point = m["params_per_accuracy_point"]
            efficiency = f"{per_point / 1e3:.0f}K parameters per point" if per_point else "no correct predictions"
            print(f"{args.model}: test accuracy {m['test_acc']:.2f}% on {m['test_images']} images, {efficiency}")
            if logger is not None:
                try:
                    line = logger.log()  # the outputs are written: now the store
                except KeyboardInterrupt as err:
                    raise Interrupted(f"{args.model}: interrupted while logging to MLflow; the evaluation's outputs "
                                      "are written, and the report stage logs what the run lacks",
                                      143 if isinstance(err, Terminated) else 130) from err
                print(line)
            # where the stage's time went: the MLflow part is what the helper had left once the outputs were written
            done = time.perf_counter()
            waited = f", waiting for MLflow {done - evaluated:.1f}" if logger is not None else ""
            known = f"start-up {startup:.1f}, " if startup is not None else ""
            print(f"{args.model}: stage {(startup or 0.0) + done - started:.1f} s = {known}"
                  f"imports, evaluation and figures {evaluated - started:.1f}{waited}")
        finally:
            if logger is not None:
                logger.close()

    run_main(work)


if __name__ == "__main__":
    main()
