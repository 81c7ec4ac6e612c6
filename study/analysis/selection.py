"""Which MLflow runs the report shows, and why the others are left out.

A run counts for the study when its recipe and data equal the current params.yaml's,
whatever its epochs, seed and runtime (device, precision, ...). Per model and epoch count
the report takes the latest finished run of each seed and shows mean ± sd over seeds.
A run that differs in exactly one of ``report.ablation_keys`` goes to the ablation table;
every other finished run is counted under "left out", with the setting that kept it out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from study.config import Settings, flatten, recipe_defaults
from study.tracking.naming import SEQUENCE_TAG

NOT_COMPARED = ("model", "epochs", "seed")  # what varies across a study's cells


def expected_params(settings: Settings, data_sha256: str | None) -> dict[str, str]:
    """The MLflow params (as logged: strings) a run must carry to count. The data is matched
    by the sha256 of the prepared arrays where known, so paths may differ between machines."""
    expected = {k: str(v) for k, v in flatten(settings.recipe("")).items() if k not in NOT_COMPARED}
    if data_sha256:
        del expected["data.source"]
        expected["data.sha256"] = data_sha256
    return expected


def value(run: pd.Series, key: str):
    """The run's ``key`` as logged; a recipe key added after the run was logged reads as its
    default, the value the run had (``study.config.recipe_defaults``)."""
    value = run.get(f"params.{key}")
    if value is None or pd.isna(value):
        return recipe_defaults().get(key)
    return str(value)


@dataclass
class Cell:
    """The runs behind one table cell: the latest finished run of each seed."""

    runs: list[pd.Series]
    superseded: list[str] = field(default_factory=list)  # older runs of the same seed, not shown

    def values(self, metric: str) -> list[float]:
        return [float(v) for r in self.runs if (v := r.get(f"metrics.{metric}")) is not None and not pd.isna(v)]

    @property
    def seeds(self) -> list[int]:
        return [int(r["params.seed"]) for r in self.runs]


@dataclass
class Selection:
    study: dict[tuple[str, int], Cell]  # (model, epochs)
    ablation: dict[tuple[str, str, str, int], Cell]  # (key, value, model, epochs)
    left_out: list[str]  # one line per reason


def opened_order(runs: pd.DataFrame) -> pd.Series:
    """The order each run was opened in, by its ``sequence`` tag (the project's own count, not a
    clock); runs logged before the tag existed come before every run that has one."""
    tagged = runs.get(f"tags.{SEQUENCE_TAG}", pd.Series(index=runs.index, dtype=object))
    return pd.to_numeric(tagged, errors="coerce").fillna(-1)


def cells(runs: pd.DataFrame, keys: list[str], workspace: set[str]) -> dict[tuple, Cell]:
    """Per cell, one run per seed: the workspace's own training if it is one of them (what
    DVC shows), else the latest opened (``opened_order``; start time only among runs opened
    in the same order)."""
    cells: dict[tuple, Cell] = {}
    latest: dict[tuple, int] = {}
    runs = runs.assign(in_workspace=runs.get("tags.record_id", pd.Series(index=runs.index)).isin(workspace),
                       opened=opened_order(runs))
    for _, run in runs.sort_values(["in_workspace", "opened", "start_time"], ascending=False).iterrows():
        key = tuple(run[k] for k in keys)
        seed = (*key, int(run["params.seed"]))
        cell = cells.setdefault(key, Cell(runs=[]))
        if seed in latest:
            cell.superseded.append(run["run_id"])
        else:
            latest[seed] = len(cell.runs)
            cell.runs.append(run)
    for cell in cells.values():
        cell.runs.sort(key=lambda r: int(r["params.seed"]))
    return cells


def select(runs: pd.DataFrame, settings: Settings, data_sha256: str | None,
           workspace: set[str] = frozenset()) -> Selection:
    """``workspace``: the record ids of the trainings in outputs/."""
    if runs.empty:
        return Selection({}, {}, [])
    expected = expected_params(settings, data_sha256)
    complete = runs.reindex(columns=["params.model", "params.epochs", "params.seed"]).notna().all(axis=1)
    unnamed = int((~complete).sum())
    runs = runs[complete].copy()
    runs["params.epochs"] = runs["params.epochs"].astype(int)
    diffs = [[(k, value(run, k)) for k, v in expected.items() if value(run, k) != v] for _, run in runs.iterrows()]
    runs["n_diff"] = [len(d) for d in diffs]
    runs["diff"] = diffs
    shown_models = runs["params.model"].isin(settings.models)
    study_runs = runs[(runs["n_diff"] == 0) & shown_models]
    is_ablation = runs["diff"].map(lambda d: len(d) == 1 and d[0][0] in settings.report.ablation_keys) & shown_models
    ablation_runs = runs[is_ablation].copy()
    ablation_runs["ablation.key"] = ablation_runs["diff"].map(lambda d: d[0][0])
    ablation_runs["ablation.value"] = ablation_runs["diff"].map(lambda d: d[0][1])

    reasons: Counter[str] = Counter()
    for _, run in runs[~runs.index.isin(study_runs.index) & ~runs.index.isin(ablation_runs.index)].iterrows():
        if run["params.model"] not in settings.models and run["n_diff"] == 0:
            reasons[f"of model {run['params.model']}, not in `models`"] += 1
        else:
            reasons[" and ".join(f"{k}={v if v is not None else '(not logged)'}" for k, v in run["diff"])] += 1
    left_out = [f"{n} finished run{'s' if n > 1 else ''} with {why}" if not why.startswith("of model")
                else f"{n} finished run{'s' if n > 1 else ''} {why}" for why, n in reasons.most_common()]
    if unnamed:
        left_out.append(f"{unnamed} finished run(s) without model, epochs or seed params (not logged by the "
                        "train stage)")
    study = cells(study_runs, ["params.model", "params.epochs"], set(workspace))
    ablation = cells(ablation_runs, ["ablation.key", "ablation.value", "params.model", "params.epochs"],
                      set(workspace))
    for key, cell in [*study.items(), *ablation.items()]:
        if cell.superseded:
            left_out.append(f"{len(cell.superseded)} other run(s) of {', '.join(map(str, key))} epochs with a seed "
                            "already shown (per seed: the workspace's training, else the latest): "
                            f"{', '.join(cell.superseded)}")
    return Selection(study, ablation, left_out)


# ---------------------------------------------------------------- statistics


class StepReader:
    """A run's metric per epoch, one value per step (the last logged), in step order, as the report
    reads them. ``repeated``: the runs read so far that held a step more than once (a kill between
    an epoch's log and its saved state, under code that logged before saving), for the report to
    name. One reader per report."""

    def __init__(self, client):
        self.client = client
        self.repeated: set[str] = set()

    def __call__(self, run_id: str, key: str) -> list[tuple[int, float]]:
        by_step: dict[int, tuple[int, float]] = {}
        history = self.client.get_metric_history(run_id, key)
        for m in history:
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[m.step] = (m.timestamp, m.value)
        if len(by_step) < len(history):
            self.repeated.add(run_id)
        return [(step, value) for step, (_, value) in sorted(by_step.items())]
