"""Where and with what a result was produced: the git commit, the device's name, torch's
and Python's versions, the data's digest.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# one reading of the wall clock when this process started, then the monotonic clock only: every
# time a process records (a run's start and end, an epoch's metrics, a record's start and end)
# keeps its order and its durations when the system clock is stepped back or forward meanwhile
# (Linux's boot clock counts a laptop's sleep too; elsewhere the monotonic clock)
_ELAPSED = (lambda: time.clock_gettime(time.CLOCK_BOOTTIME)) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic
_WALL_MS, _START = int(time.time() * 1000), _ELAPSED()


def now_ms() -> int:
    """Milliseconds since the epoch, as this process's clock said at its start plus the time
    elapsed since: never earlier than a time this process recorded before."""
    return _WALL_MS + int((_ELAPSED() - _START) * 1000)


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


def provenance(*, device: str, data_sha256: str) -> dict[str, Any]:
    """Where and with what a result was produced (the recipe is recorded beside it)."""
    import torch

    from study.environment import environment

    return {
        "device": device,
        "device_name": device_name(device),
        "torch_version": str(torch.__version__),
        "python_version": sys.version.split()[0],
        "data_sha256": data_sha256,
        "git_commit": git_commit(),
        "environment": environment(),
    }
