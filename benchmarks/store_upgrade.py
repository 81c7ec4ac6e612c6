"""Bring a committed results store to what the current code logs, in place, without training:

- logged models named for what they are (``vgg16_bn-e40``, not ``model``), one checkpoint tag
  each; a model whose files the store left out is FAILED, not "Ready", its description, status
  message and ``weights`` tag saying why and the command that brings it back;
- datasets named by source and split (``cifar10-jpeg-train``, ``cifar10-jpeg-q25-test``), their
  source the ``data.source`` the runs were given (no machine's or DVC's temporary path), with
  the arrays' schema;
- no empty ``dvc_exp_name`` tag and no "DVC experiment `-`" in a description;
- each run's data identity, ``data.jpeg_quality``, as the current train stage logs it;
- each run's ``mlflow.source.name`` the repository's name, not the path of the machine that ran it;
- no registered model: a store without weights holds no version that claims to load
  (``python -m stages.register`` registers a reference where its weights are).

    python -m benchmarks.store_upgrade results/h200-2026-11-27

The database is changed in a temporary copy and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from pathlib import Path

from benchmarks.portable_store import rewritten
from study.console import run_main
from study.errors import StageError

WHY_NOT = ("weights left out of this results store (its README.md says why): `dvc repro evaluate@{model}` on a "
           "GPU trains it again and logs a model that loads")


def _models(con, lines: list[str]) -> None:
    from mlflow.entities import LoggedModelStatus

    from study.tracking.naming import CHECKPOINT_TAG, UNCHECKED_TAG

    rows = con.execute("select m.model_id, m.experiment_id, m.name, t.value from logged_models m join tags t "
                       "on t.run_uuid = m.source_run_id and t.key = 'mlflow.runName'").fetchall()
    for model_id, experiment_id, name, run_name in rows:
        new = re.sub(r"-s\d+(?=-|$)", "", run_name, count=1)  # the run's name less its seed
        network = run_name.split("-e", 1)[0]
        why = WHY_NOT.format(model=network)
        con.execute("update logged_models set name = ?, status = ?, status_message = ? where model_id = ?",
                    (new, LoggedModelStatus.FAILED.to_int(), why, model_id))
        con.execute("insert or replace into logged_model_tags values (?, ?, 'weights', ?)",
                    (model_id, experiment_id, why))
        # the model page's Description: the why where the UI shows it first (the status hides it)
        con.execute("insert or replace into logged_model_tags values (?, ?, 'mlflow.note.content', ?)",
                    (model_id, experiment_id, f"**Does not load here:** {why}."))
        if con.execute("select count(*) from logged_model_tags where model_id = ? and tag_key = ?",
                       (model_id, CHECKPOINT_TAG)).fetchone()[0]:
            con.execute("delete from logged_model_tags where model_id = ? and tag_key = ?", (model_id, UNCHECKED_TAG))
        con.execute("update logged_model_tags set tag_value = 'stages/evaluate.py' where model_id = ? and "
                    "tag_key = 'mlflow.source.name'", (model_id,))  # was the logging machine's path
        lines.append(f"model {model_id}: {name} -> {new}, FAILED (no weights here)")


def _datasets(con, lines: list[str]) -> None:
    from study.tracking.content import dataset_name, dataset_schema

    sources = {Path(value).name: value for (value,) in con.execute(
        "select distinct value from params where key = 'data.source'")}
    schema = json.dumps({"mlflow_colspec": dataset_schema().to_dict()})  # as MetaDataset writes it
    for uuid, name, source in con.execute("select dataset_uuid, name, dataset_source from datasets").fetchall():
        if not re.fullmatch(r"cifar10-(train|test)-\d+", name):  # named by the current code: its schema
            con.execute("update datasets set dataset_schema = ? where dataset_uuid = ?", (schema, uuid))
            continue
        old = json.loads(source).get("uri", "")
        given = sources.get(Path(old).name)
        if given is None:
            raise StageError(f"dataset {name}: no run was given the source {Path(old).name}")
        split, size = name.split("-")[1], int(name.split("-")[2])
        subset = 0 if size in (50000, 10000) else size
        new = dataset_name(given, split, subset)
        con.execute("update datasets set name = ?, dataset_source = ?, dataset_schema = ? where dataset_uuid = ?",
                    (new, json.dumps({"uri": given}), schema, uuid))
        lines.append(f"dataset {name} ({Path(old).name}) -> {new}, source {given}")


def _descriptions(con, lines: list[str]) -> None:
    gone = con.execute("delete from tags where key = 'dvc_exp_name' and value = ''").rowcount
    fixed = con.execute("update tags set value = replace(value, ', DVC experiment `-`.', '.') "
                        "where key = 'mlflow.note.content' and value like '%DVC experiment `-`.%'").rowcount
    lines.append(f"{gone} empty dvc_exp_name tags removed, {fixed} descriptions without 'DVC experiment `-`'")


def _data_identity(con, lines: list[str]) -> None:
    """Each run's ``data.jpeg_quality`` param, as the current train stage logs it from meta.json (the
    images' own quantization tables): here, once, from the tarball the run was given (the mirror,
    quality 75, or a variant of benchmarks/jpeg_variants.py, named ``-q<Q>``), which the report no
    longer reads."""
    from study.data import MIRROR_QUALITY

    runs = con.execute("select run_uuid, value from params where key = 'data.source' and run_uuid not in "
                       "(select run_uuid from params where key = 'data.jpeg_quality')").fetchall()
    for run_uuid, source in runs:
        found = re.search(r"-q(\d+)\.(?:tar\.gz|tgz|tar)$", source)
        if not found and "cifar10-jpeg" not in Path(source).name:
            raise StageError(f"run {run_uuid}: data.source {source} is neither the mirror nor a variant of it")
        quality = int(found.group(1)) if found else MIRROR_QUALITY
        con.execute("insert into params (key, value, run_uuid) values ('data.jpeg_quality', ?, ?)",
                    (str(quality), run_uuid))
    lines.append(f"{len(runs)} runs given data.jpeg_quality from their data.source")


def _source_name(con, lines: list[str]) -> None:
    """Each run's ``mlflow.source.name`` as the current code logs it: the repository's name, never
    the path of the machine that ran it."""
    changed = con.execute("update tags set value = 'alexnet-vgg-cifar10' where key = 'mlflow.source.name' "
                          "and value like '%/%'").rowcount
    lines.append(f"{changed} runs' mlflow.source.name set to the repository's name")


def _unregister(db: Path, lines: list[str]) -> None:
    """No registered model in a store that holds no weights: a READY version of a model that
    cannot load says what is not so. ``stages.register`` registers a reference where its
    weights are (the registry's rule: docs/mlflow.md)."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from study.tracking.registry import VERSIONS_TAG

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    for registered in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{registered.name}'")
        sources = [v.source.removeprefix("models:/") for v in versions]
        if any(client.get_logged_model(m).status == LoggedModelStatus.READY for m in sources):
            raise StageError(f"{registered.name} has a version whose model holds its weights here: this store is not "
                             "a results store without weights; nothing was changed")
        client.delete_registered_model(registered.name)
        lines.append(f"unregistered {registered.name}: no weights of its versions are in this store")
    experiments = [e.experiment_id for e in client.search_experiments()]
    for model in client.search_logged_models(experiments):
        if VERSIONS_TAG in model.tags:
            client.delete_logged_model_tag(model.model_id, VERSIONS_TAG)


# the steps on the database itself, in order; then "unregister", through MLflow
DATABASE_STEPS = {"models": _models, "datasets": _datasets, "descriptions": _descriptions,
                  "data_identity": _data_identity, "source_name": _source_name}
STEPS = (*DATABASE_STEPS, "unregister")


def upgrade(store: Path, steps: tuple[str, ...] = STEPS) -> list[str]:
    lines: list[str] = []
    with rewritten(store, "upgrade") as tmp:
        with sqlite3.connect(tmp) as con:
            for step, run in DATABASE_STEPS.items():
                if step in steps:
                    run(con, lines)
        con.close()
        if "unregister" in steps:
            _unregister(tmp, lines)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description="Bring a committed results store's models, datasets, descriptions "
                                     "and registry to what the current code logs, without training.")
    parser.add_argument("store", type=Path, help="the folder of a results store (holding mlflow.db)")
    parser.add_argument("--step", action="append", choices=STEPS, help="only this step (repeatable; default: all)")
    args = parser.parse_args()

    def work():
        for line in upgrade(args.store, tuple(args.step or STEPS)):
            print(line)

    run_main(work)


if __name__ == "__main__":
    main()
