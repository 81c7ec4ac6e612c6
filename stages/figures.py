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


def md_table(df: pd.DataFrame) -> str:
    """A markdown table: first column left-aligned (names), the rest right-aligned (numbers)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(df.columns))) + "|"
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
        row[0].set(xlabel="epoch", ylabel="test accuracy (%)", title=f"Test accuracy{': ' + title if title else ''}")
        row[1].set(xlabel="epoch", ylabel="training loss", title=f"Training loss{': ' + title if title else ''}")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    legend_below(fig, axes)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return any(curves for _, curves in rows)


def plot_curves(curves: list[dict], path: Path, title: str = "") -> bool:
    """One row of :func:`plot_curve_rows`."""
    return plot_curve_rows([(title, curves)], path)


def plot_feature_maps(images: np.ndarray, maps, path: Path, title: str, channels: int = 16) -> None:
    """First-layer feature maps of a few images, every panel on one colour scale (0 to the 99.5th
    percentile of the activations shown, brighter clipped; with its bar), so a dead or flat
    channel looks dark and two figures compare by their bars. ``maps``: (images, channels, h, w)."""
    plt = pyplot()
    maps = np.asarray(maps.float().cpu() if hasattr(maps, "cpu") else maps, dtype=np.float32)
    channels = min(channels, maps.shape[1])
    top = float(np.percentile(maps[:, :channels], 99.5)) or float(maps[:, :channels].max()) or 1.0
    fig, axes = plt.subplots(len(images), channels + 1, figsize=((channels + 1) * 0.9 + 1.0, len(images) * 1.0),
                             squeeze=False)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image)
        for c in range(channels):
            shown = axes[r, c + 1].imshow(maps[r, c], cmap="viridis", vmin=0.0, vmax=top)
            if r == 0:
                axes[r, c + 1].set_title(f"ch {c}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    axes[0, 0].set_title("input", fontsize=7)
    fig.colorbar(shown, ax=axes, fraction=0.015, pad=0.01, extend="max", label="activation (one scale, all panels)")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
