"""Table 6's seconds, honestly: the first epoch apart from the later ones, and which runs
shared their device with another training, told from the runs' own records (host, device
name, start and end times) or said to be unknowable from them."""

from __future__ import annotations

import pandas as pd

from study.analysis.selection import Cell, StepReader


def epoch_times(steps: StepReader, runs) -> dict[str, tuple[float, float | None]]:
    """Per run id: (first epoch, mean of the later epochs) in seconds, from its logged
    ``epoch_time_s``. The first epoch carries the warm-up (CUDA graph capture, cuDNN's
    algorithm search, allocator growth), so the later ones are the training's speed."""
    times = {}
    for run in runs:
        history = steps(run["run_id"], "epoch_time_s")
        if history:
            later = [v for _, v in history[1:]]
            times[run["run_id"]] = (history[0][1], sum(later) / len(later) if later else None)
    return times


def device_sharing(runs: pd.DataFrame) -> dict[str, int | None]:
    """Per run id: how many other finished trainings ran on the same host and device name
    while it ran (their MLflow runs overlap in time); None where the run records no host
    (runs logged before the ``host`` tag): from the records it cannot then be told."""
    if runs.empty:
        return {}
    hosts = runs.get("tags.host", pd.Series(index=runs.index, dtype=object))
    known = hosts.map(lambda h: isinstance(h, str) and bool(h))
    shared = {}
    for i, run in runs.iterrows():
        if not known[i]:
            shared[run["run_id"]] = None
            continue
        same = runs[known & (hosts == hosts[i]) & (runs["tags.device_name"] == run["tags.device_name"])
                    & (runs["run_id"] != run["run_id"])]
        shared[run["run_id"]] = int(((same["start_time"] < run["end_time"]) & (same["end_time"] > run["start_time"]))
                                    .sum())
    return shared


def overlapping(runs: pd.DataFrame, run_ids: set[str]) -> int:
    """How many of ``run_ids`` overlapped another finished run in time on a device of the same
    name, hosts unknown: what the records do show when they cannot tell sharing."""
    count = 0
    for _, run in runs[runs["run_id"].isin(run_ids)].iterrows():
        others = runs[(runs["run_id"] != run["run_id"]) & (runs["tags.device_name"] == run["tags.device_name"])]
        count += bool(((others["start_time"] < run["end_time"]) & (others["end_time"] > run["start_time"])).any())
    return count


def timing_runs(cell: Cell, shared: dict[str, int | None]) -> list[pd.Series]:
    """The runs whose seconds a Table 6 cell shows: those that had the device to themselves
    where the cell has any (a mean over alone and shared runs would be neither speed nor
    throughput), else all of them, the column saying they shared."""
    return [r for r in cell.runs if shared.get(r["run_id"]) == 0] or cell.runs


def sharing_cell(cell: Cell | None, shared: dict[str, int | None]) -> str:
    if cell is None:
        return "-"
    values = [shared.get(r["run_id"]) for r in cell.runs]
    if any(v is None for v in values):
        return "cannot tell"
    busy = sum(v > 0 for v in values)
    if 0 < busy < len(values):
        return f"{len(values) - busy} alone shown; {busy} shared left out"
    return f"{busy} of {len(values)}"


def sharing_note(runs: pd.DataFrame, provenance: pd.DataFrame) -> str:
    """What the records say about trainings that shared a device, for the Table 6 caveat."""
    study = provenance[provenance["used for"] == "Tables 5-7"] if len(provenance) else provenance
    if not len(study):
        return ""
    unknown = int((study["device shared"] == "cannot tell").sum())
    shared = int(study["device shared"].str.startswith("yes").sum())
    if unknown:
        overlapped = overlapping(runs, set(study["run id"]))
        return (f"{unknown} of the {len(study)} runs in this table record no host (logged before the `host` tag), "
                "so whether they shared a device cannot be told from the records; by their MLflow start and end "
                f"times, {overlapped} of the {len(study)} ran while another training ran on a device of the same "
                "name.")
    if shared:
        return (f"{shared} of the {len(study)} runs shared their device with another training for part of their "
                "time (same host and device, overlapping in time; `device shared`): their seconds measure "
                "throughput under sharing, not the code's speed. Where a cell also has runs that had the device "
                "to themselves, it shows only those (`device shared`: how many it left out).")
    return f"None of the {len(study)} runs shared its device with another training."
