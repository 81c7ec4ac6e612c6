"""Stage `train@<model>`: train one network with the study's recipe, log it to MLflow.

Writes outputs/<model>/checkpoint.pt (DVC-cached), metrics.json (DVC metrics) and
history.csv (DVC plots); every run is one MLflow run named like ``vgg16_bn-e40-s0``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
from pathlib import Path
from typing import Any

from models import MODEL_NAMES
from stages.common import StageError, atomic_path, load_params, provenance, run_main, write_json
from stages.engine import Recipe, balanced_subset, train
from stages.prepare import OUT_DIR as DATA_DIR
from stages.prepare import load_prepared

OUTPUT_ROOT = Path("outputs")
TRAIN_KEYS = ("batch_size", "lr", "momentum", "weight_decay", "device", "precision", "channels_last",
              "compile", "cuda_graphs", "init")
HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s")


def output_paths(model: str, root: Path = OUTPUT_ROOT) -> dict[str, Path]:
    folder = root / model
    return {"checkpoint": folder / "checkpoint.pt", "metrics": folder / "metrics.json",
            "history": folder / "history.csv"}


def recipe_from_params(params: dict[str, Any]) -> Recipe:
    train_params = params.get("train", {}) or {}
    unknown = sorted(set(train_params) - set(TRAIN_KEYS))
    if unknown:
        raise StageError(f"unknown key(s) train.{', train.'.join(unknown)} in params.yaml; "
                         f"known: {', '.join(TRAIN_KEYS)}")
    return Recipe(epochs=params.get("epochs", 40), seed=params.get("seed", 0), **train_params)


def select_subsets(arrays: dict, train_subset: int, test_subset: int, seed: int) -> dict:
    picked = {}
    for split, size in (("train", train_subset), ("test", test_subset)):
        if not isinstance(size, int) or isinstance(size, bool):
            raise StageError(f"data.{split}_subset must be an integer >= 0 (0 = all), not {size!r}")
        idx = balanced_subset(arrays[f"{split}_labels"], size, seed)
        picked[f"{split}_images"] = arrays[f"{split}_images"][idx]
        picked[f"{split}_labels"] = arrays[f"{split}_labels"][idx]
    return picked


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(history)


def resolved_config(model: str, params: dict, recipe: Recipe, data_meta: dict) -> dict:
    data = params.get("data", {}) or {}
    return {
        "model": model, "epochs": recipe.epochs, "seed": recipe.seed,
        "data": {"source": data_meta["source"], "train_subset": data.get("train_subset", 0),
                 "test_subset": data.get("test_subset", 0)},
        "train": {key: getattr(recipe, key) for key in TRAIN_KEYS},
    }


def run_training(*, model: str, params: dict, data_dir: Path = DATA_DIR, output_root: Path = OUTPUT_ROOT,
                 track: bool = True, progress: bool | None = None) -> dict:
    """Train ``model`` as ``params`` say; log to MLflow when ``track``; write the outputs."""
    import torch

    if model not in MODEL_NAMES:
        raise StageError(f"unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}")
    recipe = recipe_from_params(params)
    data = params.get("data", {}) or {}
    arrays, data_meta = load_prepared(data_dir)
    arrays = select_subsets(arrays, data.get("train_subset", 0), data.get("test_subset", 0), recipe.seed)
    config = resolved_config(model, params, recipe, data_meta)
    experiment = (params.get("mlflow", {}) or {}).get("experiment", "alexnet-vgg-cifar10")
    run_name = f"{model}-e{recipe.epochs}-s{recipe.seed}"

    mlflow = None
    if track:
        from stages.tracking import connect, flatten

        experiment_id = connect(experiment)  # before training: a dead server fails fast
        import mlflow

    def log_epoch(record: dict) -> None:
        mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    paths = output_paths(model, output_root)
    with (mlflow.start_run(experiment_id=experiment_id, run_name=run_name) if mlflow
          else contextlib.nullcontext()) as run:
        result = train(model, arrays, recipe, on_epoch=log_epoch if mlflow else None, progress=progress)
        trainer, metrics = result["trainer"], result["metrics"]
        prov = provenance(config=config, seed=recipe.seed, device=trainer.device,
                          data_sha256=data_meta["sha256"])
        metrics = {**metrics, "provenance": prov, "mlflow_run_id": run.info.run_id if run else None}
        if mlflow:
            mlflow.log_params({**flatten(config), "num_parameters": metrics["num_parameters"]})
            mlflow.log_metrics({k: metrics[k] for k in ("final_test_acc", "best_test_acc", "mean_epoch_time_s",
                                                        "mean_epoch_time_s_after_first")})
            mlflow.set_tags({
                "git_commit": prov["git_commit"], "mlflow.source.git.commit": prov["git_commit"],
                "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""), "dvc_stage": f"train@{model}",
                "device_name": prov["device_name"], "device": trainer.device, "precision": trainer.precision,
                "torch_version": prov["torch_version"], "data_sha256": prov["data_sha256"],
            })
        checkpoint = {"model_name": model, "state_dict": trainer.model.state_dict(), "config": config,
                      "metrics": metrics, "history": result["history"]}
        with atomic_path(paths["checkpoint"]) as tmp:
            torch.save(checkpoint, tmp)
        write_history(paths["history"], result["history"])
        write_json(paths["metrics"], metrics)
        if mlflow:
            mlflow.log_artifact(str(paths["metrics"]))
            mlflow.log_artifact(str(paths["history"]))
    return {**result, "metrics": metrics, "paths": paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-mlflow", action="store_true", help="train without logging to MLflow")
    args = parser.parse_args()

    def work():
        out = run_training(model=args.model, params=load_params(args.params), track=not args.no_mlflow)
        m = out["metrics"]
        print(f"{args.model}: test accuracy {m['final_test_acc']:.2f}% after {m['epochs']} epochs, "
              f"{m['mean_epoch_time_s']:.2f} s/epoch on {m['provenance']['device_name']} -> {out['paths']['metrics']}")

    run_main(work)


if __name__ == "__main__":
    main()
