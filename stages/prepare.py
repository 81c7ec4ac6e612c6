"""Stage `prepare`: fetch CIFAR-10 from ``data.source`` and write it as uint8 arrays under
data/cifar10/ (the sources it reads: study.data)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from study.config import load_settings
from study.console import run_main
from study.data import (
    ARRAY_FILES,
    CLASSES,
    DOWNLOAD_DIR,
    PREPARED_DIR,
    SPLITS,
    array_sha256,
    arrays_sha256,
    load_arrays,
    source_jpeg_quality,
)
from study.files import atomic_path, write_json


def prepare(*, source: str, out_dir: Path = PREPARED_DIR, download_dir: Path = DOWNLOAD_DIR,
            expected_md5: str | None = None) -> dict:
    arrays = load_arrays(source, download_dir, expected_md5)
    meta = {
        "source": source,
        "classes": list(CLASSES),
        "counts": {split: int(len(arrays[f"{split}_labels"])) for split in SPLITS},
        "sha256": arrays_sha256(arrays),
        "jpeg_quality": source_jpeg_quality(source),  # the data's identity, read from its images
        "array_sha256": {n: array_sha256(arrays[n]) for n in ARRAY_FILES},  # what load_prepared checks
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in ARRAY_FILES:
            np.save(tmp / f"{name}.npy", arrays[name])
        write_json(tmp / "meta.json", meta)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    args = parser.parse_args()

    def work():
        meta = prepare(source=load_settings(args.params).data.source)
        print(f"prepared CIFAR-10 from {meta['source']}: {meta['counts']['train']} train, "
              f"{meta['counts']['test']} test images, sha256 {meta['sha256'][:12]} -> {PREPARED_DIR}")

    run_main(work)


if __name__ == "__main__":
    main()
