"""Make a copied MLflow store portable: artifact URIs that name the folder of the machine that
logged them (``file:///…/mlartifacts/<run>/artifacts``) become ``mlflow-artifacts:/<run>/artifacts``,
which a server resolves under its ``--artifacts-destination``, so the store serves its files
wherever it is copied:

    python -m benchmarks.portable_store results/h100-2026-11-27
    mlflow server --backend-store-uri sqlite:///results/h100-2026-11-27/mlflow.db --serve-artifacts \\
      --artifacts-destination results/h100-2026-11-27/mlartifacts

A store is a folder with ``mlflow.db`` and ``mlartifacts/`` (the project's artifact folder,
copied whole). Runs logged through ``mlflow server --serve-artifacts`` already have such URIs
and are left as they are. Only sqlite3 from the standard library: it runs on a bare machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from study.console import run_main
from study.errors import StageError

ARTIFACT_DIR = "mlartifacts"  # study/tracking/store.py puts every experiment's artifacts there
PROXY = "mlflow-artifacts:/"


def _local_path(uri: str) -> str | None:
    """The local folder a file URI or plain path names; None for any other scheme."""
    if uri.startswith("/"):
        return uri.rstrip("/")
    parsed = urlparse(uri)
    return unquote(parsed.path).rstrip("/") if parsed.scheme == "file" else None


def _portable(uri: str) -> str | None:
    """``uri`` as an mlflow-artifacts URI relative to its ``mlartifacts`` folder, or None
    when it is not a local path inside one."""
    path = _local_path(uri)
    if path is None:
        return None
    parts = path.split("/")
    if ARTIFACT_DIR not in parts:
        return None
    return PROXY + "/".join(parts[len(parts) - parts[::-1].index(ARTIFACT_DIR):])


@contextlib.contextmanager
def rewritten(store: Path, purpose: str) -> Iterator[Path]:
    """A copy of ``store``'s mlflow.db to change, renamed onto the original only if the block
    succeeds: a failure halfway leaves the store as it was."""
    db = Path(store) / "mlflow.db"
    if not db.is_file():
        raise StageError(f"{store} holds no mlflow.db; give the folder of a results store")
    tmp = db.with_name(f".{db.name}.{purpose}")
    shutil.copyfile(db, tmp)
    try:
        yield tmp
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def make_portable(store: Path) -> list[str]:
    """Rewrite the store's artifact URIs in place (the database is written to a temporary
    copy and renamed); returns one line per experiment, run or model changed. Every
    finished run must have its artifacts in ``<store>/mlartifacts``."""
    store = Path(store)
    lines: list[str] = []
    with rewritten(store, "tmp") as tmp, sqlite3.connect(tmp) as con:
        for exp_id, name, location in con.execute("select experiment_id, name, artifact_location "
                                                  "from experiments").fetchall():
            if location.startswith(PROXY):
                continue
            new = _portable(location) or f"{PROXY}{exp_id}"  # e.g. Default's mlruns/0: holds nothing
            if _portable(location) is None and con.execute(
                    "select count(*) from runs where experiment_id = ?", (exp_id,)).fetchone()[0]:
                raise StageError(f"experiment {name!r} keeps its artifacts at {location}, outside an "
                                 f"{ARTIFACT_DIR}/ folder: copy them into {store / ARTIFACT_DIR} by hand")
            con.execute("update experiments set artifact_location = ? where experiment_id = ?", (new, exp_id))
            lines.append(f"experiment {name!r}: {location} -> {new}")
        for table, key, column in (("runs", "run_uuid", "artifact_uri"),
                                   ("logged_models", "model_id", "artifact_location")):
            for row_id, uri, status in con.execute(
                    f"select {key}, {column}, status from {table}").fetchall():  # noqa: S608 (fixed names)
                new = uri if uri.startswith(PROXY) else _portable(uri)
                if new is None:
                    raise StageError(f"{table[:-1]} {row_id}: artifact URI {uri} is not inside an "
                                     f"{ARTIFACT_DIR}/ folder; this store cannot be made portable")
                folder = store / ARTIFACT_DIR / new.removeprefix(PROXY)
                if table == "runs" and status == "FINISHED" and not folder.is_dir():
                    raise StageError(f"run {row_id} finished but {folder} is missing: copy the logging "
                                     f"machine's {ARTIFACT_DIR}/ into the store")
                if new != uri:
                    con.execute(f"update {table} set {column} = ? where {key} = ?", (new, row_id))  # noqa: S608
                    lines.append(f"{table[:-1]} {row_id}: {uri} -> {new}")
    con.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a folder holding mlflow.db and mlartifacts/")
    args = parser.parse_args()

    def work():
        lines = make_portable(args.store)
        print("\n".join(lines) if lines else f"{args.store}: every artifact URI is already portable")
        print(f"serve it: mlflow server --backend-store-uri sqlite:///{args.store}/mlflow.db --serve-artifacts "
              f"--artifacts-destination {args.store}/{ARTIFACT_DIR}")

    run_main(work)


if __name__ == "__main__":
    main()
