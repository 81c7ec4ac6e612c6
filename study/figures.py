"""Tables and figures, drawn the same way by the report, the stages and the benchmarks.

Figure rules (a reader must be able to read them): legends sit outside the axes, below the
panels; lines that may coincide differ in style and marker, not only in colour; every seed
is drawn and labelled; images that are compared share one colour scale, with its bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED_STYLES = ("-", "--", ":", "-.")  # seed i of a model: line style i, marker i
SEED_MARKERS = ("o", "x", "^", "s")


def md_table(df: pd.DataFrame, words: tuple[str, ...] = ()) -> str:
    """A markdown table: the first column and the columns named in ``words`` left-aligned (text),
    the rest right-aligned (numbers)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" if i == 0 or c in words else "---:" for i, c in enumerate(df.columns)) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def legend_below(fig, axes, ncol: int = 4) -> None:
    """One legend for the figure, under the panels, each label once: never over the data."""
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend([handles[label] for label in labels], labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(ncol, len(labels)), fontsize=8, frameon=False)


def integer_epochs(ax) -> None:
    """Whole epochs on the x axis, even for a one-epoch run (matplotlib's integer ticks need two
    whole numbers in view, and fell back to 0.96, 0.98, ... 1.04)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_curve_rows(rows: list[tuple[str, list[dict]]], path: Path) -> bool:
    """Test accuracy and training loss per epoch, one row of two panels per (title, curves).
    A curve is a dict with ``epochs``, ``test_acc``, ``train_loss`` and optional ``label``,
    ``color``, ``style``, ``marker``, ``alpha``. Returns whether anything was drawn."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False)
    for (title, curves), row in zip(rows, axes, strict=True):
        for curve in curves:
            every = max(1, len(curve["epochs"]) // 10)  # markers thin enough to see the line between them
            for ax, key in zip(row, ("test_acc", "train_loss"), strict=True):
                ax.plot(curve["epochs"], curve[key], curve.get("style", "-"), color=curve.get("color"),
                        alpha=curve.get("alpha", 1.0), label=curve.get("label"), marker=curve.get("marker", "."),
                        markevery=every, markersize=5, fillstyle="none")
        row[0].set(xlabel="epoch", ylabel="test accuracy (%)")
        row[1].set(xlabel="epoch", ylabel="training loss")
        for ax, name in zip(row, ("Test accuracy", "Training loss"), strict=True):
            ax.set_title(f"{name}\n{title}" if title else name, fontsize=10)  # a run's long title on its own line
        for ax in row:
            ax.grid(alpha=0.3)
            integer_epochs(ax)
    legend_below(fig, axes)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return any(curves for _, curves in rows)


def plot_curves(curves: list[dict], path: Path, title: str = "") -> bool:
    """One row of :func:`plot_curve_rows`."""
    return plot_curve_rows([(title, curves)], path)


def tile(panels: np.ndarray, cols: int, gap: int, fill: float = 1.0) -> np.ndarray:
    """Panels (n, h, w, 3) laid out in rows of ``cols`` with ``gap`` pixels of ``fill`` between
    and around them: one image, so a grid of many panels costs one matplotlib axes, not one each."""
    n, h, w, c = panels.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), fill, dtype=np.float32)
    for i, panel in enumerate(panels):
        r, k = divmod(i, cols)
        grid[gap + r * (h + gap):gap + r * (h + gap) + h, gap + k * (w + gap):gap + k * (w + gap) + w] = panel
    return grid


# One colour scale for every model's feature maps (activations after the first ReLU, on inputs
# normalised to unit variance): 0 to this, brighter clipped and counted. The H200 store's seed-0
# models, each scaled on its own, topped out at 1.5 to 2.1, so 2 shows all four with little clipped.
FEATURE_MAP_TOP = 2.0


def plot_feature_maps(images: np.ndarray, maps, path: Path, title: str, channels: int = 16,
                      top: float = FEATURE_MAP_TOP) -> float:
    """First-layer feature maps of a few images, every panel of every model on one colour scale
    (0 to ``top``, brighter clipped to the top colour; with its bar), so a dead or flat channel
    looks dark and two models' figures compare directly. ``maps``: (images, channels, h, w).
    Drawn as one tiled image (the input first in each row), which matplotlib renders in a
    fraction of the time of an axes per panel. Returns the share of the activations shown that
    were clipped."""
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    maps = np.asarray(maps.float().cpu() if hasattr(maps, "cpu") else maps, dtype=np.float32)
    channels = min(channels, maps.shape[1])
    clipped = float((maps[:, :channels] > top).mean())
    scale = ScalarMappable(norm=Normalize(0.0, top), cmap="viridis")
    h, w = maps.shape[2:]
    inputs = np.asarray(images, dtype=np.float32) / 255.0  # every model's first conv keeps the 32x32 size
    coloured = scale.cmap(scale.norm(maps[:, :channels]))[..., :3]  # above the top: the bar's top colour
    panels = np.concatenate([inputs[:, None], coloured], axis=1).reshape(-1, h, w, 3)
    gap = max(2, h // 8)
    grid = tile(panels, channels + 1, gap)
    fig, ax = plt.subplots(figsize=((channels + 1) * 0.9 + 1.0, len(images) * 1.0))
    ax.imshow(grid, interpolation="nearest")
    centres = [gap + k * (w + gap) + (w - 1) / 2 for k in range(channels + 1)]
    ax.set_xticks(centres, ["input", *(f"ch {c}" for c in range(channels))], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(scale, ax=ax, fraction=0.015, pad=0.01, extend="max",
                 label=f"activation (one scale for every model; {clipped:.1%} above {top:g} clipped)")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return clipped
