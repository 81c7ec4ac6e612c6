"""The study's models in MLflow's Model Registry: one registered model per network
(``<experiment>-<model>``), a version per recipe run whose model was logged and checked, and
the alias ``reference`` on the version of the seed-``seed`` run of the long recipe. The report
stage registers them; loading one is a single line:

    mlflow.pyfunc.load_model("models:/alexnet-vgg-cifar10-vgg16_bn@reference")
"""

from __future__ import annotations

import json
from typing import Any

from study.tracking.naming import CHECKPOINT_TAG

REFERENCE_ALIAS = "reference"
VERSIONS_TAG = "mlflow.modelVersions"  # what the logged model's page lists as its registered versions


def link_version(client, found, name: str, version: str) -> None:
    """Name the version on its logged model, as ``mlflow.register_model`` does: without it the
    model's page says "Not registered" and its experiment's Models tab shows no registered model."""
    linked = json.loads(found.tags.get(VERSIONS_TAG) or "[]")
    if {"name": name, "version": str(version)} not in linked:
        client.set_logged_model_tags(found.model_id, {VERSIONS_TAG: json.dumps(
            [*linked, {"name": name, "version": str(version)}])})


def registered_name(experiment: str, model: str) -> str:
    return f"{experiment}-{model}"


def aliased_version(client, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, REFERENCE_ALIAS).version)
    except Exception:  # no such alias yet
        return None


def register_study(client, experiment: str, study: dict[tuple[str, int], Any], epochs: int, seed: int,
                   checked: bool = True) -> list[str]:
    """Register every recipe run's checked model (any, without ``checked``: a store logged before
    the check's tag) not registered yet; alias the reference. One line per network that gained a
    version or its alias."""
    runs = {str(run["run_id"]): (model, cell_epochs, int(run["params.seed"]))
            for (model, cell_epochs), cell in study.items() for run in cell.runs}
    if not runs:
        return []
    experiment_ids = sorted({str(run["experiment_id"]) for cell in study.values() for run in cell.runs})
    logged = {}  # run id -> its checked model (the newest, if a run held more)
    for found in client.search_logged_models(experiment_ids, order_by=[{"field_name": "creation_timestamp"}]):
        if found.source_run_id in runs and (CHECKPOINT_TAG in found.tags or not checked):
            logged[found.source_run_id] = found
    lines = []
    for model in sorted({model for model, _, _ in runs.values()}):
        mine = {run_id: found for run_id, found in logged.items() if runs[run_id][0] == model}
        if not mine:
            continue
        name = registered_name(experiment, model)
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=f"{model} trained on CIFAR-10 with the study's recipe, "
                                           "a version per run; alias `reference`: the reference run")
        # keyed by the logged model each version points at (a version read back may not carry model_id)
        versions = {v.source.removeprefix("models:/"): v
                    for v in client.search_model_versions(filter_string=f"name = '{name}'")}
        added = []
        for run_id, found in sorted(mine.items(), key=lambda item: item[1].creation_timestamp):
            if found.model_id in versions:
                link_version(client, found, name, versions[found.model_id].version)  # a store registered before
                continue
            _, run_epochs, run_seed = runs[run_id]
            versions[found.model_id] = client.create_model_version(
                name, source=f"models:/{found.model_id}", run_id=run_id, model_id=found.model_id,
                tags={"epochs": str(run_epochs), "seed": str(run_seed)},
                description=f"{found.name}, seed {run_seed}: MLflow run {run_id}")
            added.append(versions[found.model_id].version)
            link_version(client, found, name, added[-1])
        reference = next((versions[found.model_id] for run_id, found in mine.items()
                          if runs[run_id][1:] == (epochs, seed)), None)
        aliased = ""
        if reference is not None and aliased_version(client, name) != str(reference.version):
            client.set_registered_model_alias(name, REFERENCE_ALIAS, reference.version)
            aliased = f"; @{REFERENCE_ALIAS} = version {reference.version}"
        if added or aliased:
            versions_said = f"version {', '.join(map(str, added))}" if added else "no new version"
            lines.append(f"registered {name}: {versions_said}{aliased}")
    return lines
