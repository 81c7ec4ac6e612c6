"""The persistent compile cache (issue 24): one file per torch version and device, and a file it
cannot use costs a cold compile, never the training; a second process loads what the first
compiled (the train stage does this around a `runtime.compile` training; a model's compile takes
minutes on a 2-core VM, so the test compiles a small function)."""

import re

import pytest
import torch

from study.provenance import device_name
from study.training.device import compile_cache_file, load_compile_cache


def test_the_cache_file_is_keyed_by_torch_version_and_device(tmp_path):
    path = compile_cache_file(tmp_path, "cpu")
    assert path.parent == tmp_path and path.suffix == ".bin"
    assert torch.__version__ in path.name
    for word in re.findall(r"[A-Za-z0-9]+", device_name("cpu")):  # e.g. AMD EPYC (2 cores)
        assert word in path.name, (word, path.name)
    assert " " not in path.name and "/" not in path.name


def test_a_missing_or_corrupt_cache_is_a_cold_compile_not_an_error(tmp_path):
    assert "none yet" in load_compile_cache(tmp_path, "cpu")
    compile_cache_file(tmp_path, "cpu").write_bytes(b"not a cache")
    line = load_compile_cache(tmp_path, "cpu")
    assert "unusable" in line and "compiling afresh" in line, line


@pytest.mark.long
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    """What the train stage does around a compiled training (runtime.compile), on a small
    function: a fresh process with an empty Inductor cache gets the kernels from the file."""
    import subprocess
    import sys

    from conftest import ROOT, subprocess_env

    script = ("import torch\n"
              "from study.training.device import compile_cache_dir, load_compile_cache, save_compile_cache\n"
              "print(load_compile_cache(compile_cache_dir(), 'cpu'))\n"
              "f = torch.compile(lambda x: torch.relu(x) * 2 + 1)\n"
              "print('sum', float(f(torch.arange(-4.0, 4.0)).sum()))\n"
              "print(save_compile_cache(compile_cache_dir(), 'cpu'))\n")
    lines = []
    for run in ("cold", "warm"):
        env = subprocess_env(STUDY_COMPILE_CACHE=str(tmp_path / "cache"),
                             TORCHINDUCTOR_CACHE_DIR=str(tmp_path / f"inductor-{run}"))
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines.append(proc.stdout.splitlines())
    (cold_load, cold_sum, cold_save), (warm_load, warm_sum, _) = lines
    assert "none yet" in cold_load and "saved to" in cold_save and str(tmp_path / "cache") in cold_save
    assert re.search(r"compile cache: [1-9]\d* artifacts loaded", warm_load), warm_load
    assert cold_sum == warm_sum == "sum 20.0"  # relu(-4..3) * 2 + 1, summed: (1 + 2 + 3) * 2 + 8
