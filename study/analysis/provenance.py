"""The runs a report names, and where and with what they ran: the provenance table (every run
the tables, the ablation and the JPEG section use), each run's environment, the commits behind a
cell's seeds, and the one training behind each model's figures (the run that holds it now)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from study.analysis.selection import Selection
from study.console import plural
from study.paths import output_paths
from study.tracking.naming import SEQUENCE_TAG


def figure_sources(models, output_root: Path, client=None) -> dict[str, str]:
    """Per model: the one training behind its filter, feature-map and confusion figures, and how far
    its first layer moved from its initial weights: from its MLflow run (the source of truth; the run
    that holds the training now, where the record's was deleted and the training logged again), else
    from the evaluate stage's metrics in the workspace."""
    sources = {}
    for model in models:
        path = output_paths(model, output_root)["record"]
        if path.exists():
            record = json.loads(path.read_text())
            recipe, summary = record.get("recipe", {}), record.get("summary") or {}
            accuracy = f", test accuracy {summary['final_test_acc']:.2f}%" if "final_test_acc" in summary else ""
            evaluation = path.with_name("eval") / "metrics.json"
            corr = json.loads(evaluation.read_text()).get("first_layer_init_corr") if evaluation.exists() else None
            run_id = existing_run(client, record) if client is not None else record.get("mlflow_run_id")
            if client is not None and run_id:
                try:
                    corr = client.get_run(run_id).data.metrics.get("eval/first_layer_init_corr", corr)
                except Exception:  # a store without that run: the workspace's number, if any
                    pass
            moved = (f"; its trained first-layer filters correlate {corr:.2f} on average with this seed's initial ones"
                     if corr is not None else "; how far its first layer moved from its initial weights was not "
                     "measured (a store without the evaluation's metrics)")
            epochs = plural(int(recipe.get("epochs") or 0), "epoch")
            sources[model] = (f"seed {recipe.get('seed')}, {epochs}, MLflow run `{run_id or 'not logged'}`{accuracy} "
                              f"(this seed alone){moved}")
    return sources


def existing_run(client, record: dict) -> str | None:
    """The MLflow run that holds a training: its record's, or, where that one is gone (deleted,
    purged by `mlflow gc`), the finished run logged again from the record (its record_id tag)."""
    run_id = record.get("mlflow_run_id")
    try:
        if run_id and client.get_run(run_id).info.lifecycle_stage == "active":
            return run_id
    except Exception:  # purged, or in another store
        pass
    try:
        found = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   f"tags.record_id = '{record.get('record_id')}' and attributes.status = 'FINISHED'",
                                   max_results=1, order_by=[f"tags.{SEQUENCE_TAG} DESC", "attributes.start_time DESC"])
    except Exception:
        return None
    return found[0].info.run_id if found else None


def environment_cell(run) -> str:
    """The run's environment in the provenance table: its packages' digest and whether that was
    the lock's set, or that the run recorded none (logged before runs carried their environment)."""
    digest = run.get("tags.env.packages_sha256")
    if digest is None or pd.isna(digest):
        return "not recorded"
    lock = str(run.get("tags.env.lock") or "")
    return f"{str(digest)[:12]} ({'the lock' if lock.startswith('matches') else lock.split(':')[0]})"


def provenance_table(selection: Selection, short: int | None, long: int, models, shared: dict,
                     variants: dict | None = None) -> pd.DataFrame:
    """Every run the report uses, the ablation's and the JPEG variants' included, and what it was used for."""
    used = [(m, e, "Tables 5-7", run) for e in (short, long) if e for m in models
            if (m, e) in selection.study for run in selection.study[(m, e)].runs]
    used += [(m, e, f"ablation: {key}={value}", run) for (key, value, m, e), cell in sorted(selection.ablation.items())
             for run in cell.runs]
    used += [(m, e, f"JPEG cost: quality {q}", run) for (m, e, q), cell in sorted((variants or {}).items())
             for run in cell.runs]
    return pd.DataFrame([{
        "model": m, "epochs": e, "seed": int(run["params.seed"]), "used for": role,
        "run name": run.get("tags.mlflow.runName"), "run id": run["run_id"],
        "started": str(run["start_time"])[:19], "device": run.get("tags.device_name"),
        "device shared": {None: "cannot tell", 0: "no"}.get(shared.get(run["run_id"]),
                                                            f"yes, with {shared.get(run['run_id'])}"),
        "precision": run.get("params.runtime.precision", run.get("tags.precision")),
        "torch": run.get("tags.torch_version"), "git commit": str(run.get("tags.git_commit"))[:10],
        "environment": environment_cell(run),
        "data sha256": str(run.get("tags.data_sha256"))[:12],
        "restored": "yes" if run.get("tags.restored") == "true" else ""} for m, e, role, run in used])


def seed_commits(selection: Selection) -> dict[tuple[str, int], str]:
    """Per cell, the commit each seed's run was trained at: "abc1234567 (0), def… (1, 2)"."""
    out = {}
    for key, cell in selection.study.items():
        by_commit: dict[str, list[int]] = {}
        for run in cell.runs:
            by_commit.setdefault(str(run.get("tags.git_commit") or "unknown")[:10], []).append(int(run["params.seed"]))
        out[key] = ", ".join(f"{c} ({', '.join(map(str, s))})" for c, s in by_commit.items())
    return out
