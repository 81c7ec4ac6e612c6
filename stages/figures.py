"""Tables and learning curves, drawn the same way by the report and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def md_table(df: pd.DataFrame) -> str:
    """A markdown table: first column left-aligned (names), the rest right-aligned (numbers)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(df.columns))) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def plot_curves(curves: list[dict], path: Path, title: str = "") -> bool:
    """Test accuracy and training loss per epoch, one line per curve. A curve is a dict with
    ``epochs``, ``test_acc``, ``train_loss`` and optional ``label``, ``color``, ``style``,
    ``alpha``. Returns whether anything was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for curve in curves:
        for ax, key in zip(axes, ("test_acc", "train_loss"), strict=True):
            ax.plot(curve["epochs"], curve[key], curve.get("style", "-"), color=curve.get("color"),
                    alpha=curve.get("alpha", 1.0), label=curve.get("label"),
                    marker="." if len(curve["epochs"]) < 60 else None)
    axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="Training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    if any(c.get("label") for c in curves):
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return bool(curves)
