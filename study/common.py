"""Shared plumbing for the stages: parameters, paths, provenance, atomic writes.

Nothing here imports MLflow or DVC, so the training loop and the benchmarks run on a
bare machine with only torch, numpy, pandas, pyyaml and matplotlib.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUTPUT_ROOT = Path("outputs")
RECEPTIVE_FIELD_DIR = OUTPUT_ROOT / "receptive_fields"
INIT_SIGNAL_DIR = OUTPUT_ROOT / "init_signal"


def output_paths(model: str, root: Path = OUTPUT_ROOT) -> dict[str, Path]:
    """A training's outputs (stage train@<model>), read by evaluate and the report."""
    folder = root / model
    return {"checkpoint": folder / "checkpoint.pt", "record": folder / "record.json",
            "metrics": folder / "metrics.json", "history": folder / "history.csv"}


class StageError(Exception):
    """A bad input or setting: the message names the culprit and the fix."""


class Diverged(StageError):
    """A training whose loss became NaN or inf: stopped at that epoch, nothing written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler pre-empting the job), raised like Ctrl-C so that the same
    handlers end MLflow runs as KILLED and keep what was saved."""


class Interrupted(Exception):
    """An interrupted stage that has put its house in order: one line, then ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def project_root() -> Path:
    """The real repository root. Queued DVC experiments run in a temporary copy of the
    repo and set DVC_ROOT to the real one, so shared state (the MLflow store, relative
    data paths given by the user) resolves there."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    try:  # the CPU's model name where Linux tells it
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def plural(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count in words, for messages and titles."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def process_start_ticks(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux /proc); "" where that
    cannot be read. Tells a reused pid from the process that had it, and a process's age."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_age_s() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): a stage's start-up cost
    (interpreter, imports) before its own code runs."""
    ticks = process_start_ticks(os.getpid())
    try:
        return float(Path("/proc/uptime").read_text().split()[0]) - int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def provenance(*, device: str, data_sha256: str) -> dict[str, Any]:
    """Where and with what a result was produced (the recipe is recorded beside it)."""
    import torch

    return {
        "device": device,
        "device_name": device_name(device),
        "torch_version": str(torch.__version__),
        "python_version": sys.version.split()[0],
        "data_sha256": data_sha256,
        "git_commit": git_commit(),
    }


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
        if not tmp.is_dir() or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        except PermissionError:  # another user's process: not ours to judge
            continue
    return removed


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


# a URL's user information: http://alice:password@host -> http://host
USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` with every URL's user information left out: a tracking URI may carry a password
    (http://user:password@host), and nothing the project prints may."""
    return USERINFO.sub(r"\1", text)


class RedactedStream:
    """A text stream that writes through ``redact``: the stage's own lines, MLflow's and tqdm's."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def protect_output() -> None:
    """No secret in any output of this process: stdout and stderr redacted, and MLflow's own
    "View run" lines (the URI as given) left out; the stages print their own line instead."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactedStream):
            setattr(sys, name, RedactedStream(stream))


def run_main(func) -> None:
    """Run a stage's work and end the process: a StageError becomes one line on stderr and exit
    status 1, an interrupt 130 (143 for SIGTERM). Nothing it prints carries a URL's password."""
    def on_sigterm(signum, frame):
        raise Terminated()

    protect_output()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        func()
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        exit_now(1)
    except Interrupted as err:
        print(err, file=sys.stderr)
        exit_now(err.exit_code)
    except KeyboardInterrupt as err:
        print("interrupted: this stage's outputs were not written; rerun the same command to start it again",
              file=sys.stderr)
        exit_now(143 if isinstance(err, Terminated) else 130)
    exit_now(0)


def exit_now(code: int) -> None:
    """End the process once its work is done, without tearing the interpreter down: the exit
    handlers run and the streams are flushed, but the teardown of the modules (a second or more
    with torch, MLflow and matplotlib loaded) is skipped. Every output is
    written and closed by now; MLflow's calls are synchronous. Threads still running are not
    waited for: a stage waits for its own first (the training for its state save, on every path
    out). Waiting for every thread that is not a daemon could hang on a thread pool's idle worker."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
