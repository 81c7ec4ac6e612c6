"""The data side of the hot path: the whole split on the device as uint8, a class-balanced
subset, augmentation (random crop and flip) as a few batched tensor ops, normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from study.errors import StageError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def balanced_subset(labels: np.ndarray, size: int, seed: int, setting: str = "the subset") -> np.ndarray:
    """Indices of a fixed, seeded subset with (as near as possible) equal counts per class.
    ``size`` 0 means everything; ``setting`` names the parameter in errors."""
    if size == 0 or size >= len(labels):
        if size > len(labels):
            raise StageError(f"{setting} is {size}, but the prepared split holds only {len(labels)} images; "
                             f"set it to 0 (all) or at most {len(labels)}")
        return np.arange(len(labels))
    if size < 0:
        raise StageError(f"{setting} is {size}; it must be >= 0 (0 = all)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    picks = []
    for cls, count in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise StageError(f"subset of {size} needs {count} images of class {cls}, the split has {len(members)}")
        picks.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(picks))


def to_device_images(images_nhwc: np.ndarray, device: str) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on the device (the whole split, once)."""
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous().to(device)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Batched RandomCrop(32, padding) + RandomHorizontalFlip() on uint8 NCHW images:
    each image is cut at a uniform offset out of its zero-padded copy and mirrored
    with probability 1/2, all in a handful of kernels, with no host round trip."""
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
    flip = torch.rand((b, 1), device=dev, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=dev)
    cols = dx + torch.arange(w, device=dev)
    cols = torch.where(flip, cols.flip(1), cols)  # a flip reads the crop's columns backwards
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 NCHW -> normalised float; mean and std live on the device once (building
    them per batch would copy from pageable host memory, a hidden host sync)."""

    def __init__(self, device: str, channels_last: bool):
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
