"""CIFAR-10 from its source to uint8 arrays, and back from the prepared folder.

``data.source`` selects where it comes from:
- ``official``: the official python archive through torchvision's downloader (md5-checked);
- a path to that archive (``cifar-10-python.tar.gz``, same md5 check), for offline machines;
- a path to an image-folder tree or tarball: ``train/<class>/*`` and ``test/<class>/*``,
  32x32 RGB images of the ten CIFAR-10 classes (e.g. ../shared/data/cifar10-jpeg.tar.gz).

The prepare stage writes the arrays (``PREPARED_DIR``); train, evaluate and the report read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from study.errors import StageError
from study.paths import project_root

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
PREPARED_DIR = Path("data/cifar10")  # the prepare stage's output (dvc.yaml)
DOWNLOAD_DIR = Path("data/raw")
ARRAY_FILES = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def official_md5() -> str:
    from torchvision.datasets import CIFAR10

    return CIFAR10.tgz_md5


def resolve_source(source: str) -> str | Path:
    """``official`` stays as is; a relative path is taken from the real project root
    (queued experiments run in a temporary copy of the repository)."""
    if not isinstance(source, str) or not source:
        raise StageError("data.source must be 'official' or a path to an archive or folder")
    if source == "official":
        return source
    path = Path(source).expanduser()
    path = path if path.is_absolute() else project_root() / path
    try:
        found = path.exists()
    except OSError as err:  # a name longer than the file system allows, say
        shown = source if len(source) <= 80 else f"{source[:60]}... ({len(source)} characters)"
        raise StageError(f"data.source {shown!r} cannot be a path here ({err.strerror}); give the path to "
                         "cifar-10-python.tar.gz or an image-folder tree/tarball") from None
    if not found:
        why = "a symbolic link to nothing (broken, or a loop)" if path.is_symlink() else "no such file or folder"
        raise StageError(f"data.source {source!r}: {why} ({path}); "
                         "give the path to cifar-10-python.tar.gz or an image-folder tree/tarball")
    if not (path.is_file() or path.is_dir()):  # read, a device or a pipe may never end
        raise StageError(f"data.source {source!r} is {special_kind(path)} ({path}), not a file or folder; "
                         "give the path to cifar-10-python.tar.gz or an image-folder tree/tarball")
    return path


def special_kind(path: Path) -> str:
    import stat

    mode = path.stat().st_mode
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "neither a file nor a folder")


# ---------------------------------------------------------------- official format
def _torchvision_splits(root: Path, checked_whole_archive: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse ``root/cifar-10-batches-py`` with torchvision's own CIFAR10 reader."""
    from torchvision.datasets import CIFAR10

    cls = CIFAR10
    if checked_whole_archive:
        # The archive's md5 was verified as a whole, so the batch files need only exist.
        class _VerifiedArchive(CIFAR10):
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = {**CIFAR10.meta, "md5": None}

        cls = _VerifiedArchive
    splits = {}
    for split in SPLITS:
        try:
            ds = cls(root=str(root), train=split == "train", download=False)
        except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
            raise StageError(f"CIFAR-10 batches under {root} are unreadable ({err}); "
                             "re-download the archive") from err
        if list(ds.classes) != list(CLASSES):
            raise StageError(f"archive classes {ds.classes} are not CIFAR-10's {list(CLASSES)}")
        splits[split] = (np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64))
    return splits


def load_official_download(download_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from torchvision.datasets import CIFAR10

    made = [folder for folder in (download_dir, *download_dir.parents) if folder.name and not folder.exists()]
    archive = download_dir / CIFAR10.filename
    had_archive = archive.exists()
    try:
        CIFAR10(root=str(download_dir), train=True, download=True)
    except Exception as err:  # network errors come in many types (URLError, OSError, ...)
        if not had_archive:  # no half-downloaded archive, no empty folder left behind
            archive.unlink(missing_ok=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise StageError(f"could not download CIFAR-10 from {CIFAR10.url} ({err}); without internet, "
                         "set data.source to a local cifar-10-python.tar.gz or an image-folder tarball") from err
    return _torchvision_splits(download_dir, checked_whole_archive=False)


def load_official_archive(archive: Path, expected_md5: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from torchvision.datasets.utils import calculate_md5, extract_archive

    expected_md5 = expected_md5 or official_md5()
    actual = calculate_md5(str(archive))
    if actual != expected_md5:
        raise StageError(f"{archive}: md5 {actual} does not match CIFAR-10's {expected_md5}; "
                         "the archive is corrupt or not cifar-10-python.tar.gz, download it again")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            extract_archive(str(archive), tmp)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise StageError(f"{archive}: cannot be extracted ({err}); download it again") from err
        return _torchvision_splits(Path(tmp), checked_whole_archive=True)


# ---------------------------------------------------------------- image folders
MAX_IMAGE_BYTES = 1 << 20  # a 32x32 image is a few KB; a member far larger is read by nobody
PARALLEL_FROM = 4096  # images: fewer decode faster in this process than worker processes start


def archive_error(archive: Path, err: Exception) -> StageError:
    """One line saying what ``archive`` really is, when it is not a readable tarball."""
    with archive.open("rb") as f:
        head = f.read(512)
    kind = ("a zip archive" if head.startswith(b"PK\x03\x04") else
            "gzip data" if head.startswith(b"\x1f\x8b") else "bzip2 data" if head.startswith(b"BZh") else
            "xz data" if head.startswith(b"\xfd7zXZ\x00") else None)
    if kind == "a zip archive":
        return StageError(f"{archive} is a zip archive, not a tarball; unzip it and give the folder as data.source, "
                          "or repack it with `tar czf`")
    if kind is None and head[257:262] != b"ustar":
        return StageError(f"{archive} is not an archive (neither tar, gzip, bzip2, xz nor zip: it starts with "
                          f"{head[:8].hex()}); give cifar-10-python.tar.gz or an image-folder tree/tarball")
    return StageError(f"{archive}: truncated or corrupt archive ({err}); copy or download it again")


def _iter_tar_images(archive: Path):
    """(name, size, read) for each file of a tarball, in archive order; a member is read only
    when asked, so whatever is not an image is skipped unread."""
    def read(tar, member) -> bytes:
        try:
            return tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise archive_error(archive, err) from err

    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, member.size, lambda m=member: read(tar, m)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise archive_error(archive, err) from err


def _iter_dir_images(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path.relative_to(folder).as_posix(), path.stat().st_size, path.read_bytes


def _decode(name: str, blob: bytes) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns before it refuses very large images
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as img:
                if img.size != (32, 32):
                    raise StageError(f"{name}: image is {img.size[0]}x{img.size[1]}, CIFAR-10 images are 32x32")
                if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
                    # 16-bit grey: convert("RGB") clips every sample above 255 to white; scale it instead
                    grey = np.rint(np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
                    return np.repeat(grey[..., None], 3, axis=2)
                if img.mode in ("I", "F"):
                    raise StageError(f"{name}: {img.mode} image ({'32-bit integer' if img.mode == 'I' else 'float'} "
                                     "samples) has no one 8-bit reading; save it as an 8-bit PNG or JPEG")
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise StageError(f"{name}: declares an image far larger than 32x32 (a decompression bomb: {err}); "
                         "remove it from the source") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise StageError(f"{name}: not a readable image ({err})") from err


def _decode_chunk(items: list[tuple[str, bytes]]) -> np.ndarray:
    return np.stack([_decode(name, blob) for name, blob in items])


def decode_all(items: list[tuple[str, bytes]]) -> np.ndarray:
    """Every (name, blob) decoded, in order, as one uint8 array. Many images go to worker
    processes in contiguous chunks (the mirror's 60,000 JPEGs are seconds of one core); a bad
    image raises its StageError as the serial loop would, the first in order."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, 16)
    if workers < 2 or len(items) < PARALLEL_FROM:
        return _decode_chunk(items)
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(items) // (4 * workers))  # a few chunks per worker: an uneven one does not hold up the rest
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, [items[i:i + size] for i in range(0, len(items), size)])))


def load_image_folder(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``[prefix/]train/<class>/*`` and ``[prefix/]test/<class>/*`` from a folder or tarball."""
    entries = _iter_tar_images(source) if source.is_file() else _iter_dir_images(source)
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {c: [] for c in CLASSES} for s in SPLITS}
    names: dict[str, str] = {}  # lower-cased -> as stored
    prefixes: dict[tuple[str, ...], str] = {}
    for name, size, read in entries:
        parts = Path(name).parts
        if len(parts) < 3 or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        split, cls = parts[-3], parts[-2]
        if split not in found:
            continue
        check_member(source, name, names, prefixes)
        if cls not in found[split]:
            raise StageError(f"{source}: {name} is in class folder {cls!r}, not one of CIFAR-10's {', '.join(CLASSES)}")
        if size > MAX_IMAGE_BYTES:
            raise StageError(f"{source}: {name} is {size:,} bytes, not a 32x32 image (those are a few KB); remove it")
        found[split][cls].append((name, read()))  # decoded below, all at once
    splits = {}
    for split in SPLITS:
        if not any(found[split].values()):
            raise StageError(f"{source}: split {split!r} has no images; expected {split}/<class>/*.jpg or *.png")
        missing = [c for c in CLASSES if not found[split][c]]
        if missing:
            raise StageError(f"{source}: split {split!r} has no images of class {', '.join(missing)}")
        items, labels = [], []
        for label, cls in enumerate(CLASSES):
            ordered = sorted(found[split][cls], key=lambda item: item[0])
            items += ordered
            labels += [label] * len(ordered)
        splits[split] = (decode_all(items), np.asarray(labels, dtype=np.int64))
    return splits


def check_member(source: Path, name: str, names: dict[str, str], prefixes: dict[tuple, str]) -> None:
    """Read an image tree as `tar x` would write it, or refuse it: a member stored twice (extraction
    keeps the last), names that differ only in case (a case-insensitive disk keeps one) and the tree
    present under two prefixes (every image twice) are each one line naming the members.
    ``names``: the names read so far, lower-cased to as stored; ``prefixes``: the folders above the
    splits so far, each to its first member."""
    earlier = names.get(name.lower())
    if earlier == name:
        raise StageError(f"{source}: {name} is stored twice (extracting keeps only the last); repack it with "
                         "each image once")
    if earlier is not None:
        raise StageError(f"{source}: {earlier} and {name} differ only in case (a case-insensitive disk keeps one); "
                         "rename one and repack")
    names[name.lower()] = name
    prefix = Path(name).parts[:-3]
    if prefixes and prefix not in prefixes:
        other = next(iter(prefixes.values()))
        raise StageError(f"{source}: the image tree is there twice ({other} and {name}, under different folders), "
                         "so every image would count twice; keep one tree and repack")
    prefixes.setdefault(prefix, name)


def is_official_layout(source: Path) -> bool:
    if source.is_dir():
        return (source / "cifar-10-batches-py").is_dir() or (source / "data_batch_1").exists()
    try:
        with tarfile.open(source, "r:*") as tar:
            first = tar.next()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise archive_error(source, err) from err
    return first is not None and first.name.split("/")[0] == "cifar-10-batches-py"


def load_source(source: str, download_dir: Path = DOWNLOAD_DIR, expected_md5: str | None = None):
    resolved = resolve_source(source)
    if resolved == "official":
        return load_official_download(download_dir)
    if is_official_layout(resolved):
        if resolved.is_dir():
            root = resolved if (resolved / "cifar-10-batches-py").is_dir() else resolved.parent
            return _torchvision_splits(root, checked_whole_archive=False)
        return load_official_archive(resolved, expected_md5)
    return load_image_folder(resolved)


# ---------------------------------------------------------------- output
def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in ARRAY_FILES:
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def load_arrays(source: str, download_dir: Path = DOWNLOAD_DIR,
                expected_md5: str | None = None) -> dict[str, np.ndarray]:
    """The source's splits as the four arrays of ``ARRAY_FILES``, checked for shape."""
    arrays = {}
    for split, (images, labels) in load_source(source, download_dir, expected_md5).items():
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise StageError(f"{split} images have shape {images.shape[1:]}, expected 32x32x3")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


# the offline stand-in's JPEG quality (its README): the report's reference for re-encoded variants
MIRROR_QUALITY = 75


def jpeg_quality(blob: bytes) -> int | None:
    """The quality a JPEG was saved at, read from its luminance quantization table against the
    tables Pillow's encoder (libjpeg's scaling) writes at qualities 1 to 100; None for another
    format or an encoder whose tables are not those."""
    from PIL import Image

    tables: dict[tuple, int] = {}
    blank = Image.new("RGB", (8, 8))
    for quality in range(1, 101):
        buffer = io.BytesIO()
        blank.save(buffer, "JPEG", quality=quality)
        tables.setdefault(tuple(Image.open(buffer).quantization[0]), quality)
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return tables.get(tuple(image.quantization[0])) if image.format == "JPEG" else None
    except (OSError, KeyError, AttributeError):
        return None


def source_jpeg_quality(source: str) -> int | None:
    """The JPEG quality of an image-folder source (its first image), None for the official archive
    or images that are not JPEG: the data's identity, recorded in meta.json by prepare."""
    resolved = resolve_source(source)
    if resolved == "official" or is_official_layout(resolved):
        return None
    entries = _iter_tar_images(resolved) if resolved.is_file() else _iter_dir_images(resolved)
    for name, _, read in entries:
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            return jpeg_quality(read())
    return None


def load_prepared(data_dir: Path = PREPARED_DIR) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays, each checked against the sha256 prepare recorded in meta.json before
    anything trains on it or records its digest: a changed bit (a DVC cache entry gone bad, an
    edited file) is one line, never a silent training on other data."""
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.exists():
        raise StageError(f"{data_dir} holds no prepared data; run `dvc repro prepare` (or python -m stages.prepare)")
    meta = json.loads(meta_path.read_text())
    arrays = {}
    for name in ARRAY_FILES:
        try:
            arrays[name] = np.load(Path(data_dir) / f"{name}.npy")
        except (OSError, ValueError) as err:
            raise _not_as_prepared(data_dir, f"{name}.npy is unreadable ({type(err).__name__})") from None
    recorded = meta.get("array_sha256", {})
    for name in ARRAY_FILES:
        if name in recorded and array_sha256(arrays[name]) != recorded[name]:
            raise _not_as_prepared(data_dir, f"{name}.npy does not match the sha256 prepare recorded in meta.json")
    if arrays_sha256(arrays) != meta.get("sha256"):  # the digest every record and run names the data by
        raise _not_as_prepared(data_dir, "meta.json's sha256 is not the digest of its arrays")
    return arrays, meta


def _not_as_prepared(data_dir: Path, what: str) -> StageError:
    return StageError(f"{data_dir}/{what}: it changed after prepare wrote it (a bad DVC cache entry or an edit); "
                      f"restore it with `dvc checkout {data_dir}`, or rebuild it with `dvc repro -f prepare` "
                      "if the cache itself is bad")


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def prepared_meta(data_dir: Path = PREPARED_DIR) -> dict:
    """What prepare recorded of the workspace's data (its digest, its JPEG quality); {} before
    prepare has run."""
    meta = Path(data_dir) / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else {}


def split_profile(images: np.ndarray, labels: np.ndarray, recorded: tuple[str, str] | None = None) -> dict:
    """One split as trained on: a sha256 of its own arrays (of the images' and the labels'
    sha256, so a whole split's comes from the digests prepare recorded, ``recorded``, without
    hashing it again), how many images, one image's shape, and the count per class."""
    images_sha, labels_sha = recorded or (array_sha256(images), array_sha256(labels))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASSES))
    if len(counts) != len(CLASSES):
        raise StageError(f"labels up to {len(counts) - 1} in a split of the {len(CLASSES)} CIFAR-10 classes")
    per_class = {name: int(n) for name, n in zip(CLASSES, counts, strict=True)}
    return {"sha256": hashlib.sha256(f"{images_sha}{labels_sha}".encode()).hexdigest(), "images": int(len(labels)),
            "shape": list(images.shape[1:]), "per_class": per_class}
