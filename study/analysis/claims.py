"""The study's claims, judged on the runs the report selected (study/analysis/selection.py).

Each claim is a difference of means with its 95% Welch t interval (``selection.welch``),
decided only when the interval lies wholly on one side of 0 or of the claim's margin; a
categorical claim (a network at chance against one far above it) is judged by the stated
rule in ``selection.STATISTIC`` at any n. Every row shows the gap, the interval and n per side.
"""

from __future__ import annotations

from study.analysis import paper
from study.analysis.paper import NAMES
from study.analysis.selection import (
    AT_CHANCE_WITHIN,
    CHANCE,
    FAR_ABOVE,
    STATISTIC,
    Cell,
    Gap,
    at_chance,
    decide,
    far_above_chance,
    mean_sd,
    seeds_to_decide,
    welch,
)

MATCH_MARGIN = 1.0  # points: "matches" means at most this far below


def spread(values: list[float], spec: str = ".2f") -> str:
    """mean ± sd (the row's n column says how many seeds), or the single value."""
    mean, sd, _ = mean_sd(values)
    return format(mean, spec) if sd is None else f"{mean:{spec}} ± {sd:{spec}}"


def interval(gap: Gap, spec: str = "+.2f") -> str:
    return "- (one seed)" if gap.low is None else f"[{gap.low:{spec}}, {gap.high:{spec}}]"


def sizes(gap: Gap) -> str:
    return f"{gap.n[0]} / {gap.n[1]}" if gap.n[1] else f"{gap.n[0]}"


def welch_verdict(gap: Gap, want: str, threshold: float = 0.0) -> str:
    if gap.low is None:
        return "single seed, not decided"
    outcome = decide(gap, want, threshold)
    if outcome == "reproduced":
        return outcome
    if outcome == "not reproduced":
        return "**not reproduced**"
    need = seeds_to_decide(gap, threshold)
    more = (f"about {need} seeds a side would decide it at this spread" if need
            else "more than 100 seeds a side would be needed at this spread")
    return f"not decided at n={sizes(gap).replace(' ', '')}; {more}"


def judge(study: dict[tuple[str, int], Cell], short: int | None, long: int) -> list[dict]:
    """One row per claim the runs can speak to: claim, evidence, gap, interval, n, verdict."""
    def acc(model, epochs) -> list[float]:
        cell = study.get((model, epochs)) if epochs else None
        return cell.values("final_test_acc") if cell else []

    rows = []

    def row(claim, evidence, gap, verdict, spec="+.2f"):
        rows.append({"the study's claim": claim, "this rerun": evidence, "gap (first − second)": f"{gap.gap:{spec}}",
                     "95% interval": interval(gap, spec), "n": sizes(gap), "verdict": verdict})

    def pair(claim, a_model, b_model, epochs, want, threshold=0.0):
        a, b = acc(a_model, epochs), acc(b_model, epochs)
        if epochs and a and b:
            row(claim, f"{NAMES[a_model]} {spread(a)} vs {NAMES[b_model]} {spread(b)}, {epochs} epochs",
                welch(a, b), welch_verdict(welch(a, b), want, threshold))

    v16, bn = acc("vgg16", long), acc("vgg16_bn", long)
    if v16:
        off = all(abs(v - CHANCE) > AT_CHANCE_WITHIN for v in v16)
        verdict = ("reproduced (categorical: every seed at chance)" if at_chance(v16) else
                   "**not reproduced** (categorical: no seed at chance)" if off else "not decided (seeds disagree)")
        row(f"Plain VGG-16 does not learn (stays at chance, {CHANCE:g}%)",
            f"VGG-16 {spread(v16)}, {long} epochs; gap to chance", welch(v16, CHANCE), verdict)
    if v16 and bn:
        gap = welch(bn, v16)
        if far_above_chance(bn) and at_chance(v16):
            verdict = "reproduced (categorical: at chance vs far above)"
        elif at_chance(bn):
            verdict = "**not reproduced** (categorical: VGG-16 with BN at chance too)"
        else:
            verdict = welch_verdict(gap, "greater")
        row("Batch Normalization makes VGG-16 learn (VGG-16 with BN beats plain VGG-16)",
            f"VGG-16 with BN {spread(bn)} vs VGG-16 {spread(v16)}, {long} epochs", gap, verdict)
    for other in ("alexnet", "vgg8"):
        pair(f"VGG-16 with BN is more accurate than {NAMES[other]}", "vgg16_bn", other, long, "greater")
    pair(f"VGG-8 matches (within {MATCH_MARGIN:g} point) or beats AlexNet with fewer parameters", "vgg8", "alexnet",
         long, "greater", -MATCH_MARGIN)
    pair("VGG-16 with BN learns fastest (beats AlexNet after the short run)", "vgg16_bn", "alexnet", short, "greater")
    pair("VGG-8 starts slower than AlexNet", "vgg8", "alexnet", short, "less")
    points = {m: per_point(study.get((m, long))) for m in ("alexnet", "vgg8")}
    if all(points.values()) and min(mean_sd(acc(m, long))[0] for m in points) > CHANCE + FAR_ABOVE:
        gap = welch(points["vgg8"], points["alexnet"])
        row("VGG-8 is more parameter-efficient than AlexNet (fewer parameters per point)",
            f"VGG-8 {spread(points['vgg8'], '.0f')}K vs AlexNet {spread(points['alexnet'], '.0f')}K per point",
            gap, welch_verdict(gap, "less"), "+.0f")
    return rows


def per_point(cell: Cell | None) -> list[float]:
    """Parameters per point of test accuracy, thousands, per seed: from what each run logged."""
    if cell is None:
        return []
    return [float(r["params.num_parameters"]) / float(r["metrics.final_test_acc"]) / 1e3 for r in cell.runs
            if float(r.get("metrics.final_test_acc") or 0) > 0 and r.get("params.num_parameters") is not None
            and r.get("params.num_parameters") == r.get("params.num_parameters")]  # NaN != NaN


def epoch_columns(short: int | None, long: int) -> str:
    return f"{short} and {long}" if short else f"{long}"


def discussion(study: dict[tuple[str, int], Cell], short: int | None, long: int, data: str) -> list[str]:
    """The claims section: the rule, the caveats that apply, the table. ``data``: the data's name."""
    lines = [STATISTIC, ""]
    if (short, long) != paper.EPOCHS:
        lines.append(f"*These runs are {epoch_columns(short, long)} epochs, not the study's 5 and 40: the verdicts "
                     "below compare like with unlike and say little about the study's claims.*")
    if data != "official":
        lines.append(f"*Data: `{data}`, not the official CIFAR-10 archive. On the JPEG mirror expect "
                     "accuracies up to a couple of points lower than on official CIFAR-10.*")
    rows = judge(study, short, long)
    if rows:
        columns = list(rows[0])
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * 2 + "---:|" * 3 + "---|"]
        lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
        lines += ["", f"Gap: the first network's mean minus the second's (points of test accuracy; thousands of "
                  "parameters per point in the last row); n: seeds per side. A claim of *matching* allows the "
                  f"first to be up to {MATCH_MARGIN:g} point below: decided only when the interval clears −"
                  f"{MATCH_MARGIN:g}."]
    return lines
