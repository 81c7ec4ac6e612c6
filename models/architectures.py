"""The four networks as data (torch-free): what a stage needs to name, count or describe them
without building one. ``models.network`` builds them from these tables."""

from __future__ import annotations

# Feature configs: an int is a 3x3 conv (stride 1, padding 1) with that many filters,
# "M" a 2x2 max-pool with stride 2.
FEATURES: dict[str, list[int | str]] = {
    "alexnet": [64, "M", 192, "M", 384, 256, 256, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg8": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"],
}

# name -> (feature config, batch norm, hidden fully connected widths)
ARCHITECTURES: dict[str, tuple[str, bool, list[int]]] = {
    "alexnet": ("alexnet", False, [4096, 1024]),
    "vgg16": ("vgg16", False, [4096, 4096]),
    "vgg16_bn": ("vgg16", True, [4096, 4096]),
    "vgg8": ("vgg8", False, [4096]),
}
MODEL_NAMES = tuple(ARCHITECTURES)
INITS = ("default", "kaiming", "torchvision")
INPUT_SIZE = 32
NUM_CLASSES = 10


def conv_count(name: str) -> int:
    return sum(item != "M" for item in FEATURES[ARCHITECTURES[name][0]])


def fc_count(name: str) -> int:
    return len(ARCHITECTURES[name][2]) + 1  # the hidden layers and the output layer


def classifier_input(name: str) -> int:
    """The flattened width entering the classifier: the last conv's channels times its map's area."""
    cfg = FEATURES[ARCHITECTURES[name][0]]
    side = INPUT_SIZE // 2 ** cfg.count("M")
    return [c for c in cfg if c != "M"][-1] * side * side


def parameter_count(name: str) -> int:
    """Trainable parameters, from the tables alone (a test checks it against the built network):
    each 3x3 conv's weights and bias, BN's scale and shift, each linear layer's weights and bias."""
    cfg_name, batch_norm, hidden = ARCHITECTURES[name]
    cfg = FEATURES[cfg_name]
    total, channels = 0, 3
    for item in cfg:
        if item == "M":
            continue
        total += channels * item * 9 + item + (2 * item if batch_norm else 0)
        channels = item
    width = classifier_input(name)
    for out in [*hidden, NUM_CLASSES]:
        total += width * out + out
        width = out
    return total
