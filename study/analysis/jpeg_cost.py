"""What JPEG compression costs in accuracy, for the report.

The study's offline data is a JPEG mirror of CIFAR-10 (quality 75, 4:2:0 chroma; see the
data's README). Its cost cannot be measured against the official archive where that cannot be
fetched, so the slope is measured instead: the same recipe on the mirror re-encoded at lower
qualities (``benchmarks/jpeg_variants.py``; a run's ``data.jpeg_quality``, which prepare reads from
the images' own quantization tables),
beside the study's own runs on the mirror. A variant is the mirror decoded and encoded again,
so it is compressed twice: the rows say how accuracy falls as compression grows, not what the
uncompressed images would give.
"""

from __future__ import annotations

import pandas as pd

from study.analysis import paper
from study.analysis.claims import interval, spread
from study.analysis.paper import NAMES
from study.analysis.selection import Cell, cells, expected_params, value
from study.analysis.stats import ALPHA, at_chance, fmt_number, fmt_p, holm, p_value, welch
from study.config import Settings
from study.console import plural
from study.data import MIRROR_QUALITY

MIRROR = f"{MIRROR_QUALITY} (the mirror)"
COLUMNS = ["model", "epochs", "JPEG quality", "test acc (%)", "n", "seeds", "difference to the mirror (same seeds)",
           "95% interval (uncorrected)", "p (Holm)", "verdict"]


def variant_quality(quality: object) -> int | None:
    """A data identity's JPEG quality (meta.json's, or a run's ``data.jpeg_quality`` param) where it
    is a re-encoded variant's, not the mirror's; None for the mirror or data that is not JPEG."""
    if quality is None or pd.isna(quality) or str(quality) in ("", "None"):
        return None
    return None if int(float(quality)) == MIRROR_QUALITY else int(float(quality))


def variant_cells(runs: pd.DataFrame, settings: Settings) -> dict[tuple[str, int, int], Cell]:
    """(model, epochs, quality) -> the latest finished run per seed of each variant whose recipe
    equals params.yaml's in everything but the data."""
    if runs.empty or "params.data.jpeg_quality" not in runs:
        return {}
    quality = runs["params.data.jpeg_quality"].map(variant_quality)
    runs = runs[quality.notna() & runs["params.model"].isin(settings.models)]
    runs = runs.assign(quality=quality[runs.index].astype(int))
    wanted = {k: v for k, v in expected_params(settings, None).items() if k != "data.source"}  # all but the data
    same = runs.apply(lambda run: all(value(run, k) == v for k, v in wanted.items()), axis=1)
    runs = runs[same] if len(runs) else runs
    if runs.empty:
        return {}
    runs = runs.assign(**{"params.epochs": runs["params.epochs"].astype(int)})
    return cells(runs, ["params.model", "params.epochs", "quality"], set())


def paired(variant: Cell, mirror: Cell | None) -> list[float]:
    """Per seed the two share (the same initial weights and batch order): variant − mirror."""
    if mirror is None:
        return []
    base = {int(r["params.seed"]): r.get("metrics.final_test_acc") for r in mirror.runs}
    return [float(r["metrics.final_test_acc"]) - float(base[int(r["params.seed"])]) for r in variant.runs
            if int(r["params.seed"]) in base and r.get("metrics.final_test_acc") is not None]


def cost_table(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell]) -> pd.DataFrame:
    """One row per model, epoch count and quality that has variant runs: the mirror's row first,
    then each variant with its difference to the mirror paired by seed, its 95% t interval, and
    the paired t test's p-value Holm-corrected over the table's differences (one family)."""
    rows, gaps = [], {}
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        mirror = study.get((model, epochs))
        base = mirror.values("final_test_acc") if mirror else []
        rows.append({"model": NAMES.get(model, model), "epochs": epochs, "JPEG quality": MIRROR,
                     "test acc (%)": spread(base) if base else "not run", "n": len(base),
                     "seeds": ", ".join(map(str, mirror.seeds)) if mirror else "",
                     "difference to the mirror (same seeds)": "", "95% interval (uncorrected)": "", "p (Holm)": "",
                     "verdict": ""})
        for quality in sorted((q for m, e, q in variants if (m, e) == (model, epochs)), reverse=True):
            cell = variants[(model, epochs, quality)]
            differences = paired(cell, mirror)
            gap = welch(differences, 0.0) if differences else None
            if gap is not None and gap.low is not None:
                gaps[len(rows)] = gap
            rows.append({"model": NAMES.get(model, model), "epochs": epochs, "JPEG quality": f"{quality}",
                         "test acc (%)": spread(cell.values("final_test_acc")), "n": len(cell.runs),
                         "seeds": ", ".join(map(str, cell.seeds)),
                         "difference to the mirror (same seeds)": fmt_number(gap.gap, "+.2f") if gap else
                         "no mirror run of these seeds", "95% interval (uncorrected)": interval(gap) if gap else "",
                         "p (Holm)": "-", "verdict": "not decided"})
    for i, p in holm({i: p_value(gap) for i, gap in gaps.items()}).items():
        rows[i]["p (Holm)"] = fmt_p(p)
        rows[i]["verdict"] = ("lower than the mirror" if gaps[i].gap < 0 else "higher than the mirror") \
            if p < ALPHA else "not decided"
    return pd.DataFrame(rows, columns=COLUMNS)


def slope_words(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell]) -> list[str]:
    """Per model: the change in accuracy per 10 points of JPEG quality, a straight line through each
    seed's own points (the mirror's and its variants'), its mean over seeds with a t interval and
    p-value (one-sample t over the seeds' slopes: the seed pairing kept); and the models with no
    variant runs, named as missing."""
    import numpy as np

    lines, shown = [], {m for m, _, _ in variants}
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        by_seed: dict[int, list[tuple[int, float]]] = {}
        cells = {q: variants[(model, epochs, q)] for m, e, q in variants if (m, e) == (model, epochs)}
        if (model, epochs) in study:
            cells[MIRROR_QUALITY] = study[(model, epochs)]
        for quality, cell in cells.items():
            for run in cell.runs:
                if run.get("metrics.final_test_acc") is not None:
                    accuracy = float(run["metrics.final_test_acc"])
                    by_seed.setdefault(int(run["params.seed"]), []).append((quality, accuracy))
        slopes = {seed: 10 * float(np.polyfit([q for q, _ in points], [a for _, a in points], 1)[0])
                  for seed, points in sorted(by_seed.items()) if len({q for q, _ in points}) >= 2}
        qualities = ", ".join(map(str, sorted(cells, reverse=True)))
        if len(slopes) < 2:
            lines.append(f"{NAMES[model]} ({epochs} epochs): {plural(len(slopes), 'seed')} with runs at two qualities "
                         "or more: no slope to test")
            continue
        gap = welch(list(slopes.values()), 0.0)
        per_seed = ", ".join(f"{seed}: {fmt_number(value, '+.2f')}" for seed, value in slopes.items())
        lines.append(f"{NAMES[model]} ({epochs} epochs): {fmt_number(gap.gap, '+.2f')} points of accuracy per 10 "
                     f"points of JPEG quality (qualities {qualities}; per seed: "
                     f"{per_seed}), 95% interval "
                     f"{interval(gap)}, p = {fmt_p(p_value(gap))} (t over the {len(slopes)} seeds' slopes, "
                     f"{len(slopes) - 1} df; uncorrected)")
    long = max((e for _, e in study), default=None)
    learned = [m for (m, e), cell in study.items() if e == long and (v := cell.values("final_test_acc"))
               and not at_chance(v) and m in paper.ACCURACY]
    missing = [m for m in learned if m not in shown]
    if missing:
        lines.append(f"No JPEG-variant runs yet for {', '.join(NAMES[m] for m in sorted(missing))}: the device script "
                     "`benchmarks/device/gpu_pipeline.sh` queues them for the next GPU run")
    return lines


def cost_points(study: dict[tuple[str, int], Cell], variants: dict[tuple[str, int, int], Cell]) -> dict:
    """What the JPEG figure draws: {"<network>, <epochs> epochs": {quality: the seeds' accuracies}}."""
    series = {}
    for model, epochs in sorted({(m, e) for m, e, _ in variants}):
        cells = {q: variants[(model, epochs, q)] for m, e, q in variants if (m, e) == (model, epochs)}
        if (model, epochs) in study:
            cells[MIRROR_QUALITY] = study[(model, epochs)]
        label = f"{NAMES.get(model, model)}, {epochs} epochs"
        series[label] = {quality: cell.values("final_test_acc") for quality, cell in cells.items()}
    return series


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
        "the study's own runs on the mirror (quality 75). A variant's run and the mirror's run of the same seed start "
        "from the same weights and see the same batches, so each difference is taken seed by seed: the variant's "
        "run minus the mirror's, their mean over the seeds both have, a 95% t interval on those differences "
        "(n − 1 df) and the paired t test's two-sided p. The "
        f"{plural(tested, 'tested difference')} {'forms' if tested == 1 else 'form'} one family: p is "
        f"Holm-corrected over them, and a difference is *decided* only when that is below {ALPHA:g}.", "",
        md_table(table), "",
        *(["![accuracy against JPEG quality](figures/jpeg_cost.png)", ""] if drawn else []),
        "The slope over quality, per seed, then tested over the seeds:", "",
        *[f"- {line}." for line in steps], *([""] if steps else []),
        "What it shows: accuracy falls as compression grows, over qualities the mirror already had (75) and lower. "
        "What it cannot show: what the mirror's own compression (quality 75 against the original images) costs, and "
        "so how much of the gap to the paper it explains. A variant is the mirror compressed a second time, and no "
        "run here saw the original images: that needs the official archive (`data.source: official`), which the "
        "machine that ran the study could not reach.", "",
    ]
