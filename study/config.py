"""The one place params.yaml is read and checked.

Every stage calls ``load_settings`` first, before it opens a tracking run or writes a file:
unknown keys, wrong types and out-of-range values become one ``StageError`` naming the
key and the fix. The defaults live in params.yaml alone; nothing here invents a value.

The *recipe* (what changes the result: models, epochs, seed, ``data.*``, ``train.*``) is
kept apart from the *runtime* (``runtime.*``: where and how fast it runs). The report
matches runs on the recipe and the data only.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from study.common import StageError

PARAMS_FILE = "params.yaml"
# as models/architectures.py has them (a test checks): not imported, so that prepare and summary
# need not depend on the architecture tables
MODEL_NAMES = ("alexnet", "vgg16", "vgg16_bn", "vgg8")
INITS = ("default", "kaiming")
MODEL_CLASSES = 10  # CIFAR-10
PRECISIONS = ("bf16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
FIX = "fix it in params.yaml or with `dvc exp run -S`"


INT_LIMIT = 2**32  # seeds and counts: what torch's and numpy's generators (and SQLite) all take
EXPERIMENT_NAME_LIMIT = 256  # MLflow's experiments.name column


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < INT_LIMIT


def _number(v) -> bool:  # finite: .inf and .nan are refused like any bad value
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


# key -> (check, what a valid value is); sections are nested dicts
SCHEMA: dict[str, Any] = {
    "epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1 (write 5, not 5.0)"),
    "seed": (lambda v: _int(v) and v >= 0, "an integer from 0 to 2^32-1"),
    "models": (lambda v: isinstance(v, list) and len(v) > 0 and all(m in MODEL_NAMES for m in v)
               and len(set(v)) == len(v), f"a non-empty list of distinct models from {', '.join(MODEL_NAMES)}"),
    "data": {
        "source": (_text, "'official' or a path to cifar-10-python.tar.gz or an image-folder tree/tarball"),
        "train_subset": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all 50,000)"),
        # below one image per class, a class would get a made-up accuracy
        "test_subset": (lambda v: _int(v) and (v == 0 or v >= MODEL_CLASSES),
                        f"0 (all 10,000) or an integer >= {MODEL_CLASSES} (one test image per class)"),
    },
    "train": {
        "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1 (write 64, not 64.0)"),
        "lr": (lambda v: _number(v) and v > 0, "a finite number > 0"),
        "momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
        "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
        "init": (lambda v: v in INITS, f"one of {', '.join(INITS)}"),
    },
    "runtime": {
        "device": (lambda v: isinstance(v, str) and DEVICE_PATTERN.fullmatch(v) is not None,
                   "one of auto, cpu, cuda, cuda:N, mps"),
        "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        "channels_last": (lambda v: isinstance(v, bool), "true or false"),
        "compile": (lambda v: isinstance(v, bool), "true or false"),
        "cuda_graphs": (lambda v: isinstance(v, bool), "true or false"),
    },
    "mlflow": {
        "experiment": (lambda v: _text(v) and len(v) <= EXPERIMENT_NAME_LIMIT,
                       f"a non-empty experiment name of at most {EXPERIMENT_NAME_LIMIT} characters"),
        "log_model": (lambda v: isinstance(v, bool), "true or false"),
        "system_metrics": (lambda v: isinstance(v, bool), "true or false"),
    },
    "evaluate": {
        "feature_map_images": (lambda v: _int(v) and 1 <= v <= 16, "an integer from 1 to 16"),
        "sample_seed": (lambda v: _int(v) and v >= 0, "an integer from 0 to 2^32-1"),
    },
    "report": {
        "short_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
        "ablation_keys": (lambda v: isinstance(v, list) and all(isinstance(k, str) and k.startswith("train.")
                                                                  and k[6:] in SCHEMA["train"] for k in v),
                          "a list of train.* keys, e.g. [train.init, train.lr]"),
    },
}


@dataclass(frozen=True)
class Data:
    source: str
    train_subset: int
    test_subset: int


@dataclass(frozen=True)
class Train:
    """The optimisation recipe (section 5.1 of the study)."""

    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    init: str


@dataclass(frozen=True)
class Runtime:
    """Where and how fast: never part of what a run is compared on."""

    device: str
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool


@dataclass(frozen=True)
class Evaluate:
    feature_map_images: int
    sample_seed: int


@dataclass(frozen=True)
class Report:
    short_epochs: int
    ablation_keys: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    epochs: int
    seed: int
    models: tuple[str, ...]
    data: Data
    train: Train
    runtime: Runtime
    experiment: str
    log_model: bool  # the evaluate stage logs the trained model as an MLflow model
    system_metrics: bool  # CPU, memory (and GPU through NVML) sampled into the training run
    evaluate: Evaluate
    report: Report

    def recipe(self, model: str) -> dict[str, Any]:
        """What one training run is, as nested plain data (saved in checkpoints, logged to MLflow)."""
        return {"model": model, "epochs": self.epochs, "seed": self.seed, "data": asdict(self.data),
                "train": asdict(self.train)}


def _check(raw: Any, schema: dict, prefix: str = "") -> None:
    if not isinstance(raw, dict):
        raise StageError(f"{prefix.rstrip('.') or 'params.yaml'} must be a mapping of keys to values; {FIX}")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise StageError(f"unknown key {prefix}{unknown[0]} in params.yaml; known keys here: "
                         f"{', '.join(prefix + k for k in schema)}")
    for key, rule in schema.items():
        name = f"{prefix}{key}"
        if key not in raw:
            raise StageError(f"{name} is missing from params.yaml; add it (see the project's params.yaml)")
        if isinstance(rule, dict):
            _check(raw[key], rule, f"{name}.")
            continue
        ok, valid = rule
        if not ok(raw[key]):
            shown = repr(raw[key])
            shown = shown if len(shown) <= 60 else f"{shown[:50]}... ({len(str(raw[key]))} characters)"
            raise StageError(f"{name} is {shown}; it must be {valid}; {FIX}")


def parse_settings(raw: Any) -> Settings:
    """Validate a params mapping (as params.yaml holds it) into typed ``Settings``."""
    _check(raw, SCHEMA)
    return Settings(
        epochs=raw["epochs"], seed=raw["seed"], models=tuple(raw["models"]),
        data=Data(**raw["data"]),
        train=Train(**{k: (float(v) if k in ("lr", "momentum", "weight_decay") else v)
                       for k, v in raw["train"].items()}),
        runtime=Runtime(**raw["runtime"]), experiment=raw["mlflow"]["experiment"],
        log_model=raw["mlflow"]["log_model"], system_metrics=raw["mlflow"]["system_metrics"],
        evaluate=Evaluate(**raw["evaluate"]),
        report=Report(short_epochs=raw["report"]["short_epochs"],
                      ablation_keys=tuple(raw["report"]["ablation_keys"])))


class _ParamsLoader(yaml.SafeLoader):
    """params.yaml as DVC (ruamel, YAML 1.2) reads it: a repeated key is an error, and
    ``1e-3`` is a number (YAML 1.1 would make it text)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise StageError(f"params.yaml: key {key!r} appears twice (line {key_node.start_mark.line + 1}); "
                                 "keep one (DVC refuses the file too)")
            seen.add(key)
        return super().construct_mapping(node, deep)


_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_params(path: Path) -> Any:
    try:
        blob = path.read_bytes()
        text = blob.decode("utf-8")
    except OSError as err:
        raise StageError(f"{path} cannot be read ({err.strerror}); it must be the project's params file") from err
    except UnicodeDecodeError as err:
        line = blob[:err.start].count(b"\n") + 1
        raise StageError(f"{path} is not UTF-8 text (byte {err.start}, line {line}); save it as UTF-8") from err
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        raise StageError(f"{path} is not valid YAML{f' (line {where.line + 1})' if where else ''}; "
                         "fix its syntax") from err


def load_settings(path: str | Path = PARAMS_FILE) -> Settings:
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path} not found; run from the project root, where params.yaml lives")
    raw = read_params(path)
    return parse_settings(raw if raw is not None else {})


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.01}} -> {"train.lr": 0.01}: the names MLflow params and the report use."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
