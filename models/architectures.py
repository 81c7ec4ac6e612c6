"""The networks, registered once, as data (torch-free): what a stage needs to name, count or
describe them without building one. ``models.network`` builds them from these tables.

A network is added here and nowhere else: params.yaml's validation, the stages' ``--model``
choices, the report's names and Table 1 all read ``NETWORKS``.
"""

from __future__ import annotations

from dataclasses import dataclass

INITS = ("default", "kaiming", "torchvision")
INPUT_SIZE = 32
NUM_CLASSES = 10

# Feature configs: an int is a 3x3 conv (stride 1, padding 1) with that many filters,
# "M" a 2x2 max-pool with stride 2.
ALEXNET = (64, "M", 192, "M", 384, 256, 256, "M")
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG8 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M")


@dataclass(frozen=True)
class Plain:
    """Convolutions and pools in one chain, then fully connected layers (torchvision's VGG
    layout). ``block_names``: layers named by block (VGG's Conv3_2, Pool3) rather than by
    running count (AlexNet's Conv3, Pool5), as the study names them."""

    display: str
    features: tuple[int | str, ...]
    hidden: tuple[int, ...]  # hidden fully connected widths; the output layer follows
    batch_norm: bool = False
    block_names: bool = True


@dataclass(frozen=True)
class Residual:
    """ResNet for CIFAR (He et al. 2016, the common 32x32 variant): a 3x3 stem without pooling,
    stages of two-conv BasicBlocks (the first of each later stage halving the map), global
    average pooling, one linear layer."""

    display: str
    blocks: tuple[int, ...]
    widths: tuple[int, ...] = (64, 128, 256, 512)


NETWORKS: dict[str, Plain | Residual] = {
    "alexnet": Plain("AlexNet", ALEXNET, (4096, 1024), block_names=False),
    "vgg16": Plain("VGG-16", VGG16, (4096, 4096)),
    "vgg16_bn": Plain("VGG-16 with BN", VGG16, (4096, 4096), batch_norm=True),
    "vgg8": Plain("VGG-8", VGG8, (4096,)),
    "resnet18": Residual("ResNet-18", (2, 2, 2, 2)),
}
MODEL_NAMES = tuple(NETWORKS)
NAMES = {name: network.display for name, network in NETWORKS.items()}  # as a report writes them


def conv_count(name: str) -> int:
    """Convolutions on the main path (a ResNet's 1x1 shortcut projections not counted)."""
    network = NETWORKS[name]
    if isinstance(network, Residual):
        return 1 + 2 * sum(network.blocks)
    return sum(item != "M" for item in network.features)


def fc_count(name: str) -> int:
    network = NETWORKS[name]
    return 1 if isinstance(network, Residual) else len(network.hidden) + 1  # hidden layers and the output


def classifier_input(name: str) -> int:
    """The flattened width entering the classifier: the last conv's channels times its map's area."""
    network = NETWORKS[name]
    if isinstance(network, Residual):
        return network.widths[-1]  # after global average pooling
    side = INPUT_SIZE // 2 ** network.features.count("M")
    return [c for c in network.features if c != "M"][-1] * side * side


def _linear_parameters(width: int, hidden: tuple[int, ...]) -> int:
    total = 0
    for out in [*hidden, NUM_CLASSES]:
        total += width * out + out
        width = out
    return total


def _residual_parameters(network: Residual) -> int:
    """Convs without bias (BN follows each), BN's scale and shift, 1x1 projections where a block
    changes width or stride."""
    channels = network.widths[0]
    total = 3 * channels * 9 + 2 * channels  # the stem
    for stage, (blocks, width) in enumerate(zip(network.blocks, network.widths, strict=True)):
        for block in range(blocks):
            strided = stage > 0 and block == 0
            total += channels * width * 9 + width * width * 9 + 4 * width
            if strided or channels != width:
                total += channels * width + 2 * width
            channels = width
    return total + _linear_parameters(channels, ())


def parameter_count(name: str) -> int:
    """Trainable parameters, from the tables alone (a test checks it against the built network)."""
    network = NETWORKS[name]
    if isinstance(network, Residual):
        return _residual_parameters(network)
    total, channels = 0, 3
    for item in network.features:
        if item == "M":
            continue
        total += channels * item * 9 + item + (2 * item if network.batch_norm else 0)
        channels = item
    return total + _linear_parameters(classifier_input(name), network.hidden)
