"""The one builder: a network of ``models.architectures``' tables as torch modules."""

from __future__ import annotations

import torch
from torch import nn

from models.architectures import ARCHITECTURES, FEATURES, INITS, MODEL_NAMES, NUM_CLASSES, classifier_input


def make_features(cfg: list[int | str], batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, item, kernel_size=3, stride=1, padding=1))
        if batch_norm:  # the study puts BN after the conv, before the ReLU
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    return nn.Sequential(*layers)


def make_classifier(in_features: int, hidden: list[int], dropout: float = 0.5) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, NUM_CLASSES))
    return nn.Sequential(*layers)


class Net(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _kaiming_init(model: nn.Module, linear_std: float | None = None) -> None:
    """Kaiming's init (fan-out) of every conv and, unless ``linear_std`` is given, every linear
    layer; with it, linear weights N(0, linear_std) as torchvision's VGG has them."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(module, nn.Linear) and linear_std is not None:
                nn.init.normal_(module.weight, 0, linear_std)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(name: str, init: str = "default") -> Net:
    """Build one of ``MODEL_NAMES``; ``init="default"`` keeps PyTorch's own initialisation,
    which is what the study used; ``"kaiming"`` (every conv and linear layer, fan-out) and
    ``"torchvision"`` (torchvision's VGG: conv Kaiming fan-out, linear N(0, 0.01)) are there for
    ablations."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
    cfg_name, batch_norm, hidden = ARCHITECTURES[name]
    model = Net(make_features(FEATURES[cfg_name], batch_norm), make_classifier(classifier_input(name), hidden))
    if init == "kaiming":
        _kaiming_init(model)
    elif init == "torchvision":
        _kaiming_init(model, linear_std=0.01)
    return model


def skeleton(name: str) -> Net:
    """``name``'s architecture on PyTorch's meta device: every layer and shape, no weights.
    For counting parameters, walking the layers, or loading a state_dict with ``assign=True``:
    it skips the initialisation (0.4-0.6 s for all four networks on the dev VM's CPU)."""
    with torch.device("meta"):
        return build_model(name)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
