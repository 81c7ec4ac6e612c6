"""A project's own MLflow store that moved with its folder: its runs' files follow it.

A local store records absolute ``file://`` locations (the experiment's artifact folder, each
run's and each logged model's). After ``mv project project2`` a new training would recreate
``project/mlartifacts/`` and write there; a ``cp -a`` copy would write into the original's
folder. Before the project opens its own ``mlflow.db`` (the stages, under the store's lock),
the locations under the folder it was made in are rewritten to this folder, in one SQLite
transaction, with one line saying so. A copy that left ``mlartifacts/`` behind is refused in
one line instead: its runs' files are only in the other folder.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import unquote

from study.errors import StageError

ARTIFACT_DIR = "mlartifacts"
# every column of MLflow's schema that holds a location (mlflow 3: runs, logged models, registry)
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
             ("logged_models", "artifact_location"), ("model_versions", "storage_location"))
MADE_IN = re.compile(rf"^file://(/.*)/{ARTIFACT_DIR}/?$")


def folders_made_in(con: sqlite3.Connection) -> set[str]:
    """The project folders (as their file URIs spell them) that the store's experiments keep
    their artifacts under."""
    found = set()
    for (location,) in con.execute("select artifact_location from experiments"):
        if location and (match := MADE_IN.match(location)):
            found.add(match.group(1))
    return found


def follow_the_project(db: Path, root: Path) -> str | None:
    """Rewrite the store ``db`` (the project's ``mlflow.db``) to keep its files under ``root``
    when it was made in another folder; the line that says so, or None when nothing moved."""
    if not db.is_file() or db.resolve() != (root / "mlflow.db").resolve():
        return None  # not the project's own store: a server, a results store, a copy read for a report
    here = root.resolve().as_uri().removeprefix("file://")
    con = sqlite3.connect(db)
    try:
        changed, elsewhere = _rewrite(con, here, root)
    finally:
        con.close()
    if not elsewhere:
        return None
    moved = ", ".join(unquote(old) for old in elsewhere)
    return (f"MLflow store {db.name} was made in {moved}: its {changed} artifact locations now point into this "
            f"project's {ARTIFACT_DIR}/ (the project was moved or copied)")


def _rewrite(con: sqlite3.Connection, here: str, root: Path) -> tuple[int, list[str]]:
    """The locations under another project folder rewritten to ``root``'s, in one transaction:
    (how many, the folders they were under)."""
    with con:
        try:
            elsewhere = sorted(folders_made_in(con) - {here})
        except sqlite3.OperationalError as err:  # no tables yet: a store MLflow has still to make
            if "no such table" not in str(err):
                raise
            return 0, []
        if not elsewhere:
            return 0, []
        for old in elsewhere:
            old_path = Path(unquote(old))
            if old_path.joinpath(ARTIFACT_DIR).is_dir() and not (root / ARTIFACT_DIR).is_dir():
                raise StageError(f"MLflow store mlflow.db keeps its runs' files in {old_path / ARTIFACT_DIR}, another "
                                 f"project folder, and this one has no {ARTIFACT_DIR}/ (copied without it): copy it "
                                 f"here (`cp -a {old_path / ARTIFACT_DIR} {ARTIFACT_DIR}`) and rerun")
        changed = 0
        for old in elsewhere:
            for table, column in LOCATIONS:
                for prefix, new in ((f"file://{old}/", f"file://{here}/"), (f"{unquote(old)}/", f"{root.resolve()}/")):
                    try:
                        changed += con.execute(
                            f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",
                            (new, len(prefix) + 1, len(prefix), prefix)).rowcount
                    except sqlite3.OperationalError as err:  # a table this store's schema has not got yet
                        if "no such table" not in str(err):
                            raise
    return changed, elsewhere
