"""The environment pinned and recorded: the lock file agrees with pyproject.toml's ranges, and a
run's environment says which packages ran and whether they were the lock's."""

import pytest
import tomllib
from conftest import ROOT
from packaging.requirements import Requirement

from study.environment import environment, environment_tags, environment_text, lock_name, lock_pins, lock_status

LOCKS = sorted((ROOT / "requirements").glob("*.lock"))


def test_there_is_a_lock_for_linux_and_for_macos_arm64():
    assert [path.name for path in LOCKS] == ["linux-x86_64.lock", "macos-arm64.lock"]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.stem)
def test_the_lock_pins_every_dependency_within_pyproject_ranges(lock):
    """CI's check that each lock and pyproject.toml tell one story: every dependency, the extras
    README installs included, is pinned to a version its range allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = lock_pins(lock)
    for line in wanted:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-").replace(".", "-")
        assert name in pins, f"{requirement.name} is not in {lock.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])
    assert all("==" in line for line in lock.read_text().splitlines() if line and not line.startswith("#"))


def test_the_locks_agree_on_every_package_they_share():
    """One package set on every platform: a package both locks name has one version, and what
    only Linux's holds is its CUDA stack."""
    linux, macos = (lock_pins(path) for path in LOCKS)
    shared = linux.keys() & macos.keys()
    assert {name: (linux[name], macos[name]) for name in shared if linux[name] != macos[name]} == {}
    only_linux = linux.keys() - macos.keys()
    assert only_linux and all(name.startswith(("nvidia-", "cuda-", "triton")) for name in only_linux), only_linux


def test_the_lock_status_names_what_differs(tmp_path):
    (tmp_path / lock_name()).write_text("# a lock\nnumpy==1.0.0\ntorch==9.9.9\n")
    status = lock_status({"numpy": "1.0.0", "torch": "2.14.1"}, tmp_path)
    assert status == f"differs from requirements/{lock_name()} in 1 packages: torch 2.14.1 (lock 9.9.9)"
    assert lock_status({"numpy": "1.0.0", "torch": "9.9.9"}, tmp_path) == f"matches requirements/{lock_name()}"
    (tmp_path / lock_name()).write_text("numpy==1.0.0\nsetuptools==84.2.1\n")  # a dependency, but a venv's tooling
    assert lock_status({"numpy": "1.0.0"}, tmp_path) == f"matches requirements/{lock_name()}"
    assert lock_status({}, tmp_path / "none").startswith("no lock for this platform")


def test_the_environment_is_one_digest_of_the_installed_set():
    import torch

    env = environment()
    assert env["torch"] == torch.__version__ and len(env["packages_sha256"]) == 64
    assert f"torch=={torch.__version__.split('+')[0]}" in env["packages"]
    assert not any(p.startswith(("pip==", "alexnet-vgg-cifar10==")) for p in env["packages"])
    tags = environment_tags(env)
    assert "env.packages" not in tags and tags["env.lock"] == env["lock"]
    text = environment_text(env)
    assert text.splitlines()[0] == f"python: {env['python']}" and text.endswith(f"{env['packages'][-1]}\n")


def test_a_training_resumed_in_another_installed_set_names_both():
    from study.tracking.naming import resumed_environments

    record = {"provenance": {"environment": {"packages_sha256": "a" * 64}},
              "resumed": [{"packages_sha256": "a" * 64}, {"packages_sha256": "b" * 64}]}
    assert resumed_environments(record) == {"env.packages_sha256s": f"{'a' * 64},{'b' * 64}"}
    assert resumed_environments({**record, "resumed": [{"packages_sha256": "a" * 64}]}) == {}
