"""Re-encode an image-folder tarball of CIFAR-10 at lower JPEG qualities: one tarball per
quality, usable as ``data.source`` (prepare decodes it like the mirror and gives it its own
sha256), to measure what JPEG compression costs in accuracy (issue 22).

    python -m benchmarks.jpeg_variants ../shared/data/cifar10-jpeg.tar.gz --quality 50 25 --out .device/gpu
    # -> .device/gpu/cifar10-jpeg-q50.tar.gz, .device/gpu/cifar10-jpeg-q25.tar.gz

The mirror is already JPEG (quality 75, 4:2:0 chroma): a variant is the mirror decoded and
encoded again at quality Q with 4:2:0 chroma, so it is compressed twice, and at Q=75 it would
still differ from the mirror. Say so beside any number measured on a variant. The tarballs are
reproducible for one Pillow/libjpeg build (sorted names, fixed mtimes, gzip without a
timestamp) and need only Pillow, so this runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

from study.console import run_main
from study.errors import StageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def variant_name(source: Path, quality: int) -> str:
    stem = source.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar")
    return f"{stem}-q{quality}.tar.gz"


def _reencode(blob: bytes, name: str, quality: int) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=quality, subsampling="4:2:0")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise StageError(f"{name}: not a readable image ({err}); the source must hold only images "
                         "under train/<class>/ and test/<class>/") from err
    return out.getvalue()


def _read_images(source: Path) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every image in the tarball, sorted by name."""
    images = []
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    images.append((member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise StageError(f"{source}: not a readable tarball ({err}); give the path to an image-folder "
                         "tarball such as ../shared/data/cifar10-jpeg.tar.gz") from err
    if not images:
        raise StageError(f"{source}: holds no images; expected train/<class>/*.jpg and test/<class>/*.jpg")
    return sorted(images)


def _write_tarball(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A reproducible .tar.gz, written to a temporary sibling and renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, blob in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(blob), 0, 0o644
                tar.addfile(info, io.BytesIO(blob))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def make_variants(source: Path, qualities: list[int], out_dir: Path) -> list[dict]:
    """Write one tarball per quality into ``out_dir``; returns, per quality, its path,
    image count, size and sha256 (of the tarball; prepare hashes the decoded arrays)."""
    source, out_dir = Path(source), Path(out_dir)
    bad = [q for q in qualities if not 1 <= q <= 95]
    if bad:
        raise StageError(f"--quality {bad[0]}: JPEG quality must be 1-95 (Pillow's useful range)")
    if not source.is_file():
        raise StageError(f"{source}: no such file; give the path to an image-folder tarball "
                         "such as ../shared/data/cifar10-jpeg.tar.gz")
    images = _read_images(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for quality in qualities:
        members = [(str(Path(name).with_suffix(".jpg")), _reencode(blob, name, quality)) for name, blob in images]
        path = out_dir / variant_name(source, quality)
        _write_tarball(path, members)
        written.append({"path": str(path), "quality": quality, "images": len(members),
                        "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return written


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an image-folder tarball (the JPEG mirror)")
    parser.add_argument("--quality", type=int, nargs="+", default=[50, 25], help="JPEG qualities (default: 50 25)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the variant tarballs")
    args = parser.parse_args()

    def work():
        for variant in make_variants(args.source, args.quality, args.out):
            print(f"{variant['path']}: {variant['images']} images re-encoded at JPEG quality {variant['quality']}, "
                  f"{variant['bytes'] / 1e6:.1f} MB, sha256 {variant['sha256']}")

    run_main(work)


if __name__ == "__main__":
    main()
