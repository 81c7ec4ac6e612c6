"""The one builder: a network of ``models.architectures``' tables as torch modules, each
``features`` then ``classifier``."""

from __future__ import annotations

import torch
from torch import nn

from models.architectures import (
    INITS,
    MODEL_NAMES,
    NETWORKS,
    NUM_CLASSES,
    Plain,
    Residual,
    classifier_input,
)


def make_features(cfg: tuple[int | str, ...], batch_norm: bool) -> nn.Sequential:
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


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, added to the input (through a 1x1 projection where the width or
    the stride changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def make_residual_features(network: Residual, in_channels: int = 3,
                           widths: tuple[int, ...] | None = None) -> nn.Sequential:
    """The stem's conv, BN and ReLU as the first three layers (where the analyses look for the
    first layer), one Sequential of blocks per stage, global average pooling. ``widths``
    overrides the network's (the receptive-field probe builds a one-channel twin)."""
    widths = widths or network.widths
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                               nn.ReLU(inplace=True)]
    channels = widths[0]
    for stage, (blocks, width) in enumerate(zip(network.blocks, widths, strict=True)):
        strides = [2 if stage > 0 else 1] + [1] * (blocks - 1)
        stage_blocks = []
        for stride in strides:
            stage_blocks.append(BasicBlock(channels, width, stride))
            channels = width
        layers.append(nn.Sequential(*stage_blocks))
    layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers)


def make_classifier(in_features: int, hidden: tuple[int, ...], dropout: float = 0.5) -> nn.Sequential:
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
            if module.bias is not None:  # a conv followed by BN has none
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(name: str, init: str = "default") -> Net:
    """Build one of ``MODEL_NAMES``; ``init="default"`` keeps PyTorch's own initialisation,
    which is what the study used; ``"kaiming"`` (every conv and linear layer, fan-out) and
    ``"torchvision"`` (torchvision's VGG: conv Kaiming fan-out, linear N(0, 0.01)) are there for
    ablations."""
    if name not in NETWORKS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
    network = NETWORKS[name]
    if isinstance(network, Plain):
        model = Net(make_features(network.features, network.batch_norm),
                    make_classifier(classifier_input(name), network.hidden))
    else:
        model = Net(make_residual_features(network), make_classifier(classifier_input(name), ()))
    if init == "kaiming":
        _kaiming_init(model)
    elif init == "torchvision":
        _kaiming_init(model, linear_std=0.01)
    return model


def skeleton(name: str) -> Net:
    """``name``'s architecture on PyTorch's meta device: every layer and shape, no weights.
    For counting parameters, walking the layers, or loading a state_dict with ``assign=True``:
    it skips the initialisation, which costs tenths of a second per network."""
    with torch.device("meta"):
        return build_model(name)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
