"""The plain way the study most likely trained: an in-memory CIFAR10-style dataset,
per-image PIL transforms, a DataLoader with worker processes. Used as the baseline the
project's own loop is measured against (benchmarks/bench.py compare)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from models.network import build_model
from study.training.batches import MEAN, STD


class InMemoryCIFAR(Dataset):
    """What torchvision.datasets.CIFAR10 does after loading: uint8 HWC arrays, a PIL
    image per item, then the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def study_transform():
    return transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


class BaselineLoop:
    """The plain loop (fp32, default memory format, as tutorials do), one epoch per call."""

    def __init__(self, model_name: str, images: np.ndarray, labels: np.ndarray, *, device: str = "cpu",
                 batch_size: int = 128, workers: int = 2, seed: int = 0):
        torch.manual_seed(seed)
        self.device = device
        self.model = build_model(model_name).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.loader = DataLoader(InMemoryCIFAR(images, labels, study_transform()), batch_size=batch_size,
                                 shuffle=True, num_workers=workers, persistent_workers=workers > 0)

    def epoch(self) -> float:
        """Seconds for one epoch."""
        self.model.train()
        start = time.perf_counter()
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the per-batch host sync such loops do for their running loss
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start


def baseline_epoch_seconds(model_name: str, images: np.ndarray, labels: np.ndarray, *, device: str = "cpu",
                           batch_size: int = 128, workers: int = 2, seed: int = 0, epochs: int = 1) -> list[float]:
    """Seconds per epoch of the plain loop, ``epochs`` in a row."""
    loop = BaselineLoop(model_name, images, labels, device=device, batch_size=batch_size, workers=workers, seed=seed)
    return [loop.epoch() for _ in range(epochs)]
