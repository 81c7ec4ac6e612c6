"""Stage `train@<model>`: train one network with the study's recipe, log it to MLflow.

Writes outputs/<model>/checkpoint.pt (weights and the record; DVC-cached), record.json
(the training's full record: recipe, runtime, provenance, history, MLflow run id; the
pipeline logs a run again from it when a store lacks one), metrics.json (the summary numbers
and the record's id and digest: study.outputs) and history.csv (DVC plots). Every run is one
MLflow run named like ``vgg16_bn-e40-s0``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import time
import uuid
from pathlib import Path

from study.config import MODEL_NAMES, Settings, load_settings
from study.console import plural, run_main
from study.data import PREPARED_DIR
from study.errors import Diverged, Interrupted, StageError, Terminated
from study.files import atomic_entries, atomic_path, sweep_torn_entries, tensor_bytes, write_failure, write_json
from study.metrics import HISTORY_COLUMNS
from study.outputs import training_metrics, weights_sha256
from study.paths import OUTPUT_ROOT, output_paths
from study.processes import process_age_s
from study.provenance import now_ms, provenance
from study.tracking.process import TrackingProcess


def engine_recipe(settings: Settings):
    from study.training.engine import Recipe

    return Recipe(epochs=settings.epochs, seed=settings.seed, **settings.train.model_dump(),
                  **settings.runtime.model_dump())


def select_subsets(arrays: dict, train_subset: int, test_subset: int, seed: int) -> dict:
    from study.training.batches import balanced_subset

    picked = {}
    for split, size in (("train", train_subset), ("test", test_subset)):
        idx = balanced_subset(arrays[f"{split}_labels"], size, seed, setting=f"data.{split}_subset")
        picked[f"{split}_images"] = arrays[f"{split}_images"][idx]
        picked[f"{split}_labels"] = arrays[f"{split}_labels"][idx]
    return picked


def split_profiles(arrays: dict, data_meta: dict, settings: Settings) -> dict:
    """Each split as trained on (``study.data.split_profile``): a whole split's digest from what
    prepare recorded and load_prepared checked, a subset's from its own arrays."""
    from study.data import split_profile

    recorded = data_meta.get("array_sha256", {})
    profiles = {}
    for split, subset in (("train", settings.data.train_subset), ("test", settings.data.test_subset)):
        names = (f"{split}_images", f"{split}_labels")
        whole = None if subset or not all(n in recorded for n in names) else tuple(recorded[n] for n in names)
        profiles[split] = split_profile(arrays[names[0]], arrays[names[1]], whole)
    return profiles


def epochs_upto(n: int) -> str:
    return "epoch 1" if n == 1 else f"epochs 1-{n}"


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def run_training(*, model: str, settings: Settings, data_dir: Path = PREPARED_DIR, output_root: Path = OUTPUT_ROOT,
                 track: bool = True, progress: bool | None = None, log=print) -> dict:
    """Train ``model`` as ``settings`` say; log to MLflow when ``track``; write the outputs.

    The training state is saved after every epoch (study.training.resume); a start that finds
    one for the same recipe, data and runtime goes on from it, in the same MLflow run."""
    if model not in MODEL_NAMES:
        raise StageError(f"unknown model {model!r}; valid models: {', '.join(MODEL_NAMES)}")
    started = time.perf_counter()
    # MLflow is imported and its store opened in a helper process while this one imports torch and
    # builds the model: on two cores the two overlap (study.tracking.process)
    tracker = TrackingProcess(settings.mlflow.experiment, settings.mlflow.system_metrics) if track else None
    try:
        with contextlib.ExitStack() as held:  # the saved state's lock, let go however the training ends
            return _train(model=model, settings=settings, data_dir=data_dir, output_root=output_root,
                          tracker=tracker, progress=progress, log=log, started=started, held=held)
    finally:
        if tracker is not None:
            tracker.close()


class Phases:
    """Where a stage's wall time goes, beside the training itself: ``mark(phase)`` adds the time
    since the last mark to ``phase``."""

    def __init__(self, started: float):
        self.clock, self.seconds = started, {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.clock
        self.clock = now


def _train(*, model: str, settings: Settings, data_dir: Path, output_root: Path, tracker: TrackingProcess | None,
           progress: bool | None, log, started: float, held: contextlib.ExitStack) -> dict:
    """``run_training``'s work, its MLflow run kept by ``tracker`` (None: not logged)."""
    phases = Phases(started)
    from study.data import load_prepared
    from study.tracking.runs import NullRun
    from study.training.device import (
        compile_cache_dir,
        load_compile_cache,
        pick_device,
        precision_choice,
        reuse_freed_memory,
    )
    from study.training.engine import Trainer

    phases.mark("imports_s")
    arrays, data_meta = load_prepared(data_dir)
    arrays = select_subsets(arrays, settings.data.train_subset, settings.data.test_subset, settings.seed)
    phases.mark("data_load_s")
    reuse_freed_memory(pick_device(settings.runtime.device))  # a bad device fails before the store is touched
    if tracker is not None:
        tracker.connect()  # while the model builds
    trainer = Trainer(model, engine_recipe(settings))
    phases.mark("model_and_device_s")
    log(f"{model}: {precision_choice(trainer.device, settings.runtime.precision)[1]}")
    if trainer.recipe.compile:  # kernels an earlier process of this torch and device compiled: seconds, not a minute
        log(f"{model}: {load_compile_cache(compile_cache_dir(), trainer.device)}")
    splits = split_profiles(arrays, data_meta, settings)
    record, history, state = _resume(model, new_record(model, settings, trainer, data_meta, splits), trainer, held, log)
    resumed_epochs = len(history)  # trained by an earlier process: not part of this one's time
    phases.mark("resume_check_s")

    paths = output_paths(model, output_root)
    sweep_torn_entries(paths["checkpoint"].parent)  # what a killed write of the outputs left (we own the state)
    with tracker.training_run(record, history, log) if tracker else contextlib.nullcontext(NullRun()) as run:
        record["mlflow_run_id"] = run.run_id
        phases.mark("mlflow_open_s")
        result = _epochs(model, settings, arrays, trainer, run, state, record, history, progress, log)
        phases.mark("training_loop_s")  # epochs, evaluation after each, state saves, per-epoch logging
        epochs_s = sum(h["epoch_time_s"] for h in result["history"][resumed_epochs:])
        _write_outputs(model, trainer, record, result, paths, {**phases.seconds, "epochs_s": epochs_s}, log)
        phases.mark("outputs_s")
        run.finish(record, [paths["record"], paths["metrics"], paths["history"]])
    state.writer.remove()  # complete everywhere: nothing left to resume
    phases.mark("mlflow_finish_s")
    return {**result, "record": record, "paths": paths, "timings_s": phases.seconds, "epochs_s": epochs_s,
            "resumed_epochs": resumed_epochs}


def new_record(model: str, settings: Settings, trainer, data_meta: dict, splits: dict | None = None) -> dict:
    """A new training's record: what it is (recipe, data as prepare read it, each split as trained
    on: ``study.data.split_profile``), where and how it runs, its provenance and the code it runs."""
    from study.training.resume import code_hashes

    recipe = settings.recipe(model)
    recipe["data"]["source"] = data_meta["source"]  # what prepare really read
    recipe["data"]["jpeg_quality"] = data_meta.get("jpeg_quality")  # and what it is, from its images
    return {"record_id": uuid.uuid4().hex, "recipe": recipe, "runtime": trainer.runtime,
            "provenance": {**provenance(device=trainer.device, data_sha256=data_meta["sha256"]),
                           **({"data_splits": splits} if splits else {})},
            "num_parameters": trainer.num_parameters, "experiment": settings.mlflow.experiment,
            "code_sha256": code_hashes(), "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "started_ms": now_ms()}


class SavedState:
    """The training's resumable state on disk: its lock (``owner``), its writer, its fingerprint."""

    def __init__(self, model: str, record: dict, held: contextlib.ExitStack):
        from study.training.resume import StateOwner, StateWriter, fingerprint, state_path

        self.fingerprint = fingerprint(record)
        self.owner = held.enter_context(StateOwner(state_path(model, self.fingerprint)))  # before it is read
        self.writer = StateWriter(state_path(model, self.fingerprint))


def _resume(model: str, record: dict, trainer, held: contextlib.ExitStack, log) -> tuple[dict, list, SavedState]:
    """The saved state of the same recipe, data, runtime and code, if any, loaded into ``trainer``:
    the record (the training's identity goes on, where it resumed recorded beside it) and the
    epochs already trained."""
    from study.training.resume import load_resumable

    state = SavedState(model, record, held)
    saved, line = load_resumable(model, record)
    if line:
        log(line)
    if saved is None:
        return record, [], state
    trainer.load_state_dict(saved["trainer"])  # same code and recipe (the fingerprint): it fits
    history = saved["history"]
    resumed = {"after_epoch": len(history), "git_commit": record["provenance"]["git_commit"],
               "packages_sha256": record["provenance"]["environment"]["packages_sha256"],  # this process's
               "at_ms": now_ms()}
    return {**saved["record"], "resumed": [*saved["record"].get("resumed", []), resumed]}, history, state


def _epochs(model: str, settings: Settings, arrays: dict, trainer, run, state: SavedState, record: dict,
            history: list[dict], progress: bool | None, log) -> dict:
    """The epochs left, each saved, then logged to MLflow once its state has landed (never before:
    a kill then leaves the run without that epoch, and the rerun, resuming from the state, logs it
    once). An interrupt or a failure lets the state save under way land first."""
    from study.training.engine import train

    saved_epochs = len(history)  # what the state on disk holds once the writer is done
    unlogged: list[dict] = []  # epochs whose state is still being written: logged once it lands

    def log_saved() -> None:
        state.writer.wait()
        while unlogged:
            run.log_epoch(unlogged.pop(0))

    def end_of_epoch(epoch_record: dict) -> None:
        nonlocal saved_epochs
        history.append(epoch_record)
        log_saved()  # the last epoch's write is done (and logged), its buffers free for state_dict()
        state.writer.save({"fingerprint": state.fingerprint, "trainer": trainer.state_dict(),
                           "history": list(history), "record": record, "saved_ms": now_ms()})
        saved_epochs = len(history)
        state.owner.saved = True
        unlogged.append(epoch_record)

    try:
        result = train(model, arrays, trainer.recipe, trainer=trainer, history=list(history),
                       on_epoch=end_of_epoch, progress=progress, log=log)
    except Diverged:
        log_saved()  # the epochs before it stay in the run, which ends FAILED
        state.writer.remove()  # a rerun from a saved epoch would diverge again: start it fresh
        raise
    except KeyboardInterrupt as err:
        log_saved()  # the last finished epoch's state lands before the process goes, then its log
        # the epochs saved, not those finished: a Ctrl-C between an epoch's end and its save
        # leaves that epoch to the rerun, which resumes from the state on disk
        saved = (f"{epochs_upto(saved_epochs)} saved; rerun `dvc repro` to resume" if saved_epochs
                 else "no epoch was saved; rerun `dvc repro` to start again")
        raise Interrupted(f"{model}: interrupted at epoch {saved_epochs + 1}/{settings.epochs} ({saved})",
                          143 if isinstance(err, Terminated) else 130) from err
    except Exception:
        with contextlib.suppress(Exception):  # the error that stopped the training is the one to see
            log_saved()  # the state save under way lands whole: a rerun resumes from it
        raise
    log_saved()
    return result


def _write_outputs(model: str, trainer, record: dict, result: dict, paths: dict, timings: dict, log) -> None:
    """checkpoint.pt, record.json, history.csv and metrics.json: all four land together, or none (a
    full disk leaves the old set whole)."""
    import torch

    from study.training.device import compile_cache_dir, save_compile_cache

    if trainer.recipe.compile:
        log(f"{model}: {save_compile_cache(compile_cache_dir(), trainer.device)}")
    summary = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    record.update(history=result["history"], summary=summary, ended_ms=now_ms(), timings_s=timings)
    metrics = training_metrics(record)  # bound to the record by its id and digest (study.outputs)
    try:
        with atomic_entries(paths["checkpoint"].parent, tuple(p.name for p in paths.values())) as tmp:
            weights = trainer.model.state_dict()
            torch.save({"model_name": model, "state_dict": weights, "record": record,
                        "weights_sha256": weights_sha256(weights)}, tmp / paths["checkpoint"].name)
            write_json(tmp / paths["record"].name, record)
            write_history(tmp / paths["history"].name, result["history"])
            write_json(tmp / paths["metrics"].name, metrics)
    except (OSError, RuntimeError) as err:
        raise write_failure(f"{model}'s outputs", paths["checkpoint"].parent, tensor_bytes(trainer.model.state_dict()),
                            err, "the training state is kept, so the rerun only writes the outputs") from err


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    parser.add_argument("--no-mlflow", action="store_true", help="train without logging to MLflow")
    args = parser.parse_args()

    def work():
        startup = process_age_s()
        settings = load_settings(args.params)
        out = run_training(model=args.model, settings=settings, track=not args.no_mlflow)
        s, prov = out["record"]["summary"], out["record"]["provenance"]
        print(f"{args.model}: test accuracy {s['final_test_acc']:.2f}% after {plural(settings.epochs, 'epoch')}, "
              f"{s['mean_epoch_time_s']:.2f} s/epoch on {prov['device_name']} -> {out['paths']['record']}")
        t = out["timings_s"]
        parts = [f"start-up {startup:.1f}" if startup is not None else ""] + [
            f"{name.removesuffix('_s').replace('_', ' ')} {seconds:.1f}" for name, seconds in t.items()]
        earlier = f"; {epochs_upto(out['resumed_epochs'])} ran before the resume" if out["resumed_epochs"] else ""
        print(f"{args.model}: stage {(startup or 0) + sum(t.values()):.1f} s = {', '.join(p for p in parts if p)} "
              f"(epochs alone {out['epochs_s']:.1f}{earlier})")

    run_main(work)


if __name__ == "__main__":
    main()
