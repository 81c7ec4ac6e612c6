"""The study's reference models in MLflow's Model Registry: one registered model per network
(``<experiment>-<model>``), a version per reference registered, and the alias ``reference`` on
the run of the study's recipe at full size (params.yaml's, no subset). Only the explicit command
``python -m stages.register`` writes the registry: never the report, never a toy or subset run.
Loading one is a single line (``load_reference`` says in one line what is missing):

    mlflow.pyfunc.load_model("models:/alexnet-vgg-cifar10-vgg16_bn@reference")
"""

from __future__ import annotations

import json

from study.errors import StageError
from study.tracking.naming import CHECKPOINT_TAG

REFERENCE_ALIAS = "reference"
VERSIONS_TAG = "mlflow.modelVersions"  # what the logged model's page lists as its registered versions
GRANT = ("AuthServiceClient(uri).grant_user_permission('{user}', 'registered_model', '{name}', 'EDIT') "
         "(docs/team.md)")


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


def checked_model(client, experiment_id: str, run_id: str):
    """The newest logged model of the run that evaluate checked against its checkpoint, or None."""
    found = [m for m in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                                    order_by=[{"field_name": "creation_timestamp"}])
             if CHECKPOINT_TAG in m.tags]
    return found[-1] if found else None


def _refusal(err: Exception, name: str, user: str | None) -> StageError | None:
    """A server's refusal to write the registered model, as one line that says why and what to do."""
    code = getattr(err, "error_code", "")
    status = getattr(err, "get_http_status_code", lambda: None)()
    grant = GRANT.format(user=user or "<you>", name=name)
    if code == "RESOURCE_ALREADY_EXISTS":
        return StageError(f"registered model {name} already exists and belongs to another member (its creator holds "
                          f"MANAGE on it; you may not read it): ask them or the server's admin to grant you EDIT on "
                          f"it: {grant}")
    if status == 403 or code == "PERMISSION_DENIED":
        return StageError(f"user {user!r} may not write registered model {name} (403): registering needs EDIT on "
                          f"it; ask its owner or the server's admin: {grant}")
    return None


def register_reference(client, name: str, found, run_id: str, epochs: int, seed: int, user: str | None = None) -> str:
    """The logged model ``found`` (of run ``run_id``) as a version of ``name`` (one version per
    logged model, never two), aliased ``reference``; the line that says what changed."""
    try:
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="trained on CIFAR-10 with the study's recipe at full "
                                           "size; alias `reference`: the run `python -m stages.register` chose")
        versions = {v.source.removeprefix("models:/"): v
                    for v in client.search_model_versions(filter_string=f"name = '{name}'")}
        version = versions.get(found.model_id)
        added = version is None
        if added:
            version = client.create_model_version(
                name, source=f"models:/{found.model_id}", run_id=run_id, model_id=found.model_id,
                tags={"epochs": str(epochs), "seed": str(seed)},
                description=f"{found.name}, seed {seed}: MLflow run {run_id}")
        link_version(client, found, name, version.version)
        moved = aliased_version(client, name) != str(version.version)
        if moved:
            client.set_registered_model_alias(name, REFERENCE_ALIAS, version.version)
    except Exception as err:
        if (refused := _refusal(err, name, user)) is not None:
            raise refused from err
        raise
    said = f"version {version.version} {'added' if added else 'already there'}"
    return f"{name}@{REFERENCE_ALIAS}: {said}, run {run_id}" + ("" if moved else " (unchanged)")


def load_reference(model: str, params: str = "params.yaml"):
    """The registered reference of ``model`` in the project's store (``mlflow.db``, or
    ``MLFLOW_TRACKING_URI``) as an MLflow pyfunc model (uint8 NCHW images in, logits out); one
    line naming what to run where the store has none, or no weights for it."""
    import mlflow

    from study.config import load_settings
    from study.tracking.store import require_store, store_error, tracking_uri

    name = registered_name(load_settings(params).mlflow.experiment, model)
    require_store(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, REFERENCE_ALIAS)
    except Exception as err:
        if getattr(err, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise store_error(tracking_uri(), err) from None  # unreachable, refused, unreadable: said as such
        raise StageError(f"no {name}@{REFERENCE_ALIAS} in the MLflow store {mlflow.get_tracking_uri()}: train the "
                         "study's recipe (`dvc repro`), then register it with `python -m stages.register`") from None
    try:
        return mlflow.pyfunc.load_model(f"models:/{name}@{REFERENCE_ALIAS}")
    except Exception as err:
        text = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        missing = any(word in text for word in ("MLmodel", "No such file", "No such artifact", "Failed to download"))
        why = "has no weights in this store" if missing else f"does not load ({type(err).__name__}: {text})"
        raise StageError(f"{name}@{REFERENCE_ALIAS} (version {version.version}, run {version.run_id}) {why}; retrain "
                         "it with `dvc repro` and register again") from None
