"""Tables and figures, drawn the same way by the report, the stages and the benchmarks.

Figure rules (a reader must be able to read them): legends sit outside the axes, below the
panels; lines that may coincide differ in style and marker, not only in colour; every seed
is drawn and labelled; images that are compared share one colour scale, with its bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.architectures import NAMES

SEED_STYLES = ("-", "--", ":", "-.")  # seed i of a model: line style i, marker i
SEED_MARKERS = ("o", "x", "^", "s")
INIT_LINES = {"default": "-", "kaiming": "--", "torchvision": ":"}  # the signal figure's line per init


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


def plot_filters(weight, path: Path, title: str) -> None:
    """The first layer's filters (a tensor, out × in × k × k), each stretched to [0, 1] on its own,
    8 to a row, as one tiled image (an axes per filter costs matplotlib seconds)."""
    import textwrap

    plt = pyplot()
    w = weight.detach().float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # each filter to [0, 1]
    zoom = max(1, 24 // w.shape[1])  # a 3x3 filter drawn as 24x24 pixels of 8x8 blocks
    w = w.repeat(zoom, axis=1).repeat(zoom, axis=2)
    cols = 8
    rows = -(-len(w) // cols)
    fig, ax = plt.subplots(figsize=(cols * 0.9, rows * 0.9 + 0.4))
    ax.imshow(tile(w, cols, gap=max(2, w.shape[1] // 3)), interpolation="nearest")
    ax.axis("off")
    fig.suptitle("\n".join(textwrap.fill(line, 80) for line in title.splitlines()), fontsize=9)  # fits the figure
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(rows: list[dict], metric: str, path: Path) -> None:
    """One panel per model, one line per revision: colour, line style and marker per revision
    (two revisions often coincide, e.g. VGG-16 at 10% in both), one legend under the panels."""
    plt = pyplot()
    models = list(dict.fromkeys(row["filename"].split("/")[0] for row in rows))
    revisions = list(dict.fromkeys(row["rev"] for row in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        for i, rev in enumerate(revisions):
            points = sorted((int(r["epoch"]), float(r[metric])) for r in rows
                            if r["rev"] == rev and r["filename"].startswith(f"{model}/"))
            ax.plot([p[0] for p in points], [p[1] for p in points], SEED_STYLES[i % len(SEED_STYLES)],
                    color=f"C{i}", label=rev, marker=SEED_MARKERS[i % len(SEED_MARKERS)], fillstyle="none",
                    markevery=max(1, len(points) // 10))
        ax.set(title=model, xlabel="epoch")
        ax.grid(alpha=0.3)
        integer_epochs(ax)
    axes[0][0].set_ylabel(metric)
    legend_below(fig, axes, ncol=len(revisions))
    fig.tight_layout()
    from study.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_signal(table: pd.DataFrame, path: Path) -> None:
    """Both panels share one legend, under them: colour and marker for the model, solid for
    PyTorch's default init, dashed for Kaiming's, dotted for torchvision's VGG init."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    models = list(dict.fromkeys(table["model"]))
    for (model, init), rows in table.groupby(["model", "init"], sort=False):
        i = models.index(model)
        style = {"color": f"C{i}", "linestyle": INIT_LINES.get(init, "-."), "marker": "osD^v"[i % 5],
                 "markersize": 4, "fillstyle": "full" if init == "default" else "none"}
        for ax, column in zip(axes, ("forward_std", "backward_std"), strict=True):
            ax.plot(rows["layer"], rows[column], label=f"{NAMES.get(model, model)}, {init} init", **style)
    for ax, title in zip(axes, ("activations (forward)", "gradients (backward)"), strict=True):
        ax.set(yscale="log", xlabel="conv / linear layer, from the input", ylabel="standard deviation",
               title=f"Signal at initialisation: {title}")
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.get_major_locator().set_params(integer=True)
    legend_below(fig, axes)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_growth(tables: dict[str, pd.DataFrame], path: Path, image_size: int = 32) -> list[str]:
    """One line per distinct growth: models with identical fields (VGG-16 and VGG-16 with BN
    share their geometry) are one line naming both, so none hides under another. Returns the
    lines' labels."""
    plt = pyplot()
    groups: dict[tuple, list[str]] = {}
    for model, table in tables.items():
        groups.setdefault(tuple(int(v) for v in table["receptive_field"]), []).append(model)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (fields, models) in enumerate(groups.items()):
        label = " = ".join(NAMES.get(m, m) for m in models) + (" (identical)" if len(models) > 1 else "")
        # each later line thinner, with smaller markers: where prefixes agree (VGG-8 and VGG-16 up to
        # Pool3) the earlier line still shows around the later one
        ax.plot(range(len(fields)), fields, marker="osD^v"[i % 5], linestyle=("-", "--", "-.", ":")[i % 4],
                color=f"C{i}", label=label, markersize=max(9 - 2.5 * i, 3), linewidth=max(3 - 0.8 * i, 1))
    ax.axhline(image_size, color="grey", linestyle="--", linewidth=1)
    ax.text(0, image_size * 1.05, f"{image_size}x{image_size} input", color="grey")
    ax.set_xlabel("conv/pool layers from the input (a residual network: its stem, then each stage)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("receptive field (pixels, side)")
    ax.set_title("Receptive-field growth (computed from each model's features)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")  # the lines rise to the right: the upper left stays empty
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ax.get_legend_handles_labels()[1]


def plot_cost(series: dict[str, dict[int, list[float]]], mirror_quality: int, path: Path) -> bool:
    """Test accuracy against JPEG quality, ``series``: {label: {quality: the seeds' accuracies}}; each
    seed a circle, the mean a line, one colour per series."""
    if not series:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in series.items():
        points = dict(sorted(points.items()))
        line = ax.plot(list(points), [sum(v) / len(v) for v in points.values()], "-", label=label)[0]
        for quality, values in points.items():
            ax.plot([quality] * len(values), values, "o", color=line.get_color(), fillstyle="none")
    ax.axvline(mirror_quality, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel=f"JPEG quality of the training and test images ({mirror_quality}: the mirror; lower: re-encoded)",
           ylabel="test accuracy (%)", title="What JPEG compression costs (each seed a circle, the mean a line)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
