"""Table 6's seconds, honestly: the first epoch apart from the later ones, and which runs
shared their device with another training, told from the runs' own records (host, device
name, start and end times) or said to be unknowable from them."""

from __future__ import annotations

import pandas as pd

from study.analysis.selection import Cell, metric_steps

TABLE6 = ("Seconds per training epoch (the pass over the training set, device synchronised), from each run's "
          "logged epoch times. The first epoch stands apart: it carries the warm-up (CUDA graph capture, cuDNN's "
          "algorithm search, memory growth) and one-off start-up that depends on what ran before it (the first "
          "training of a process or device call also pays for initialising the GPU), so it is start-up-sensitive and "
          "compares little between runs. *Later epochs* is the mean of epochs 2 to the last: the training's "
          "speed, the number to compare. DVC's `metrics.json` (`sec`) gives the mean over all epochs, the first "
          "included, and so does each MLflow run's description (runs logged by the current code add the later "
          "epochs' mean); `tables/seed_values.csv` has all three per run. "
          "`docs/speed.md` times a training alone on the device, the code's speed without sharing. "
          "The paper's hardware is unknown, so its seconds are shown for scale only, without a difference. "
          "Every cell gives its n: the 40-epoch cells of a store whose other seeds shared the GPU rest on the one "
          "run that had it alone. Trainings that shared a GPU may have run under NVIDIA MPS, which the runs do not "
          "record (a results store's README says whether its did).")


def epoch_times(client, runs) -> dict[str, tuple[float, float | None]]:
    """Per run id: (first epoch, mean of the later epochs) in seconds, from its logged
    ``epoch_time_s``. The first epoch carries the warm-up (CUDA graph capture, cuDNN's
    algorithm search, allocator growth), so the later ones are the training's speed."""
    times = {}
    for run in runs:
        history = metric_steps(client, run["run_id"], "epoch_time_s")
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
