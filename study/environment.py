"""The environment a training ran in: Python, torch with its CUDA, cuDNN and driver, the
libraries that shape or record a result, a digest of every installed package, and whether that
set is the lock file's (requirements/<platform>.lock). Recorded in record.json, as tags of the
MLflow run and as its environment.txt.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

LOCKS = Path(__file__).resolve().parents[1] / "requirements"  # beside the code that runs
PROJECT = "alexnet-vgg-cifar10"  # the project's own distribution: not part of the installed set
TOOLING = {"pip", "setuptools", "wheel", PROJECT}  # what a venv holds besides the lock's packages
LIBRARIES = ("numpy", "mlflow", "dvc", "pandas", "scipy")  # versions worth a tag of their own


def lock_name() -> str:
    """The lock file of this platform: linux-x86_64, macos-arm64, ..."""
    system = {"darwin": "macos"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("aarch64", "arm64")
    return f"{system}-{machine}.lock"


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed() -> dict[str, str]:
    """Every installed distribution but the tooling and the project: {name: version}."""
    from importlib.metadata import distributions

    found = {normalise(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}
    return dict(sorted((name, version) for name, version in found.items() if name not in TOOLING))


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.split(";")[0].strip()
    return pins


def lock_status(packages: dict[str, str], locks: Path = LOCKS) -> str:
    """Whether the installed set is the platform's lock: "matches <lock>", or how it differs."""
    path = locks / lock_name()
    if not path.exists():
        return f"no lock for this platform ({lock_name()})"
    pins = {name: version for name, version in lock_pins(path).items() if name not in TOOLING}
    differ = sorted(n for n in pins.keys() | packages.keys() if pins.get(n) != packages.get(n))
    if not differ:
        return f"matches requirements/{path.name}"
    shown = ", ".join(f"{n} {packages.get(n, 'missing')} (lock {pins.get(n, 'none')})" for n in differ[:3])
    more = ", ..." if len(differ) > 3 else ""
    return f"differs from requirements/{path.name} in {len(differ)} packages: {shown}{more}"


def gpu_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def environment() -> dict[str, Any]:
    """What record.json keeps of the environment (the package list included)."""
    import torch

    packages = installed()
    cuda = torch.version.cuda or "none"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": sys.version.split()[0], "platform": f"{sys.platform}-{platform.machine()}",
        "torch": str(torch.__version__), "cuda": cuda, "cudnn": str(cudnn) if cudnn else "none",
        "gpu_driver": gpu_driver() if torch.cuda.is_available() else "none",
        **{name: packages.get(name, "not installed") for name in LIBRARIES},
        "packages_sha256": hashlib.sha256("".join(f"{n}=={v}\n" for n, v in packages.items()).encode()).hexdigest(),
        "lock": lock_status(packages),
        "packages": [f"{n}=={v}" for n, v in packages.items()],
    }


def environment_tags(env: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags of an environment: env.python, env.torch, ... (the package list: environment.txt)."""
    return {f"env.{key}": str(value) for key, value in env.items() if key != "packages"}


def environment_text(env: dict[str, Any]) -> str:
    """environment.txt: the summary, then every installed package as pip would pin it."""
    lines = [f"{key}: {value}" for key, value in env.items() if key != "packages"]
    return "\n".join([*lines, "", "# installed packages", *env.get("packages", [])]) + "\n"
