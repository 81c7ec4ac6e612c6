"""How the signal travels through each network at initialisation,
PyTorch's default init against Kaiming's and torchvision's VGG init, before any training.

For one fixed, seeded batch (standard-normal images: what normalised CIFAR-10 looks like to
the first layer, in distribution) and the network in training mode, the standard deviation
of every conv and linear layer's output (forward) and of the loss gradient with respect to
it (backward). A signal that shrinks by a constant factor per layer vanishes through
thirteen plain conv layers; BatchNorm, or an init that keeps the variance, holds it.

``analyse`` writes outputs/init_signal/{signal.csv, signal.png} (the init_signal stage, and the
report for a store it rebuilds); ``summary`` is torch-free, for the report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.architectures import INITS
from study.files import atomic_path
from study.paths import INIT_SIGNAL_DIR

BATCH = 32


def layer_signal(model_name: str, init: str, seed: int = 0, batch: int = BATCH) -> pd.DataFrame:
    """One row per conv/linear layer, in order: forward and backward standard deviations."""
    # torch here, not at the top: the report stage imports summary() from this module, torch-free
    import torch
    import torch.nn.functional as F
    from torch import nn

    from models.network import build_model

    torch.manual_seed(seed)
    net = build_model(model_name, init=init).train()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        outputs.append(output)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    for handle in handles:
        handle.remove()
    convs = sum(isinstance(m, nn.Conv2d) for m in layers)
    return pd.DataFrame([{
        "model": model_name, "init": init, "layer": i + 1,
        "name": f"conv{i + 1}" if i < convs else f"fc{i + 1 - convs}",
        "forward_std": out.detach().std().item(), "backward_std": out.grad.std().item(),
        "initial_loss": loss.item()} for i, out in enumerate(outputs)])


def signal_cache_file(model_name: str, init: str, seed: int) -> Path:
    """Where one network's signal at initialisation is kept between processes: the user's cache
    folder (as the compile cache), keyed by everything that decides it: the network, init, seed,
    batch, torch version and the code of this module and of the models."""
    import hashlib
    import os

    import torch

    root = Path(__file__).resolve().parents[2]
    code = hashlib.sha256()
    for path in sorted([Path(__file__), *(root / "models").glob("*.py")]):
        code.update(path.read_bytes())
    key = hashlib.sha256(f"{model_name}|{init}|{seed}|{BATCH}|{torch.__version__}|{code.hexdigest()}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-vgg-cifar10" / "init_signal"
    return cache / f"{model_name}-{init}-s{seed}-{key.hexdigest()[:16]}.json"


def cached_signal(model_name: str, init: str, seed: int, log=print) -> pd.DataFrame:
    """``layer_signal``, computed once per machine for the same code (seconds a network on a CPU
    core). The cache holds the table with the sha256 of its text and the key it was computed for,
    and is verified on every read: an edited, cut or misplaced file is computed again, in one line;
    a cache that cannot be written is computed around."""
    import hashlib
    import io
    import json

    path = signal_cache_file(model_name, init, seed)
    try:
        cached = json.loads(path.read_text())
        if cached["key"] == path.stem and hashlib.sha256(cached["csv"].encode()).hexdigest() == cached["sha256"]:
            return pd.read_csv(io.StringIO(cached["csv"]))
        log(f"warning: the cached signal at initialisation {path} does not match its digest (edited or cut "
            "short); computing it again")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        log(f"warning: the cached signal at initialisation {path} is unreadable; computing it again")
    table = layer_signal(model_name, init, seed)
    text = table.to_csv(index=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"key": path.stem, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                                       "csv": text}))
    except OSError:
        pass
    return pd.read_csv(io.StringIO(text))  # as a read of the cache gives it, to the last digit


def analyse(models, seed: int = 0, out_dir: Path = INIT_SIGNAL_DIR) -> pd.DataFrame:
    table = pd.concat([cached_signal(m, init, seed) for m in models for init in INITS], ignore_index=True)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        table.to_csv(tmp / "signal.csv", index=False)
        from study.figures import plot_signal

        plot_signal(table, tmp / "signal.png")
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and init: how much of the signal is left at the last conv layer."""
    rows = []
    for (model, init), group in table.groupby(["model", "init"], sort=False):
        convs = group[group["name"].str.startswith("conv")]
        rows.append({"model": model, "init": init,
                     "activation std, first → last conv": f"{convs['forward_std'].iloc[0]:.3g} → "
                                                           f"{convs['forward_std'].iloc[-1]:.3g}",
                     "gradient std, last → first conv": f"{convs['backward_std'].iloc[-1]:.3g} → "
                                                         f"{convs['backward_std'].iloc[0]:.3g}",
                     "logit std": f"{group['forward_std'].iloc[-1]:.3g}",  # the last layer's output
                     "loss at init": f"{group['initial_loss'].iloc[0]:.3f}"})
    return pd.DataFrame(rows)
