"""What JPEG compression costs in accuracy, for the report.

The study's offline data is a JPEG mirror of CIFAR-10 (quality 75, 4:2:0 chroma; see the
data's README). Its cost cannot be measured against the official archive where that cannot be
fetched, so the slope is measured instead: the same recipe on the mirror re-encoded at lower
qualities (``benchmarks/jpeg_variants.py``; a run's ``data.source`` ends in ``-q<Q>.tar.gz``),
beside the study's own runs on the mirror. A variant is the mirror decoded and encoded again,
so it is compressed twice: the rows say how accuracy falls as compression grows, not what the
uncompressed images would give.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.analysis import paper
from study.analysis.claims import interval, spread
from study.analysis.paper import NAMES
from study.analysis.selection import Cell, cells, expected_params, value
from study.analysis.stats import ALPHA, at_chance, fmt_p, holm, mean_sd, p_value, welch
from study.common import plural
from study.config import Settings
from study.figures import pyplot
from study.tracking.naming import JPEG_VARIANT

MIRROR_QUALITY = 75
MIRROR = f"{MIRROR_QUALITY} (the mirror)"
COLUMNS = ["model", "epochs", "JPEG quality", "test acc (%)", "n", "seeds", "difference to the mirror", "95% interval",
           "p (Holm)", "verdict"]


def variant_quality(source: object) -> int | None:
    """The JPEG quality of a re-encoded variant's data source, None for any other source."""
    found = JPEG_VARIANT.search(str(source or ""))
    return int(found.group(1)) if found else None


def variant_cells(runs: pd.DataFrame, settings: Settings) -> dict[tuple[str, int, int], Cell]:
    """(model, epochs, quality) -> the latest finished run per seed of each variant whose recipe
    equals params.yaml's in everything but the data."""
    if runs.empty or "params.data.source" not in runs:
        return {}
    quality = runs["params.data.source"].map(variant_quality)
    runs = runs[quality.notna() & runs["params.model"].isin(settings.models)]
    runs = runs.assign(quality=quality[runs.index].astype(int))
    wanted = {k: v for k, v in expected_params(settings, None).items() if k != "data.source"}  # all but the data
    same = runs.apply(lambda run: all(value(run, k) == v for k, v in wanted.items()), axis=1)
    runs = runs[same] if len(runs) else runs
    if runs.empty:
        return {}
    runs = runs.assign(**{"params.epochs": runs["params.epochs"].astype(int)})
    return cells(runs, ["params.model", "params.epochs", "quality"], set())


def cost_table(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell]) -> pd.DataFrame:
    """One row per model, epoch count and quality that has variant runs: the mirror's row first,
    then each variant with its difference to the mirror, the uncorrected 95% Welch interval, and
    the p-value Holm-corrected over the table's differences (one family)."""
    rows, gaps = [], {}
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        mirror = study.get((model, epochs))
        base = mirror.values("final_test_acc") if mirror else []
        rows.append({"model": NAMES.get(model, model), "epochs": epochs, "JPEG quality": MIRROR,
                     "test acc (%)": spread(base) if base else "not run", "n": len(base),
                     "seeds": ", ".join(map(str, mirror.seeds)) if mirror else "",
                     "difference to the mirror": "", "95% interval": "", "p (Holm)": "", "verdict": ""})
        for quality in sorted((q for m, e, q in variants if (m, e) == (model, epochs)), reverse=True):
            cell = variants[(model, epochs, quality)]
            values = cell.values("final_test_acc")
            gap = welch(values, base) if base and len(values) else None
            if gap is not None and gap.low is not None:
                gaps[len(rows)] = gap
            rows.append({"model": NAMES.get(model, model), "epochs": epochs, "JPEG quality": f"{quality}",
                         "test acc (%)": spread(values), "n": len(values), "seeds": ", ".join(map(str, cell.seeds)),
                         "difference to the mirror": f"{gap.gap:+.2f}" if gap else "no mirror run",
                         "95% interval": gap_interval(gap), "p (Holm)": "-", "verdict": "not decided"})
    for i, p in holm({i: p_value(gap) for i, gap in gaps.items()}).items():
        rows[i]["p (Holm)"] = fmt_p(p)
        rows[i]["verdict"] = ("lower than the mirror" if gaps[i].gap < 0 else "higher than the mirror") \
            if p < ALPHA else "not decided"
    return pd.DataFrame(rows, columns=COLUMNS)


def paper_gaps(study: dict[tuple[str, int], Cell], epochs: int) -> dict[str, float]:
    """Table 5's difference to the paper per model at ``epochs`` (a study epoch count), for the
    models that learned (not at chance)."""
    if epochs not in paper.EPOCHS:
        return {}
    gaps = {}
    for (model, e), cell in study.items():
        values = cell.values("final_test_acc")
        if e == epochs and values and not at_chance(values) and model in paper.ACCURACY:
            gaps[model] = mean_sd(values)[0] - paper.ACCURACY[model][paper.EPOCHS.index(epochs)]
    return gaps


def step_words(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell],
               table: pd.DataFrame) -> list[str]:
    """Per model: its first step down from the mirror against its gap to the paper, with the step's
    interval and its Holm verdict from ``table`` (a share of a gap is no more certain than the step);
    and the models with a gap to the paper but no variant runs, named as missing."""
    lines, shown = [], {m for m, _, _ in variants}
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        gaps = paper_gaps(study, epochs)
        first = max((q for m, e, q in variants if (m, e) == (model, epochs)), default=None)
        base = study.get((model, epochs))
        values = variants[(model, epochs, first)].values("final_test_acc") if first else []
        if model in gaps and base and values:
            gap = welch(values, base.values("final_test_acc"))
            row = table[(table["model"] == NAMES[model]) & (table["epochs"] == epochs)
                        & (table["JPEG quality"] == f"{first}")].iloc[0]
            share = f"{gap.gap / gaps[model]:.0%} of its gap to the paper ({gaps[model]:+.2f} at {epochs} epochs)"
            if gap.low is not None:
                ends = sorted((gap.low / gaps[model], gap.high / gaps[model]))
                share += f", {ends[0]:.0%} to {ends[1]:.0%} over the step's interval"
            lines.append(f"{NAMES[model]}: the step from quality {MIRROR_QUALITY} to {first} costs {gap.gap:+.2f} "
                         "points "
                         f"({row['95% interval'] or 'no interval'}; {row['verdict'] or 'not tested'} after Holm's "
                         f"correction), {share}")
    long = max((e for _, e in study), default=None)
    missing = {m: g for m, g in paper_gaps(study, long).items() if m not in shown} if long else {}
    if missing:
        names = ", ".join(f"{NAMES[m]} (gap to the paper {g:+.2f} at {long} epochs)"
                          for m, g in sorted(missing.items()))
        lines.append(f"No JPEG-variant runs yet for {names}: the device script `benchmarks/device/gpu_pipeline.sh` "
                     "queues them for the next GPU run; until they run, nothing here speaks to "
                     f"{'its' if len(missing) == 1 else 'their'} gap")
    return lines


def gap_interval(gap) -> str:
    """The Welch interval, or which side has too few seeds for one."""
    if gap is None:
        return ""
    if gap.low is not None:
        return interval(gap)
    short = [side for side, n in (("variant", gap.n[0]), ("mirror", gap.n[1])) if (n or 0) < 2]
    return f"- ({' and '.join(short)}: one seed)"


def plot_cost(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell], path: Path) -> bool:
    """Test accuracy against JPEG quality: each seed a dot, the mean a line, one colour per model."""
    if not variants:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        cells = {q: variants[(model, epochs, q)] for m, e, q in variants if (m, e) == (model, epochs)}
        if (model, epochs) in study:
            cells[MIRROR_QUALITY] = study[(model, epochs)]
        points = {q: cell.values("final_test_acc") for q, cell in sorted(cells.items())}
        label = f"{NAMES.get(model, model)}, {epochs} epochs"
        line = ax.plot(list(points), [sum(v) / len(v) for v in points.values()], "-", label=label)[0]
        for quality, values in points.items():
            ax.plot([quality] * len(values), values, "o", color=line.get_color(), fillstyle="none")
    ax.axvline(MIRROR_QUALITY, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="JPEG quality of the training and test images (75: the mirror; lower: re-encoded)",
           ylabel="test accuracy (%)", title="What JPEG compression costs (each seed a circle, the mean a line)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def section(table: pd.DataFrame, drawn: bool, steps: list[str], on_variant: int | None = None) -> list[str]:
    """The report's section, or a line saying why it is empty and how to fill it."""
    from study.figures import md_table

    if on_variant is not None:
        return [f"This workspace's data is the mirror re-encoded at JPEG quality {on_variant}: its runs are the "
                "tables above. The comparison against the mirror is made by a report whose `data.source` is the "
                "mirror, e.g. `python -m stages.report --store <store>` with the mirror in its `params.yaml`.", ""]
    if table.empty:
        return ["No runs yet. Make a variant with `python -m benchmarks.jpeg_variants <mirror> --quality 50 "
                "--out data/raw`, then `dvc exp run -S data.source=data/raw/cifar10-jpeg-q50.tar.gz`.", ""]
    tested = int(table["p (Holm)"].map(lambda p: p not in ("", "-")).sum())
    return [
        "The same recipe on the mirror re-encoded at a lower JPEG quality (`benchmarks/jpeg_variants.py`), beside "
        "the study's own runs on the mirror (quality 75). Difference: the variant's mean minus the mirror's, with "
        f"its uncorrected 95% Welch interval (two seeds a side at least). The {plural(tested, 'tested difference')} "
        f"{'forms' if tested == 1 else 'form'} one family: "
        "p is the two-sided Welch p-value Holm-corrected over them, and a difference is *decided* only when it is "
        f"below {ALPHA:g}. With two or three seeds a side a Welch test has one to four degrees of freedom: an "
        "interval that clears 0 uncorrected may not survive the correction.", "",
        md_table(table), "",
        *(["![accuracy against JPEG quality](figures/jpeg_cost.png)", ""] if drawn else []),
        *[f"- {line}." for line in steps], *([""] if steps else []),
        "What it suggests: accuracy falls as compression grows, so the mirror's own compression plausibly costs "
        "part of the gap to the paper; the steps above say how large a part one re-encoding is. What it cannot "
        "prove: how much the mirror's own compression costs. A variant is compressed twice (the mirror's quality "
        "75, then its own), so its loss is not the mirror's; and no run here saw uncompressed images, which only "
        "the official archive (`data.source: official`) can give.", "",
    ]
