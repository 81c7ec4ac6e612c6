"""benchmarks/jpeg_variants.py: the mirror re-encoded at lower JPEG qualities, one tarball per
quality, each a valid data.source with its own sha256, reproducible, and a bad input is one line."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT, subprocess_env, tar_folder, write_image_tree

from benchmarks.jpeg_variants import make_variants
from stages.prepare import prepare
from study.data import load_arrays


def test_each_quality_is_a_source_with_its_own_hash(tmp_path):
    source = tar_folder(write_image_tree(tmp_path / "tree", {"train": 3, "test": 2}), tmp_path / "cifar10-png.tar.gz")
    variants = make_variants(source, [50, 10], tmp_path / "out")
    assert [v["quality"] for v in variants] == [50, 10] and all(v["images"] == 50 for v in variants)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["cifar10-png-q10.tar.gz", "cifar10-png-q50.tar.gz"]  # no temporary file left
    original = load_arrays(str(source))
    metas, errors = [], []
    for variant in variants:
        assert variant["sha256"] == hashlib.sha256(Path(variant["path"]).read_bytes()).hexdigest()
        metas.append(prepare(source=variant["path"], out_dir=tmp_path / f"data-q{variant['quality']}"))
        arrays = load_arrays(variant["path"])
        for name in ("train_labels", "test_labels"):  # same images in the same order: only pixels change
            np.testing.assert_array_equal(arrays[name], original[name])
        errors.append(np.abs(arrays["train_images"].astype(int) - original["train_images"]).mean())
    assert len({m["sha256"] for m in metas}) == 2 and all(m["counts"] == {"train": 30, "test": 20} for m in metas)
    # the data's identity, read from the images themselves, not from the file's name
    assert [m["jpeg_quality"] for m in metas] == [50, 10]
    assert prepare(source=str(source), out_dir=tmp_path / "data-png")["jpeg_quality"] is None  # PNGs: no quality
    renamed = Path(variants[1]["path"]).rename(tmp_path / "cifar10-mystery.tar.gz")
    assert prepare(source=str(renamed), out_dir=tmp_path / "data-renamed")["jpeg_quality"] == 10
    assert 0 < errors[0] < errors[1], errors  # lower quality, larger pixel error
    again = make_variants(source, [50], tmp_path / "again")[0]
    assert again["sha256"] == variants[0]["sha256"]  # byte for byte: a fixed mtime, sorted names


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "benchmarks.jpeg_variants", *args, "--out", str(tmp_path / "out")],
                              cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=60)

    missing = run(str(tmp_path / "nope.tar.gz"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope.tar.gz: no such file" in missing.stderr
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    broken = run(str(tmp_path / "broken.tar.gz"), "--quality", "50")
    assert broken.returncode == 1 and "not a readable tarball" in broken.stderr, broken.stderr
    quality = run(str(tmp_path / "broken.tar.gz"), "--quality", "0")
    assert quality.returncode == 1 and "quality must be 1-95" in quality.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
