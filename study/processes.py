"""Processes by pid (Linux /proc): whether one is alive and still the one that had the pid,
and how long this one has run.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start_ticks(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux /proc); "" where that
    cannot be read. Tells a reused pid from the process that had it, and a process's age."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int, started: str = "") -> bool:
    """Whether process ``pid`` is alive and, given ``started`` (its ``process_start_ticks`` when it
    was recorded), still the process that had the pid rather than a newer one. Another user's live
    process counts as alive: not ours to judge."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = process_start_ticks(pid)
    return not (started and now and now != started)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): a stage's start-up cost
    (interpreter, imports) before its own code runs."""
    ticks = process_start_ticks(os.getpid())
    try:
        return float(Path("/proc/uptime").read_text().split()[0]) - int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
