import io
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import (
    project_params,
    random_images,
    subprocess_env,
    tar_folder,
    write_image_tree,
    write_official_archive,
)

from stages.prepare import prepare
from study.data import ARRAY_FILES, CLASSES, load_prepared
from study.errors import StageError


def check_output(out_dir, train: int, test: int) -> dict:
    arrays, meta = load_prepared(out_dir)
    assert arrays["train_images"].shape == (train, 32, 32, 3) and arrays["train_images"].dtype == np.uint8
    assert arrays["test_images"].shape == (test, 32, 32, 3)
    assert meta["counts"] == {"train": train, "test": test}
    assert meta["classes"] == list(CLASSES)
    assert len(meta["sha256"]) == 64
    assert set(np.unique(arrays["train_labels"])) == set(range(10))
    return arrays


def test_image_folder_tree_keeps_pixels_and_labels(tmp_path, image_tree):
    prepare(source=str(image_tree), out_dir=tmp_path / "out")
    arrays = check_output(tmp_path / "out", 40, 20)
    # class folders in CIFAR-10 order, files sorted: image 0 of "bird" is random_images(4, seed=2)[0]
    assert np.array_equal(arrays["train_images"][8], random_images(4, seed=2)[0])
    assert arrays["train_labels"][8] == CLASSES.index("bird")


def test_image_folder_tarball_matches_tree(tmp_path, image_tree, image_tarball):
    a = prepare(source=str(image_tree), out_dir=tmp_path / "a")
    b = prepare(source=str(image_tarball), out_dir=tmp_path / "b")
    check_output(tmp_path / "b", 40, 20)
    assert a["sha256"] == b["sha256"]


def test_official_archive_through_torchvision(tmp_path):
    archive, md5 = write_official_archive(tmp_path / "cifar-10-python.tar.gz")
    prepare(source=str(archive), out_dir=tmp_path / "out", expected_md5=md5)
    arrays = check_output(tmp_path / "out", 20, 6)
    # the official layout stores CHW rows; torchvision turns them into HWC images
    assert np.array_equal(arrays["train_images"][0], random_images(4, seed=1)[0])


def test_relative_source_resolves_from_dvc_root(tmp_path, image_tarball, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "data.tar.gz").write_bytes(image_tarball.read_bytes())
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "real"))
    prepare(source="data.tar.gz", out_dir=tmp_path / "out")
    check_output(tmp_path / "out", 40, 20)


def bad_sources(tmp_path):
    archive, _ = write_official_archive(tmp_path / "cifar-10-python.tar.gz")
    missing = write_image_tree(tmp_path / "missing", {"train": 1, "test": 1}, classes=CLASSES[:9])
    wrong_size = write_image_tree(tmp_path / "size", {"train": 1, "test": 1}, size=28)
    empty = write_image_tree(tmp_path / "empty", {"train": 1})
    good = tar_folder(write_image_tree(tmp_path / "good", {"train": 2, "test": 1}), tmp_path / "good.tar.gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {
        "md5": (archive, "does not match CIFAR-10's"),
        "missing class": (missing, "no images of class truck"),
        "wrong size": (wrong_size, "is 28x28, CIFAR-10 images are 32x32"),
        "empty split": (empty, "split 'test' has no images"),
        "truncated": (truncated, "truncated or corrupt archive"),
        "no such path": (tmp_path / "nope.tar.gz", "no such file or folder"),
    }


@pytest.mark.parametrize("case", ["md5", "missing class", "wrong size", "empty split", "truncated", "no such path"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case):
    source, message = bad_sources(tmp_path)[case]
    with pytest.raises(StageError, match=message):
        prepare(source=str(source), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_exits_non_zero_with_one_line_and_keeps_old_output(tmp_path, image_tarball):
    """A failing run neither crashes with a traceback nor touches existing output."""
    prepare(source=str(image_tarball), out_dir=tmp_path / "data" / "cifar10")
    before = (tmp_path / "data" / "cifar10" / "meta.json").read_text()
    truncated = tmp_path / "bad.tar.gz"
    truncated.write_bytes(image_tarball.read_bytes()[:500])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params(data={"source": str(truncated)})))
    proc = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env())
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "bad.tar.gz" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "data" / "cifar10" / "meta.json").read_text() == before
    assert json.loads(before)["source"] == str(image_tarball)
    assert sorted(p.stem for p in (tmp_path / "data" / "cifar10").glob("*.npy")) == sorted(ARRAY_FILES)


def test_unreachable_download_names_the_url_and_the_fix(tmp_path):
    """A real download attempt through a dead proxy: no network needed, none used."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params(data={"source": "official"})))
    env = subprocess_env(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
                         HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", no_proxy="")
    proc = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert "could not download CIFAR-10 from https://www.cs.toronto.edu" in proc.stderr
    assert "set data.source" in proc.stderr
    assert not (tmp_path / "data" / "cifar10").exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["params.yaml"]  # no partial file


def test_many_images_decode_in_worker_processes_as_one_would(monkeypatch):
    """Over PARALLEL_FROM images go to worker processes: the same pixels in the same order, and
    a bad image still stops it with its own one-line error."""
    import io

    from PIL import Image

    from study import data as stage

    images = random_images(stage.PARALLEL_FROM + 100, seed=7)
    blobs = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        blobs.append((f"train/cat/{i:05d}.png", buf.getvalue()))
    monkeypatch.setattr(stage.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # two workers, any machine
    assert np.array_equal(stage.decode_all(blobs), images)
    blobs[3000] = ("train/cat/broken.png", b"not an image")
    with pytest.raises(StageError, match="train/cat/broken.png: not a readable image"):
        stage.decode_all(blobs)


def test_a_16_bit_grey_png_is_scaled_not_clipped():
    """A valid but unusual image: 16-bit grey PNG samples (0-65535) are read as 8-bit by /257, never clipped."""
    import io

    from PIL import Image

    from study.data import _decode

    samples = np.random.default_rng(0).integers(0, 65536, (32, 32)).astype(np.uint16)
    blob = io.BytesIO()
    Image.fromarray(samples).save(blob, format="PNG")
    pixels = _decode("train/cat/deep.png", blob.getvalue())
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], np.rint(samples / 257).astype(np.uint8))
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def retar(tree, archive, extra):
    """The tree as a tarball, then each (name, from) of ``extra``: a member added under ``name`` with
    the bytes of the tree's file ``from``."""
    import tarfile

    tar_folder(tree, archive.with_suffix(".base"))
    with tarfile.open(archive.with_suffix(".base")) as base, tarfile.open(archive, "w:gz") as tar:
        for member in base:
            tar.addfile(member, base.extractfile(member) if member.isfile() else None)
        for name, source in extra:
            info = tarfile.TarInfo(name)
            data = (tree / source).read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.parametrize(("extra", "message"), [
    ([("train/cat/0000.png", "train/dog/0000.png")], "train/cat/0000.png is stored twice"),
    ([("train/cat/0000.PNG", "train/cat/0000.png")], "train/cat/0000.png and train/cat/0000.PNG differ only in case"),
    ([("copy/train/cat/0000.png", "train/cat/0000.png")], "the image tree is there twice"),
])
def test_a_tarball_is_read_as_tar_x_writes_it_or_refused(tmp_path, extra, message):
    """Before: a member stored twice trained on both (tar x keeps the second), a second copy of the tree
    doubled every image, a case-only twin was kept; exit 0, no word."""
    tree = write_image_tree(tmp_path / "tree", {"train": 1, "test": 1})
    with pytest.raises(StageError, match=message):
        prepare(source=str(retar(tree, tmp_path / "bad.tar.gz", extra)), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
