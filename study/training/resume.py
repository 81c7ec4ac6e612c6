"""Resumable training: the whole training state after every epoch, where DVC never wipes it.

DVC deletes a stage's outputs before it runs the stage again, so the state lives beside
them, in ``.train_state/`` at the real project root (queued experiments share it), one
file per model and fingerprint (recipe, data, runtime): runs of other seeds or recipes,
queued side by side, never touch each other's state. Writes go through a background
thread and a rename, so an epoch waits only for a copy in memory, and a kill at any
moment leaves the previous state whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from study.config import flatten
from study.errors import StageError
from study.files import atomic_path, damaged_member, sweep_torn_entries, tensor_bytes, write_failure
from study.paths import project_root

STATE_DIR = ".train_state"
CODE_ROOT = Path(__file__).resolve().parents[2]  # the code that runs (a queued experiment's copy included)
CODE_FALLBACK = ("models/__init__.py", "models/architectures.py", "models/network.py", "stages/train.py",
                 "study/training/engine.py", "study/training/batches.py", "study/training/device.py",
                 "study/training/sgd.py", "study/training/resume.py", "study/recipe.py")


def train_code_files(code_root: Path = CODE_ROOT) -> list[str]:
    """The train stage's code dependencies as dvc.yaml lists them (files, not data folders)."""
    import yaml

    try:
        stage = yaml.safe_load((code_root / "dvc.yaml").read_text())["stages"]["train"]
        deps = stage.get("do", stage)["deps"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        deps = CODE_FALLBACK  # the stage run outside the repository (tests, a bare copy)
    return sorted(d for d in deps if (code_root / d).is_file() and d.endswith(".py"))


def code_hashes(code_root: Path = CODE_ROOT) -> dict[str, str]:
    """sha256 of each file that shapes the training: a state is resumed only by the same code."""
    return {name: hashlib.sha256((code_root / name).read_bytes()).hexdigest() for name in train_code_files(code_root)}


def fingerprint(record: dict[str, Any]) -> str:
    """What must match for a saved state to be resumed: recipe, data, the runtime that ran
    (a CUDA state does not go on as a CPU run, nor bf16 as fp32) and the training's code."""
    key = {"recipe": record["recipe"], "data_sha256": record["provenance"]["data_sha256"],
           "runtime": record["runtime"], "code": record.get("code_sha256", {})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def state_path(model: str, fingerprint_hex: str, root: Path | None = None) -> Path:
    return (root or project_root()) / STATE_DIR / f"{model}-{fingerprint_hex[:16]}.pt"


def _differences(old: dict, new: dict) -> str:
    keys = ("recipe", "runtime")
    a = flatten({k: old.get(k, {}) for k in keys})
    b = flatten({k: new.get(k, {}) for k in keys})
    changed = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if old.get("provenance", {}).get("data_sha256") != new["provenance"]["data_sha256"]:
        changed.append("data (sha256 differs)")
    old_code, new_code = old.get("code_sha256", {}), new.get("code_sha256", {})
    code = sorted(f for f in set(old_code) | set(new_code) if old_code.get(f) != new_code.get(f))
    if code:
        changed.insert(0, f"code changed in {', '.join(code)}")
    return ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")


class StateOwner:
    """The one live training of a saved state (one fingerprint): a lock (``filelock``) held for the
    training's life, released by the OS if the process dies, and a note of who holds it. A second
    process of the same recipe, data, runtime and code stops with one line naming the owner,
    instead of resuming its live state and logging into its run."""

    def __init__(self, state: Path):
        from filelock import FileLock, Timeout

        self.created = not state.parent.exists()  # made for this lock: removed again if no state is saved
        self.saved = False  # set once a state save is under way: the folder is then the state's
        try:
            state.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file in its place, a folder that may not be written
            raise StageError(f"cannot keep the training's resumable state in {state.parent}/ ({err.strerror}); "
                             f"move what is at {state.parent} out of the way (or make it writable) and rerun") from None
        self.lock, self.note = FileLock(state.with_suffix(".lock")), state.with_suffix(".owner")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            try:
                owner = json.loads(self.note.read_text())
            except (OSError, ValueError):
                owner = {}
            raise StageError(f"{state.name} is being trained right now by process {owner.get('pid', '?')} on "
                             f"{owner.get('host', '?')} (the same recipe, data, runtime and code, in {state.parent}); "
                             "wait for it to finish (or stop it) and rerun: the rerun resumes or restores it") from None
        self.note.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))

    def __enter__(self) -> StateOwner:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Let go, leaving .train_state as the training left it: the lock and its note are removed
        (while still held, so only a start in the same microsecond could lock the old file), and a
        folder made only for the lock goes too (a training stopped before its first epoch writes
        nothing)."""
        self.note.unlink(missing_ok=True)
        Path(self.lock.lock_file).unlink(missing_ok=True)
        self.lock.release()
        if self.created and not self.saved:
            try:
                self.note.parent.rmdir()
            except OSError:  # another training's state arrived meanwhile: kept
                pass


def load_resumable(model: str, record: dict[str, Any], root: Path | None = None) -> tuple[dict | None, str | None]:
    """(saved state, one line saying what happens) for a training about to start. Only a
    state whose fingerprint matches ``record`` is resumed; others are left alone and named.
    Torn writes of processes that are gone are removed first."""
    import torch

    path = state_path(model, fingerprint(record), root)
    sweep_torn_entries(path.parent)
    if path.exists():
        why, state = None, None
        if (damaged := damaged_member(path)) is not None:  # a flipped bit: never resumed as a wrong number
            why = f"is damaged ({damaged} fails its CRC-32)"
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a state cut short by a full disk
                why = f"is unreadable ({type(err).__name__})"
        if why:  # start again, the state kept aside for a look
            path.replace(path.with_suffix(".bad"))
            return None, (f"{model}: saved state {path} {why}; moved it to {path.with_suffix('.bad').name} and "
                          "starting fresh")
        if state.get("fingerprint") == fingerprint(record):
            done = state["trainer"]["epochs_done"]
            return state, (f"{model}: resuming after epoch {done}/{record['recipe']['epochs']} from {path} "
                           f"(saved {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['saved_ms'] / 1000))})")
    others = sorted(path.parent.glob(f"{model}-*.pt")) if path.parent.exists() else []
    if others:
        try:
            newest = max(others, key=lambda p: p.stat().st_mtime)
            old = torch.load(newest, map_location="cpu", weights_only=True)["record"]
            why = _differences(old, record)
        except Exception:
            why = "unreadable"
        return None, (f"{model}: a saved state for a different recipe, data, runtime or code is in {path.parent} "
                      f"({why}); starting fresh and leaving it there")
    return None, None


class StateWriter:
    """Saves states to one path, one write at a time, in a background thread; each write
    goes to a temporary file that replaces the old state only when complete."""

    def __init__(self, path: Path):
        self.path = path
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._needed = 0

    def save(self, state: dict[str, Any]) -> None:
        self.wait()
        self._needed = tensor_bytes(state)
        self._thread = threading.Thread(target=self._write, args=(state,), name="state-writer", daemon=False)
        self._thread.start()

    def _write(self, state: dict[str, Any]) -> None:
        import torch

        try:  # the outputs' scheme: whole or not at all, a killed write swept by the next start
            with atomic_path(self.path) as tmp:
                torch.save(state, tmp)
        except BaseException as err:  # reported by the next wait(), in the main thread
            self._error = err

    def wait(self) -> None:
        """Block until the last write has landed; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise write_failure("the training state", self.path, self._needed, err,
                                "the last saved epoch is intact, and the rerun resumes from it") from err

    def remove(self) -> None:
        self.wait()
        self.path.unlink(missing_ok=True)
