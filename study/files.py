"""Writes that land whole or not at all: a temporary folder beside the target, moved onto
it when complete; what a killed writer leaves is swept by the next start. And the
one-line error of a write that failed (a full disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study.errors import StageError
from study.processes import alive


@contextlib.contextmanager
def atomic_entries(folder: str | Path, names: tuple[str, ...]) -> Iterator[Path]:
    """Yield a temporary folder inside ``folder``; when the block succeeds, each entry in
    ``names`` moves from it onto its namesake in ``folder``. A failure leaves the old
    entries untouched and nothing half-written behind. Other files in ``folder`` (the
    README in ``reports/``) are never touched."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later start removes what a killed writer left (sweep_torn_entries)
    tmp = Path(tempfile.mkdtemp(prefix=f".{'+'.join(names)}.{os.getpid()}-", dir=folder))
    try:
        yield tmp
        for name in names:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_torn_entries(folder: Path) -> list[Path]:
    """Remove the temporary folders of ``atomic_entries`` whose writer is gone (a SIGKILL mid-write
    leaves one, up to a checkpoint's size); a live writer's is left alone."""
    removed = []
    for tmp in folder.glob(".*.*-*") if folder.is_dir() else []:
        pid = tmp.name.rsplit(".", 1)[-1].split("-", 1)[0]
        if tmp.is_dir() and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def damaged_member(path: Path) -> str | None:
    """The first member of a ``torch.save`` archive whose bytes fail the CRC-32 they were written
    with, or None when all hold (or the file is no archive). ``torch.load`` never checks them: a
    flipped bit loads as a wrong number."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None  # no archive at all (empty, garbage, a bare pickle): torch.load says why, in its own words


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    with atomic_entries(path.parent, (path.name,)) as tmp:
        yield tmp / path.name


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts and lists): what writing it needs on disk."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return obj.numel() * obj.element_size() if hasattr(obj, "element_size") else 0


def write_failure(what: str, where: Path, needed: int, err: BaseException, after: str) -> StageError:
    """One line for a write that failed (a full disk, a quota, a read-only folder): where, how
    much it needed, and what still stands."""
    reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else str(err).splitlines()[0][:100]
    try:
        free = f", {shutil.disk_usage(where if where.exists() else where.parent).free / 1e6:.0f} MB free"
    except OSError:
        free = ""
    return StageError(f"could not write {what} to {where} ({reason}); it needs about {needed / 1e6:.0f} MB{free}; "
                      f"free space there and rerun ({after})")


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
