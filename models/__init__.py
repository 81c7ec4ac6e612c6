"""The study's four networks as data plus one builder (section 2 of the study).

Every model is ``features`` (convolutions and pooling) then ``classifier`` (fully
connected layers), the torchvision layout, so analyses such as receptive fields and
filter plots can walk any of them without per-architecture code. The tables live in
``models.architectures`` (no torch), the builder in ``models.network``.
"""

from __future__ import annotations

from models.architectures import ARCHITECTURES, FEATURES, INITS, INPUT_SIZE, MODEL_NAMES, NUM_CLASSES

_BUILDER = ("Net", "build_model", "count_parameters", "skeleton")  # models.network's, imported on first use
__all__ = ["ARCHITECTURES", "FEATURES", "INITS", "INPUT_SIZE", "MODEL_NAMES", "NUM_CLASSES", *_BUILDER]


def __getattr__(name: str):
    """The builder's names, imported on first use (PEP 562): torch takes 1-2 s to import, and
    a stage that reads only the tables (the report) never needs it."""
    if name in _BUILDER:
        from models import network

        return getattr(network, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BUILDER))
