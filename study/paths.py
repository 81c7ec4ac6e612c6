"""Where the stages write and read: the outputs of each training, the analyses, the
project's root (the real one under a queued DVC experiment).
"""

from __future__ import annotations

import os
from pathlib import Path

OUTPUT_ROOT = Path("outputs")

RECEPTIVE_FIELD_DIR = OUTPUT_ROOT / "receptive_fields"

INIT_SIGNAL_DIR = OUTPUT_ROOT / "init_signal"


def output_paths(model: str, root: Path = OUTPUT_ROOT) -> dict[str, Path]:
    """A training's outputs (stage train@<model>), read by evaluate and the report."""
    folder = root / model
    return {"checkpoint": folder / "checkpoint.pt", "record": folder / "record.json",
            "metrics": folder / "metrics.json", "history": folder / "history.csv"}


def project_root() -> Path:
    """The real repository root. Queued DVC experiments run in a temporary copy of the
    repo and set DVC_ROOT to the real one, so shared state (the MLflow store, relative
    data paths given by the user) resolves there."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
