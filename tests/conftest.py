"""Tiny data sets made by the tests themselves, in every format the prepare stage reads."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.data import CLASSES

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest-xdist worker per core: each worker and every stage it starts computes on one
    # thread, instead of two workers' thread pools spinning against each other on the same cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def random_images(n: int, seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def write_image_tree(root: Path, per_class: dict[str, int], size: int = 32, classes=CLASSES, fmt: str = "png") -> Path:
    """root/<split>/<class>/<i>.<fmt>; PNG by default, so pixels survive exactly."""
    for s, (split, count) in enumerate(per_class.items()):
        for c, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(random_images(count, seed=100 * s + c, size=size)):
                Image.fromarray(img).save(folder / f"{i:04d}.{fmt}")
    return root


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return archive


def write_official_archive(archive: Path, train_per_batch: int = 4, test_count: int = 6) -> tuple[Path, str]:
    """A tiny cifar-10-python.tar.gz in the official pickle layout; returns (path, md5)."""
    def batch(n: int, seed: int) -> bytes:
        images = random_images(n, seed)
        data = images.transpose(0, 3, 1, 2).reshape(n, -1)  # official layout: CHW rows
        labels = [(seed * n + i) % 10 for i in range(n)]
        return pickle.dumps({"batch_label": b"x", "labels": labels, "data": data, "filenames": []})

    files = {f"data_batch_{i}": batch(train_per_batch, i) for i in range(1, 6)}
    files["test_batch"] = batch(test_count, 99)
    files["batches.meta"] = pickle.dumps({"label_names": list(CLASSES), "num_vis": 3072})
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def prepared_images(tmp_path_factory, name: str, train_per_class: int, test_per_class: int) -> Path:
    """A tiny image tree run through the real prepare stage: the arrays a training reads."""
    from stages.prepare import prepare

    tree = write_image_tree(tmp_path_factory.mktemp(f"{name}-tree") / "cifar",
                            {"train": train_per_class, "test": test_per_class})
    out = tmp_path_factory.mktemp(f"{name}-data") / "cifar10"
    prepare(source=str(tree), out_dir=out)
    return out


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    return write_image_tree(tmp_path_factory.mktemp("tree") / "cifar", {"train": 4, "test": 2})


@pytest.fixture(scope="session")
def image_tarball(tmp_path_factory, image_tree) -> Path:
    return tar_folder(image_tree, tmp_path_factory.mktemp("tar") / "cifar10-png.tar.gz")


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    """Tests never write to a real tracking server or the project's own mlflow.db."""
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    yield


def subprocess_env(**extra: str) -> dict[str, str]:
    # a server's credentials reach a subprocess only when a test passes them
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME",
                                                          "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    env.update({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.com",
                # stages run as `python -m stages.x`: this interpreter's environment first on PATH
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra})
    return env


def project_params(**overrides) -> dict:
    """The committed params.yaml with ``overrides`` merged in, section by section
    (``train={"lr": 0.1}`` changes one key of the section)."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    return params


def project_settings(**overrides):
    from study.config import parse_settings

    return parse_settings(project_params(**overrides))


# tiny CPU training: the tests' common base
TINY = {"epochs": 2, "data": {"source": "tiny", "train_subset": 30, "test_subset": 20},
        "train": {"batch_size": 16}, "runtime": {"device": "cpu"}, "mlflow": {"experiment": "test-exp"}}


# a real `mlflow server` on loopback, for the tests of a team's tracking server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-mlflow-default-4t3st"}


def start_server(folder: Path, port: int, auth: bool = False) -> subprocess.Popen:
    """``mlflow server`` on loopback; with ``auth``, MLflow's basic-auth app as the team runs it
    (docs/team.md): admin SERVER_ADMIN, nobody else allowed anything until granted."""
    # MLflow 3's GenAI job runner is off, as docs/team.md's team server has it: the study only tracks, and
    # its eight extra processes doubled a server's start (11-13 CPU-s against 5.5-6 on the 2-core EPYC)
    args, env = [], subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    if auth:
        config = folder / "basic_auth.ini"
        config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                          f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                          f"admin_username = {SERVER_ADMIN['MLFLOW_TRACKING_USERNAME']}\n"
                          "auth_cache_ttl_seconds = 60\n")
        args = ["--app-name", "basic-auth"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex(),
                   MLFLOW_AUTH_ADMIN_PASSWORD=SERVER_ADMIN["MLFLOW_TRACKING_PASSWORD"])
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--serve-artifacts",
                             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            assert proc.poll() is None, "mlflow server did not start"
            time.sleep(0.5)
    raise AssertionError("mlflow server did not open its port")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pytest_collection_modifyitems(config, items):
    """The order pytest-xdist's work stealing splits in two contiguous halves, one per worker:
    the tests on the shared study first (one worker builds it while the other starts on its
    half), and the long independent tests at the head of the second half."""
    study = [item for item in items if item.get_closest_marker("study")]
    long = [item for item in items if item.get_closest_marker("long") and item not in study]
    rest = [item for item in items if item not in study and item not in long]
    half = max(0, len(items) // 2 - len(study))
    items[:] = study + rest[:half] + long + rest[half:]
