"""The study's Tables 2-4 for every model, computed by walking
the real model's ``features``, checked by measuring gradients, compared with the paper.
A residual network is no chain of layers: its table gives each stage's field along the main
path (the shortcuts are shorter), checked by the same gradient measurement on a one-channel
twin of the real network.

``analyse`` writes outputs/receptive_fields/<model>.csv, paper_differences.csv and growth.png.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from models.architectures import MODEL_NAMES, NETWORKS, Residual
from models.network import skeleton
from study.analysis import paper
from study.errors import StageError
from study.files import atomic_path
from study.paths import RECEPTIVE_FIELD_DIR

SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)

# the paper's printed receptive fields (its Tables 2-4 and the text of sections 4.2 and 4.3)
PAPER, PAPER_TEXT, PAPER_BLOCKS = paper.RECEPTIVE_FIELDS, paper.RECEPTIVE_FIELDS_TEXT, paper.RECEPTIVE_FIELDS_BLOCKS


def _pair(value) -> int:
    a, b = (value, value) if isinstance(value, int) else value
    if a != b:
        raise StageError(f"non-square kernel/stride {value} is not supported by the receptive-field walk")
    return a


def geometry(layer: nn.Module) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a spatial layer."""
    dilation = _pair(getattr(layer, "dilation", 1))
    return _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding), dilation


def layer_names(features: nn.Sequential, block_style: bool) -> list[str]:
    """The study's names: VGG's ConvB_i / PoolB by block; AlexNet's Conv<n> and Pool<n>
    named after the conv before it."""
    names, block, in_block, convs = [], 1, 0, 0
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            convs += 1
            in_block += 1
            names.append(f"Conv{block}_{in_block}" if block_style else f"Conv{convs}")
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            names.append(f"Pool{block}" if block_style else f"Pool{convs}")
            block, in_block = block + 1, 0
    return names


def residual_table(network: Residual) -> pd.DataFrame:
    """Each stage's field along the main path of 3x3 convs: r += 2 * j per conv, j doubling at a
    later stage's first conv (stride 2)."""
    rows = [{"layer": "Input", "operation": "-", "kernel": None, "stride": None, "cum_stride": 1,
             "receptive_field": 1, "calculation": "r0 = 1"},
            {"layer": "Stem", "operation": "3x3 conv", "kernel": 3, "stride": 1, "cum_stride": 1, "receptive_field": 3,
             "calculation": "1 + (3-1)*1 = 3"}]
    r, j = 3, 1
    for stage, blocks in enumerate(network.blocks, start=1):
        start, steps = r, []
        for block in range(blocks):
            for conv in range(2):
                stride = 2 if stage > 1 and block == 0 and conv == 0 else 1
                steps.append(f"2*{j}")
                r, j = r + 2 * j, j * stride
        rows.append({"layer": f"Stage{stage}", "operation": f"{blocks} residual blocks (3x3 convs)", "kernel": 3,
                     "stride": 2 if stage > 1 else 1, "cum_stride": j, "receptive_field": r,
                     "calculation": f"{start} + {' + '.join(steps)} = {r} (main path)"})
    table = pd.DataFrame(rows)
    table[["kernel", "stride"]] = table[["kernel", "stride"]].astype("Int64")
    return table


def receptive_field_table(model_name: str) -> pd.DataFrame:
    """Walk ``features``: r_out = r_in + (d(k-1)) * j_in, j_out = j_in * s, where j is the
    cumulative stride (input pixels between neighbouring units)."""
    network = NETWORKS[model_name]
    if isinstance(network, Residual):
        return residual_table(network)
    features = skeleton(model_name).features  # geometry only
    names = layer_names(features, block_style=network.block_names)
    rows = [{"layer": "Input", "operation": "-", "kernel": None, "stride": None, "cum_stride": 1,
             "receptive_field": 1, "calculation": "r0 = 1"}]
    r, j = 1, 1
    for layer in (m for m in features if isinstance(m, SPATIAL)):
        k, s, _, d = geometry(layer)
        k_eff = d * (k - 1) + 1
        r_new = r + (k_eff - 1) * j
        op = f"{k}x{k} conv" if isinstance(layer, nn.Conv2d) else f"{k}x{k} {type(layer).__name__[:3].lower()}pool"
        rows.append({"layer": names[len(rows) - 1], "operation": op, "kernel": k, "stride": s, "cum_stride": j * s,
                     "receptive_field": r_new, "calculation": f"{r} + ({k_eff}-1)*{j} = {r_new}"})
        r, j = r_new, j * s
    table = pd.DataFrame(rows)
    table[["kernel", "stride"]] = table[["kernel", "stride"]].astype("Int64")
    return table


def _probe(features: nn.Sequential) -> nn.Sequential:
    """A one-channel twin of ``features`` whose output depends positively on every input
    pixel in its receptive field: each conv becomes a 1-to-1-channel conv with the real
    layer's kernel, stride, padding and dilation and all-positive weights (with equal
    weights every channel of the real layer would carry the same map, so one suffices),
    max-pools become average pools of the same geometry (max routes the gradient to one
    pixel only), and ReLU, BN and dropout become identities."""
    layers: list[nn.Module] = []
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            twin = nn.Conv2d(1, 1, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
            nn.init.constant_(twin.weight, 1.0 / twin.weight.numel())
            layers.append(twin)
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            layers.append(nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding))
        else:
            layers.append(nn.Identity())
    return nn.Sequential(*layers).double().eval()


def _residual_probe(network: Residual) -> nn.Sequential:
    """A one-channel twin of the residual ``features`` (the real blocks, widths 1) with
    all-positive conv weights; BN in eval mode with its initial statistics is a positive scale,
    so every path, shortcut or main, carries a positive signal and ReLU passes it."""
    from models.network import make_residual_features

    features = make_residual_features(network, in_channels=1, widths=(1,) * len(network.blocks))
    for layer in features.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.constant_(layer.weight, 1.0 / layer.weight.numel())
    return features.double().eval()


def _measured_units(model_name: str) -> list[bool]:
    """Per layer of the probe, whether the table has a row for its output."""
    network = NETWORKS[model_name]
    if isinstance(network, Residual):  # the stem's ReLU, then each stage; not the global pooling
        return [False, False, True] + [True] * len(network.blocks) + [False]
    return [isinstance(layer, SPATIAL) for layer in skeleton(model_name).features]


def measured_receptive_fields(model_name: str, input_size: int | None = None) -> list[int]:
    """Measure, for one unit near the centre of each conv/pool output (each stage's, for a
    residual network), the side of the input square whose gradient is non-zero, on an input
    large enough that padding never clips it. PyTorch's own conv and pool arithmetic runs, not
    the formula of the walk."""
    table = receptive_field_table(model_name)
    network = NETWORKS[model_name]
    probe = _residual_probe(network) if isinstance(network, Residual) else _probe(skeleton(model_name).features)
    size = input_size or 2 * int(table["receptive_field"].max()) + 2 * int(table["cum_stride"].max())
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    measured, out = [], x
    for layer, unit in zip(probe, _measured_units(model_name), strict=True):
        out = layer(out)
        if not unit:
            continue
        h, w = out.shape[-2:]
        (grad,) = torch.autograd.grad(out[0, 0, h // 2, w // 2], x, retain_graph=True)
        rows = torch.nonzero(grad[0, 0].abs().sum(1))
        cols = torch.nonzero(grad[0, 0].abs().sum(0))
        if rows.min() == 0 or rows.max() == size - 1:
            raise StageError(f"{model_name}: probe input {size} too small, the receptive field reaches its border")
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        if height != width:
            raise StageError(f"{model_name}: measured receptive field is {height}x{width}, not square")
        measured.append(height)
    return measured


def paper_differences(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for source, printed in (("Tables 2-4", PAPER), ("Section 4.2 text", PAPER_TEXT),
                            ("Section 4.3 text (per block)", PAPER_BLOCKS)):
        for model, values in printed.items():
            ours = tables[model].set_index("layer")["receptive_field"]
            for layer, paper_value in values.items():
                if int(ours[layer]) != paper_value:
                    rows.append({"model": model, "layer": layer, "where": source, "paper": paper_value,
                                 "computed": int(ours[layer])})
    return pd.DataFrame(rows, columns=["model", "layer", "where", "paper", "computed"])


def analyse(models=MODEL_NAMES, out_dir: Path = RECEPTIVE_FIELD_DIR, verify: bool = True) -> dict[str, pd.DataFrame]:
    tables = {m: receptive_field_table(m) for m in models}
    if verify:
        for model, table in tables.items():
            walked = [int(v) for v in table["receptive_field"][1:]]
            measured = measured_receptive_fields(model)
            if walked != measured:
                raise StageError(f"{model}: walked receptive fields {walked} disagree with measured {measured}")
            table["measured"] = [1, *measured]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for model, table in tables.items():
            table.to_csv(tmp / f"{model}.csv", index=False)
        everything = tables | {m: receptive_field_table(m) for m in PAPER if m not in tables}
        paper_differences(everything).to_csv(tmp / "paper_differences.csv", index=False)
        from study.figures import plot_growth

        plot_growth(tables, tmp / "growth.png")
    return tables
