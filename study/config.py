"""The one place params.yaml is read and checked.

Every stage calls ``load_settings`` first, before it opens a tracking run or writes a file:
unknown keys, wrong types and out-of-range values become one ``StageError`` naming the
key, what is valid and the fix. One pydantic model per section: strict types (5.0 is no
integer, "0.1" no number), finite floats, extra keys forbidden. The values live in
params.yaml; the one exception is a recipe key added after the study, whose default here is
the value every earlier run had (``recipe_defaults``).

The *recipe* (what changes the result: models, epochs, seed, ``data.*``, ``train.*``) is
kept apart from the *runtime* (``runtime.*``: where and how fast it runs). The report
matches runs on the recipe and the data only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from models.architectures import INITS, MODEL_NAMES
from study.errors import StageError
from study.recipe import RECIPE as PAPER_RECIPE

PARAMS_FILE = "params.yaml"
ModelName = Literal[MODEL_NAMES]  # the registry's networks (models/architectures.py), torch-free
Init = Literal[INITS]
OPTIMIZERS = ("sgd", "adamw")
MODEL_CLASSES = 10  # CIFAR-10
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
FIX = "fix it in params.yaml or with `dvc exp run -S`"
INT_LIMIT = 2**32  # seeds and counts: what torch's and numpy's generators (and SQLite) all take
EXPERIMENT_NAME_LIMIT = 256  # MLflow's experiments.name column


def _valid(text: str, **constraints):
    """A field whose error says ``text``: what a valid value is, in the words of the one-line error."""
    return Field(description=text, **constraints)


def _check(predicate, what: str = "invalid"):
    def check(value):
        if not predicate(value):
            raise ValueError(what)
        return value
    return AfterValidator(check)


Count = Annotated[int, Field(lt=INT_LIMIT)]
Text = Annotated[str, _check(lambda v: v.strip() != "")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
TRUE_OR_FALSE = "true or false"


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Data(Section):
    source: Text = _valid("'official' or a path to cifar-10-python.tar.gz or an image-folder tree/tarball")
    train_subset: Count = _valid("an integer >= 0 (0 = all 50,000)", ge=0)
    # below one image per class, a class would get a made-up accuracy
    test_subset: Annotated[Count, _check(lambda v: v == 0 or v >= MODEL_CLASSES)] = _valid(
        f"0 (all 10,000) or an integer >= {MODEL_CLASSES} (one test image per class)", ge=0)


class Train(Section):
    """The optimisation recipe (section 5.1 of the study)."""

    batch_size: Count = _valid("an integer >= 1 (write 64, not 64.0)", ge=1)
    lr: Finite = _valid("a finite number > 0", gt=0)
    momentum: Finite = _valid("a number in [0, 1)", ge=0, lt=1)
    weight_decay: Finite = _valid("a number >= 0", ge=0)
    init: Init = _valid(f"one of {', '.join(INITS)}")
    # a key added after the study: its default is the value every earlier run had (see recipe_defaults)
    optimizer: Literal[OPTIMIZERS] = _valid(f"one of {', '.join(OPTIMIZERS)}", default=PAPER_RECIPE["optimizer"])


class Runtime(Section):
    """Where and how fast: never part of what a run is compared on."""

    device: Annotated[str, _check(lambda v: DEVICE_PATTERN.fullmatch(v) is not None)] = _valid(
        "one of auto, cpu, cuda, cuda:N, mps")
    precision: Literal["bf16", "fp32"] = _valid("one of bf16, fp32")
    channels_last: bool = _valid(TRUE_OR_FALSE)
    compile: bool = _valid(TRUE_OR_FALSE)
    cuda_graphs: bool = _valid(TRUE_OR_FALSE)
    # bit-identical reruns of a seed on one machine, at some speed (a key added later: off by default)
    deterministic: bool = _valid(TRUE_OR_FALSE, default=False)


class Mlflow(Section):
    # MLflow's search filters quote names (`name = '<experiment>-vgg8'`): a quote in one breaks them
    experiment: Annotated[Text, _check(lambda v: not set(v) & set("'\"\\`"))] = _valid(
        f"a non-empty experiment name of at most {EXPERIMENT_NAME_LIMIT} characters, without quotes, backquotes "
        "or backslashes", max_length=EXPERIMENT_NAME_LIMIT)
    log_model: bool = _valid(TRUE_OR_FALSE)  # the evaluate stage logs the trained model as an MLflow model
    system_metrics: bool = _valid(TRUE_OR_FALSE)  # CPU, memory (and GPU through NVML) sampled into the run


class Evaluate(Section):
    feature_map_images: Count = _valid("an integer from 1 to 16", ge=1, le=16)
    sample_seed: Count = _valid("an integer from 0 to 2^32-1", ge=0)


class Report(Section):
    short_epochs: Count = _valid("an integer >= 1", ge=1)
    ablation_keys: Annotated[tuple[str, ...], _check(
        lambda keys: all(k.startswith("train.") and k[6:] in Train.model_fields for k in keys))] = _valid(
        "a list of train.* keys, e.g. [train.init, train.lr]", strict=False)


class Settings(Section):
    """params.yaml, checked: the recipe (what changes the result) and how it runs."""

    epochs: Count = _valid("an integer >= 1 (write 5, not 5.0)", ge=1)
    seed: Count = _valid("an integer from 0 to 2^32-1", ge=0)
    models: Annotated[tuple[ModelName, ...], _check(lambda v: len(set(v)) == len(v))] = _valid(
        f"a non-empty list of distinct models from {', '.join(MODEL_NAMES)}", min_length=1, strict=False)
    data: Data
    train: Train
    runtime: Runtime
    mlflow: Mlflow
    evaluate: Evaluate
    report: Report

    def recipe(self, model: str) -> dict[str, Any]:
        """What one training run is, as nested plain data (saved in checkpoints, logged to MLflow)."""
        return {"model": model, "epochs": self.epochs, "seed": self.seed, "data": self.data.model_dump(),
                "train": self.train.model_dump()}


def recipe_defaults() -> dict[str, str]:
    """The recipe keys added after the study, as MLflow params (``train.optimizer``), with the value
    every run logged before them had. A run that lacks one is read as having it, so a new key
    leaves every earlier run, a committed store and DVC's run-cache valid; a params.yaml without
    it means the same."""
    return {f"train.{name}": str(field.default) for name, field in Train.model_fields.items()
            if not field.is_required()}


def _field_path(loc: tuple) -> tuple[type[BaseModel] | None, list[str]]:
    """The section model and the key names along ``loc``, down to the field at fault (a list
    element's error is its list's)."""
    model: type[BaseModel] | None = Settings
    names: list[str] = []
    for part in loc:
        if not isinstance(part, str) or model is None or part not in model.model_fields:
            if isinstance(part, str) and not names:
                names.append(part)
            break
        names.append(part)
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model, names


def _raw_value(raw: Any, names: list[str]) -> Any:
    for name in names:
        raw = raw[name]
    return raw


def _one_line(raw: Any, err: ValidationError) -> StageError:
    """The first error pydantic found, as the project's one line: the key, what is valid, the fix."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # unknown keys first
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        section, names = _field_path(loc[:-1])
        prefix = "".join(f"{n}." for n in names)
        known = ", ".join(prefix + k for k in (section or Settings).model_fields)
        return StageError(f"unknown key {prefix}{loc[-1]} in params.yaml; known keys here: {known}")
    if first["type"] == "missing":
        return StageError(f"{'.'.join(map(str, loc))} is missing from params.yaml; add it (see the project's "
                          "params.yaml)")
    if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return StageError(f"{'.'.join(map(str, loc)) or 'params.yaml'} must be a mapping of keys to values; {FIX}")
    _, names = _field_path(loc)
    owner: Any = Settings
    for name in names[:-1]:
        owner = owner.model_fields[name].annotation
    valid = owner.model_fields[names[-1]].description
    value = _raw_value(raw, names)
    shown = repr(value)
    shown = shown if len(shown) <= 60 else f"{shown[:50]}... ({len(str(value))} characters)"
    return StageError(f"{'.'.join(names)} is {shown}; it must be {valid}; {FIX}")


def parse_settings(raw: Any) -> Settings:
    """Validate a params mapping (as params.yaml holds it) into typed ``Settings``."""
    if not isinstance(raw, dict):
        raise StageError(f"params.yaml must be a mapping of keys to values; {FIX}")
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise _one_line(raw, err) from None


MAX_DEPTH = 20  # nesting levels: params.yaml has three
MAX_ALIASES = 50  # `*name` references: params.yaml has none; a few hundred nested ones build gigabytes


class _ParamsLoader(yaml.SafeLoader):
    """params.yaml as DVC (ruamel, YAML 1.2) reads it: a repeated key is an error, a merge key
    (``<<: *defaults``) merges, and ``1e-3`` is a number (YAML 1.1 would make it text). Nesting
    and aliases are bounded before anything is built, so a hostile file costs neither time nor memory."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth, self.aliases = 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise StageError(f"params.yaml uses more than {MAX_ALIASES} aliases (`*name`); write the values out")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise StageError(f"params.yaml nests deeper than {MAX_DEPTH} levels (line "
                             f"{self.peek_event().start_mark.line + 1}); its sections are mappings of values")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # merged keys may be overridden: no repeat
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise StageError(f"params.yaml: a {'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'} "
                                 f"is used as a key (line {key_node.start_mark.line + 1}); keys are names")
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
