"""The persistent compile cache (issue 24): one file per torch version and device, and a file it
cannot use costs a cold compile, never the training. (Loading real artifacts into a fresh
Inductor cache was rehearsed on the CPU by hand: a compile takes minutes on a 2-core VM.)"""

import re

import torch

from stages.common import device_name
from stages.engine import compile_cache_file, load_compile_cache


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
