"""Bad settings and inputs, each through a stage's real command line: one line on stderr
naming the culprit, a non-zero exit, nothing written, no MLflow run opened."""

import io
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from conftest import TINY, project_params, subprocess_env

from models.network import build_model
from stages.prepare import prepare
from study.errors import StageError


def without(section: str, key: str) -> dict:
    params = project_params(**TINY)
    del params[section][key]
    return params


def with_params(**overrides) -> dict:
    return project_params(**{**TINY, **overrides})


# (case, stage, params written to params.yaml (a str is written as is), expected words in the one line)
BAD_SETTINGS = [
    ("float epochs", "train", with_params(epochs=5.0), "epochs is 5.0; it must be an integer >= 1"),
    ("zero epochs", "train", with_params(epochs=0), "epochs is 0"),
    ("text epochs", "train", with_params(epochs="five"), "epochs is 'five'"),
    ("negative seed", "train", with_params(seed=-1), "seed is -1"),
    ("float seed", "train", with_params(seed=1.5), "seed is 1.5"),
    ("no models", "receptive_field", with_params(models=[]), "models is []"),
    ("unknown model", "receptive_field", with_params(models=["resnet"]), "models is ['resnet']"),
    ("repeated model", "receptive_field", with_params(models=["vgg8", "vgg8"]), "distinct models"),
    ("empty source", "prepare", with_params(data={"source": ""}), "data.source is ''"),
    ("missing source", "prepare", with_params(data={"source": "/no/such/cifar.tar.gz"}),
     "data.source '/no/such/cifar.tar.gz': no such file"),
    ("negative subset", "train", with_params(data={"train_subset": -5}), "data.train_subset is -5"),
    ("float subset", "train", with_params(data={"test_subset": 10.0}), "data.test_subset is 10.0"),
    ("empty data section", "train", {**with_params(), "data": {}}, "data.source is missing from params.yaml"),
    ("null data section", "prepare", {**with_params(), "data": None}, "data must be a mapping"),
    ("float batch", "train", with_params(train={"batch_size": 64.0}), "train.batch_size is 64.0"),
    ("zero batch", "train", with_params(train={"batch_size": 0}), "train.batch_size is 0"),
    ("zero lr", "train", with_params(train={"lr": 0}), "train.lr is 0; it must be a finite number > 0"),
    ("text lr", "train", with_params(train={"lr": "fast"}), "train.lr is 'fast'"),
    ("momentum 1.5", "train", with_params(train={"momentum": 1.5}), "train.momentum is 1.5"),
    ("negative decay", "train", with_params(train={"weight_decay": -1}), "train.weight_decay is -1"),
    ("unknown init", "train", with_params(train={"init": "xavier"}), "train.init is 'xavier'"),
    ("unknown train key", "train", with_params(train={"learning_rate": 0.1}), "unknown key train.learning_rate"),
    ("missing train key", "train", without("train", "lr"), "train.lr is missing"),
    ("device gpu", "train", with_params(runtime={"device": "gpu"}), "runtime.device is 'gpu'"),
    ("precision fp8", "train", with_params(runtime={"precision": "fp8"}), "runtime.precision is 'fp8'"),
    ("graphs yes", "train", with_params(runtime={"cuda_graphs": "yes"}), "runtime.cuda_graphs is 'yes'"),
    ("device key in train", "train", with_params(train={"device": "cpu"}), "unknown key train.device"),
    ("empty experiment", "train", with_params(mlflow={"experiment": ""}), "mlflow.experiment is ''"),
    ("no feature maps", "evaluate", with_params(evaluate={"feature_map_images": 0}),
     "evaluate.feature_map_images is 0"),
    ("zero short epochs", "report", with_params(report={"short_epochs": 0}), "report.short_epochs is 0"),
    ("ablation key outside train", "report", with_params(report={"ablation_keys": ["lr"]}),
     "report.ablation_keys is ['lr']"),
    ("unknown top-level key", "train", {**with_params(), "epoch": 5}, "unknown key epoch"),
    ("broken YAML", "train", "epochs: [5\nseed: 0\n", "params.yaml is not valid YAML"),
    # issue 20: non-finite numbers, one reading of params.yaml, no made-up zeros, and more found by trying
    ("infinite lr", "train", with_params(train={"lr": float("inf")}), "train.lr is inf; it must be a finite number"),
    ("nan lr", "train", with_params(train={"lr": float("nan")}), "train.lr is nan"),
    ("nan momentum", "train", with_params(train={"momentum": float("nan")}), "train.momentum is nan"),
    ("infinite decay", "train", with_params(train={"weight_decay": float("inf")}), "train.weight_decay is inf"),
    ("seed 2^64", "train", with_params(seed=2**64), "seed is 18446744073709551616; it must be an integer from 0"),
    ("sample seed 2^40", "evaluate", with_params(evaluate={"sample_seed": 2**40}), "evaluate.sample_seed is"),
    ("epochs 2^40", "train", with_params(epochs=2**40), "epochs is 1099511627776"),
    ("duplicate key", "train", yaml.safe_dump(with_params()) + "epochs: 7\n", "key 'epochs' appears twice"),
    ("not UTF-8", "train", yaml.safe_dump(with_params()).encode() + b"# caf\xe9\n", "is not UTF-8 text"),
    ("test subset 3", "train", with_params(data={"test_subset": 3}), "data.test_subset is 3; it must be 0"),
    ("600-character experiment", "train", with_params(mlflow={"experiment": "x" * 600}),
     "mlflow.experiment is 'xxxxx"),
    ("models as text", "receptive_field", with_params(models="vgg8"), "models is 'vgg8'"),
    ("numeric source", "prepare", with_params(data={"source": 123}), "data.source is 123"),
    ("device cuda:x", "train", with_params(runtime={"device": "cuda:x"}), "runtime.device is 'cuda:x'"),
    ("null init", "train", with_params(train={"init": None}), "train.init is None"),
    ("log_model yes", "evaluate", with_params(mlflow={"log_model": "yes"}), "mlflow.log_model is 'yes'"),
    ("17 feature maps", "evaluate", with_params(evaluate={"feature_map_images": 17}),
     "evaluate.feature_map_images is 17"),
    ("params a list", "train", "- 1\n- 2\n", "params.yaml must be a mapping"),
    ("params empty", "train", "", "epochs is missing from params.yaml"),
    ("tab indentation", "train", "data:\n\tsource: x\n", "params.yaml is not valid YAML"),
]
MODULE = {"train": ["stages.train", "--model", "vgg8"], "evaluate": ["stages.evaluate", "--model", "alexnet"],
          "prepare": ["stages.prepare"], "receptive_field": ["stages.receptive_field"], "report": ["stages.report"]}


@pytest.fixture()
def workdir(tmp_path, image_tree):
    prepare(source=str(image_tree), out_dir=tmp_path / "data" / "cifar10")
    return tmp_path


def run_stage(workdir, stage, params, **env):
    if isinstance(params, bytes):
        (workdir / "params.yaml").write_bytes(params)
    else:
        (workdir / "params.yaml").write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", *MODULE[stage]], cwd=workdir, capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=300)


def assert_one_line_error(proc, expected):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def assert_nothing_written(workdir):
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "params.yaml"]  # no outputs, reports or store


@pytest.mark.parametrize(("case", "stage", "params", "expected"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_bad_setting_is_one_line_and_writes_nothing(workdir, case, stage, params, expected):
    proc = run_stage(workdir, stage, params)
    assert_one_line_error(proc, expected)
    assert_nothing_written(workdir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_opens_no_run(workdir):
    proc = run_stage(workdir, "train", with_params(runtime={"device": "cuda"}))
    assert_one_line_error(proc, "runtime.device is 'cuda' but CUDA is not available here")
    assert_nothing_written(workdir)  # no mlflow.db: the run was never opened


class Payload:
    """Unpickling this runs a command: the attack a shared DVC remote makes possible."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def write_checkpoint(workdir, kind):
    path = workdir / "outputs/alexnet/checkpoint.pt"
    path.parent.mkdir(parents=True)
    vgg8 = {"model_name": "vgg8", "state_dict": build_model("vgg8").state_dict(),
            "record": {"recipe": {"model": "vgg8"}}}
    if kind == "payload":
        path.write_bytes(pickle.dumps({"model_name": "alexnet", "x": Payload(workdir / "pwned")}))
    elif kind == "wrong model":
        torch.save(vgg8, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "bare state_dict":
        torch.save(build_model("alexnet").state_dict(), path)


BAD_CHECKPOINTS = [
    ("payload", "is not a safe, readable checkpoint"),
    ("wrong model", "holds a 'vgg8' checkpoint, not 'alexnet'"),
    ("empty", "is not a safe, readable checkpoint"),
    ("random", "is not a safe, readable checkpoint"),
    ("bare state_dict", "is not a checkpoint written by the train stage"),
]


@pytest.mark.parametrize(("kind", "expected"), BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_one_line_and_never_runs_code(workdir, kind, expected):
    write_checkpoint(workdir, kind)
    proc = run_stage(workdir, "evaluate", with_params())
    assert_one_line_error(proc, f"outputs/alexnet/checkpoint.pt {expected}" if kind != "wrong model" else expected)
    assert "dvc checkout outputs/alexnet/checkpoint.pt" in proc.stderr
    assert not (workdir / "pwned").exists()
    assert not (workdir / "outputs/alexnet/eval").exists()


def test_corrupt_store_is_one_line_and_the_report_survives(workdir):
    (workdir / "mlflow.db").write_bytes(b"not a database " * 200)
    (workdir / "reports").mkdir()
    (workdir / "reports/report.md").write_text("the last good report")
    proc = run_stage(workdir, "report", with_params())
    assert_one_line_error(proc, "mlflow.db is not a readable MLflow database")
    assert "mv " in proc.stderr and "mlflow.db.bad" in proc.stderr
    assert (workdir / "reports/report.md").read_text() == "the last good report"


def test_unreachable_server_opens_no_run_and_writes_nothing(workdir):
    proc = run_stage(workdir, "train", with_params(), MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert_one_line_error(proc, "MLflow tracking store http://127.0.0.1:9 is unreachable")
    assert_nothing_written(workdir)


def test_no_run_was_left_failed_or_running(workdir):
    """The table above leaves no store behind; a store that exists gains no run, neither from a
    setting refused before the store opens nor from bad input found after it has (a subset larger
    than the prepared data, a file where the resumable state goes): one line each."""
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("test-exp")
    for params in (with_params(epochs=5.0), with_params(train={"batch_size": 64.0}),
                   with_params(runtime={"device": "gpu"})):
        assert run_stage(workdir, "train", params).returncode == 1
    assert_one_line_error(run_stage(workdir, "train", with_params(data={"train_subset": 10_000})),
                          "data.train_subset is 10000, but the prepared split holds only 40 images; set it to 0")
    (workdir / ".train_state").write_text("a file where the state's folder goes")
    proc = run_stage(workdir, "train", with_params())
    assert_one_line_error(proc, "cannot keep the training's resumable state in")
    assert "move what is at" in proc.stderr and not (workdir / "outputs").exists()
    runs = mlflow.search_runs(experiment_names=["test-exp"])
    assert runs.empty


def test_checkpoint_with_nan_weights_is_refused_in_one_line(workdir):
    path = workdir / "outputs/alexnet/checkpoint.pt"
    path.parent.mkdir(parents=True)
    state = build_model("alexnet").state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save({"model_name": "alexnet", "state_dict": state, "record": {"recipe": {"model": "alexnet"}}}, path)
    proc = run_stage(workdir, "evaluate", with_params())
    assert_one_line_error(proc, "1 weight tensors hold NaN or inf (first: features.0.weight)")
    assert "lower train.lr" in proc.stderr
    assert not (workdir / "outputs/alexnet/eval").exists() and not (workdir / "mlflow.db").exists()


def test_a_half_precision_checkpoint_loads_as_fp32(tmp_path):
    """Loading assigns the checkpoint's tensors (no init to overwrite): a half-precision file still
    gives the fp32 network every stage computes with, with its weights."""
    from stages.evaluate import load_checkpoint

    path = tmp_path / "vgg8/checkpoint.pt"
    path.parent.mkdir(parents=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in build_model("vgg8").state_dict().items()}
    torch.save({"model_name": "vgg8", "state_dict": state, "record": {"recipe": {"model": "vgg8"}}}, path)
    net, _ = load_checkpoint("vgg8", tmp_path)
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert torch.equal(net.features[0].weight, state["features.0.weight"].float())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, in a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def tarball_with(tmp_path, image_tree, extra: dict[str, bytes]) -> Path:
    archive = tmp_path / "source.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_tree, arcname=".")
        for name, blob in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def bad_source(tmp_path, image_tree, kind: str) -> Path:
    if kind == "zip":
        path = tmp_path / "cifar.tar.gz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("train/airplane/0.png", b"x")
        return path
    if kind == "random bytes":
        path = tmp_path / "cifar.tar.gz"
        path.write_bytes(bytes(range(7, 256)) * 40)
        return path
    if kind == "truncated gzip":
        whole = tarball_with(tmp_path, image_tree, {}).read_bytes()
        path = tmp_path / "cut.tar.gz"
        path.write_bytes(whole[: len(whole) // 2])
        return path
    if kind == "decompression bomb":
        return tarball_with(tmp_path, image_tree, {"train/cat/bomb.png": png_declaring(20000, 20000)})
    if kind == "2 MB .png":
        return tarball_with(tmp_path, image_tree, {"train/cat/huge.png": bytes(2 << 20)})
    raise ValueError(kind)


BAD_SOURCES = [
    ("zip", "is a zip archive, not a tarball"),
    ("random bytes", "is not an archive (neither tar, gzip, bzip2, xz nor zip"),
    ("truncated gzip", "truncated or corrupt archive"),
    ("decompression bomb", "train/cat/bomb.png: declares an image far larger than 32x32 (a decompression bomb"),
    ("2 MB .png", "train/cat/huge.png is 2,097,152 bytes, not a 32x32 image"),
]


@pytest.mark.parametrize(("kind", "expected"), BAD_SOURCES, ids=[c[0] for c in BAD_SOURCES])
def test_bad_data_source_is_one_line_and_writes_nothing(workdir, tmp_path_factory, image_tree, kind, expected):
    source = bad_source(tmp_path_factory.mktemp("source"), image_tree, kind)
    before = (workdir / "data/cifar10/meta.json").read_text()
    proc = run_stage(workdir, "prepare", with_params(data={"source": str(source)}))
    assert_one_line_error(proc, expected)
    assert (workdir / "data/cifar10/meta.json").read_text() == before  # the last prepared data stands
    assert_nothing_written(workdir)


def test_members_that_are_not_images_are_skipped_unread(tmp_path, image_tree):
    from study.data import load_image_folder

    archive = tarball_with(tmp_path, image_tree, {"train/notes.txt": bytes(200 << 20), "test/cat/readme.md": b"hi"})
    tracemalloc.start()
    splits = load_image_folder(archive)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(splits["train"][1]) == 40 and len(splits["test"][1]) == 20
    assert peak < 50 << 20, f"{peak / 1e6:.0f} MB peak: the 200 MB text member was read"


def test_params_are_checked_by_pydantic_models_per_section():
    """One strict pydantic model per params.yaml section, extra keys forbidden; the checks'
    wording is the one-line error's, so every bad setting above stays one line in-process too."""
    import pydantic

    from study.config import Settings, parse_settings

    sections = [Settings] + [f.annotation for f in Settings.model_fields.values()
                             if isinstance(f.annotation, type) and issubclass(f.annotation, pydantic.BaseModel)]
    assert [s.__name__ for s in sections] == ["Settings", "Data", "Train", "Runtime", "Mlflow", "Evaluate", "Report"]
    for section in sections:
        assert section.model_config["extra"] == "forbid" and section.model_config["strict"], section
    for case, _, params, expected in BAD_SETTINGS:
        if isinstance(params, dict) and case != "missing source":  # a path that does not exist: prepare's check
            with pytest.raises(StageError, match=re.escape(expected)):
                parse_settings(params)


def billion_laughs(levels: int = 7) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


HOSTILE_PARAMS = [
    ("list as a key", "? [epochs, seed]\n: 5\n", "params.yaml: a list is used as a key (line 1); keys are names"),
    ("mapping as a key", "? {epochs: 5}\n: 5\n", "params.yaml: a mapping is used as a key (line 1)"),
    ("500-deep nesting", "epochs: " + "[" * 500 + "]" * 500 + "\n", "params.yaml nests deeper than 20 levels"),
    ("alias bomb", billion_laughs(), "params.yaml uses more than 50 aliases"),
]


@pytest.mark.parametrize(("case", "text", "expected"), HOSTILE_PARAMS, ids=[c[0] for c in HOSTILE_PARAMS])
def test_hostile_params_are_one_line_in_under_a_second_with_bounded_memory(tmp_path, case, text, expected):
    import time

    from study.config import load_settings

    (tmp_path / "params.yaml").write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(StageError) as raised:
            load_settings(tmp_path / "params.yaml")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0 and peak < 20 << 20, (case, peak)
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)


def test_a_merge_key_merges_as_dvc_reads_it(tmp_path):
    from study.config import load_settings

    text = yaml.safe_dump(with_params()).replace("  init: default\n", "")
    (tmp_path / "params.yaml").write_text(text.replace("train:\n", "train:\n  <<: {batch_size: 8, init: kaiming}\n"))
    settings = load_settings(tmp_path / "params.yaml")
    assert settings.train.init == "kaiming"  # from the merge
    assert settings.train.batch_size == TINY["train"]["batch_size"]  # the explicit key wins, as YAML says


def test_a_source_name_longer_than_the_file_system_allows_is_one_line():
    from study.data import resolve_source

    with pytest.raises(StageError, match=r"data.source 'x{60}\.\.\. \(307 characters\)' cannot be a path here"):
        resolve_source("x" * 300 + ".tar.gz")


@pytest.mark.parametrize("uri", ["http://alice:s3cret@host:5000", "http://alice:p@ssW0rdX@host",
                                 "http://alice:ab/cdSecretY@host", "https://bob:a:b%40c@host/path",
                                 "postgresql://u:x@y/z@db:5432/mlflow"])
def test_no_password_survives_redaction_whatever_it_holds(uri):
    """Every URL's user information goes, to the last "@", whatever characters the password holds."""
    from study.console import redact

    for line in (f"store {uri} is unreachable", f"'{uri}'", f"({uri}), then", uri):
        shown = redact(line)
        assert not any(secret in shown for secret in ("s3cret", "ssW0rdX", "SecretY", "a:b%40c", "x@y/z")), shown
        assert "@" not in shown.split("://", 1)[1].split()[0].split("'")[0], shown
    assert redact(f"see {uri}").startswith("see " + uri.split("://")[0] + "://")
