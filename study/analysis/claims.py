"""The study's claims in its own words, judged on the runs the report selected
(study/analysis/selection.py) with the statistics of study/analysis/stats.py.

Each row quotes the paper and names its section, and is judged on what the words say. Where
the project adds a looser reading (a margin the paper never states), it is a row of its own,
labelled as ours. The paper's rows tested by Welch's t form one family, ours another: each
verdict uses Holm's correction within its family; the interval shown is the uncorrected 95% one.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.analysis import paper
from study.analysis.paper import NAMES
from study.analysis.selection import Cell
from study.analysis.stats import (
    ALPHA,
    AT_CHANCE_WITHIN,
    CHANCE,
    CONFIDENCE,
    FAR_ABOVE,
    POWER,
    Gap,
    at_chance,
    decide,
    far_above_chance,
    fmt_p,
    holm,
    mean_sd,
    p_value,
    power_estimate,
    welch,
)

MATCH_MARGIN = 1.0  # points: our reading of "catches up": at most this far below
PAPERS = "the paper's"
OURS = "ours: "  # a reading the project adds
STATISTIC = (
    f"Each claim below quotes the paper (its section in brackets) and is judged on those words. A comparison "
    f"is a difference of means over seeds, its {CONFIDENCE:.0%} Welch t interval (the t quantile at the "
    f"Welch-Satterthwaite degrees of freedom, which at two or three seeds a side are few, so the interval is "
    f"wide) and its two-sided p-value against the claim's threshold. The paper's claims tested this way form one "
    f"family and the project's own readings another: a claim is *decided* only when its p-value, corrected by "
    f"Holm's method within its family, is below {ALPHA:g}; the interval shown is the uncorrected one, so an "
    f"interval that clears the threshold can still leave a claim not decided. A claim not decided says how many "
    f"seeds a side would give an {POWER:.0%} chance of deciding it if the observed gap and spreads were the truth "
    f"(the noncentral t power of the Welch test at its family's Bonferroni level, alpha over the family's size), "
    f"with the range that the sds' own uncertainty gives (their {CONFIDENCE:.0%} chi-square interval). With one "
    f"seed a side there is no spread: \"single seed, not decided\". A categorical claim is judged by a stated "
    f"rule at any n, outside the family: a network is *at chance* when every seed scores within "
    f"{AT_CHANCE_WITHIN:g} point of {CHANCE:g}% (a constant guess), and *far above* when every seed scores at "
    f"least {FAR_ABOVE:g} points above it. A reading marked *ours* is the project's, not the paper's: it is "
    f"shown beside the paper's, never instead of it.")


@dataclass
class Row:
    claim: str  # the paper's words, quoted
    where: str  # its section
    reading: str  # "the paper's", or "ours: ..."
    evidence: str
    gap: Gap
    want: str | None  # "greater" / "less" for a tested row; None for a categorical one
    threshold: float = 0.0
    verdict: str = ""  # set for a categorical row; a tested row's comes from the family
    spec: str = "+.2f"
    order: str = ""  # every seed of one side below (or above) every seed of the other, when so

    @property
    def tested(self) -> bool:
        return self.want is not None and self.gap.low is not None

    @property
    def ours(self) -> bool:
        return self.reading.startswith(OURS)


def spread(values: list[float], spec: str = ".2f") -> str:
    """mean ± sd (the row's n column says how many seeds), or the single value."""
    mean, sd, _ = mean_sd(values)
    return format(mean, spec) if sd is None else f"{mean:{spec}} ± {sd:{spec}}"


def interval(gap: Gap, spec: str = "+.2f") -> str:
    return "- (one seed)" if gap.low is None else f"[{gap.low:{spec}}, {gap.high:{spec}}]"


def sizes(gap: Gap) -> str:
    return f"{gap.n[0]} / {gap.n[1]}" if gap.n[1] else f"{gap.n[0]}"


def seed_order(a: list[float], b: list[float], a_name: str, b_name: str) -> str:
    if len(a) < 2 or len(b) < 2:
        return ""
    if max(a) < min(b):
        return f"every {a_name} seed is below every {b_name} seed"
    if min(a) > max(b):
        return f"every {a_name} seed is above every {b_name} seed"
    return ""


def power_words(gap: Gap, threshold: float, family: int) -> str:
    estimate = power_estimate(gap, threshold, family)
    if estimate is None:
        return ""
    now = max(gap.n[0], gap.n[1] or 0)

    def seeds(n, about=""):  # never as few as are here: the claim is not decided at these
        return "more than 10,000" if n is None else f"more than {now}" if n <= now else f"{about}{n}"

    at, low, high = seeds(estimate[0], "about "), seeds(estimate[1]), seeds(estimate[2])
    return (f"{POWER:.0%} power would need {at} seeds a side if the observed gap and spreads were the truth "
            f"({low} to {high} within the sds' {CONFIDENCE:.0%} range)")


def tested_verdict(row: Row, p_adjusted: float, family: int) -> str:
    outcome = decide(row.gap, row.want, row.threshold, p_adjusted)
    if outcome == "reproduced":
        return "reproduced (Holm-corrected)"
    if outcome == "not reproduced":
        return "**not reproduced** (Holm-corrected)"
    against = (row.gap.gap < row.threshold) == (row.want == "greater")
    words = [f"not decided at n={sizes(row.gap).replace(' ', '')}"]
    if against:
        words.append("the observed gap goes against the claim")
    if row.order:
        words.append(row.order)
    if more := power_words(row.gap, row.threshold, family):
        words.append(more)
    return "; ".join(words)


def categorical_rows(v16: list[float], bn: list[float], long: int) -> list[Row]:
    """The claims judged by the stated rule at any n: plain VGG-16 at chance, and VGG-16 with BN
    far above it (tested by Welch's t, in the paper's family, when neither rule applies)."""
    rows = []
    if v16:
        off = all(abs(v - CHANCE) > AT_CHANCE_WITHIN for v in v16)
        verdict = ("reproduced (categorical: every seed at chance)" if at_chance(v16) else
                   "**not reproduced** (categorical: no seed at chance)" if off else "not decided (seeds disagree)")
        rows.append(Row("Completely fails to learn, stuck at 10% accuracy (random chance)", "§6.1.2", PAPERS,
                        f"VGG-16 {spread(v16)}, {long} epochs; gap to chance", welch(v16, CHANCE), None,
                        verdict=verdict))
    if v16 and bn:
        if far_above_chance(bn) and at_chance(v16):
            verdict = "reproduced (categorical: at chance vs far above)"
        elif at_chance(bn):
            verdict = "**not reproduced** (categorical: VGG-16 with BN at chance too)"
        else:
            verdict = ""  # neither at chance nor far above: tested like the others
        rows.append(Row("VGG-16 with Batch Normalization dramatically outperforms standard VGG-16", "§8, 1",
                        PAPERS, f"VGG-16 with BN {spread(bn)} vs VGG-16 {spread(v16)}, {long} epochs",
                        welch(bn, v16), None if verdict else "greater", verdict=verdict))
    return rows


def judge(study: dict[tuple[str, int], Cell], short: int | None, long: int) -> list[dict]:
    """One row per claim the runs can speak to, in the paper's words, verdicts Holm-corrected
    over the tested rows."""
    def acc(model, epochs) -> list[float]:
        cell = study.get((model, epochs)) if epochs else None
        return cell.values("final_test_acc") if cell else []

    rows: list[Row] = []

    def pair(claim, where, a_model, b_model, epochs, want, threshold=0.0, reading=PAPERS):
        a, b = acc(a_model, epochs), acc(b_model, epochs)
        if epochs and a and b:
            rows.append(Row(claim, where, reading, f"{NAMES[a_model]} {spread(a)} vs {NAMES[b_model]} {spread(b)}, "
                            f"{epochs} epochs", welch(a, b), want, threshold,
                            order=seed_order(a, b, NAMES[a_model], NAMES[b_model])))

    rows += categorical_rows(acc("vgg16", long), acc("vgg16_bn", long), long)
    for other in ("alexnet", "vgg8"):
        pair("The final accuracy of VGG-16 with BN is significantly higher than AlexNet or VGG-8", "§6.2, 3",
             "vgg16_bn", other, long, "greater")
    pair("Despite having fewer parameters, VGG-8 outperforms AlexNet", "§8, 2; §6.3", "vgg8", "alexnet", long,
         "greater")
    pair("[VGG-8] eventually catches up to AlexNet's performance", "§6.1.4", "vgg8", "alexnet", long, "greater",
         -MATCH_MARGIN, f"{OURS}at most {MATCH_MARGIN:g} point below (the paper states no margin)")
    pair("VGG-16 with BN showing superior learning dynamics from the beginning", "§8, 4", "vgg16_bn", "alexnet",
         short, "greater", reading=f"{OURS}after the short run it beats AlexNet, the paper's next best there")
    pair("[VGG-8] shows slower initial learning (27.75% after 5 epochs) compared to AlexNet", "§6.1.4", "vgg8",
         "alexnet", short, "less")
    points = {m: per_point(study.get((m, long))) for m in ("alexnet", "vgg8")}
    if all(points.values()) and min(mean_sd(acc(m, long))[0] for m in points) > CHANCE + FAR_ABOVE:
        rows.append(Row("VGG-8 is the most parameter-efficient model, requiring only 148K parameters per percentage "
                        "point of accuracy", "§6.4", f"{OURS}fewer parameters per point than AlexNet, the paper's "
                        "next most efficient", f"VGG-8 {spread(points['vgg8'], '.0f')}K vs AlexNet "
                        f"{spread(points['alexnet'], '.0f')}K per point", welch(points["vgg8"], points["alexnet"]),
                        "less", spec="+.0f"))
    families = {ours: {i: p_value(r.gap, r.threshold) for i, r in enumerate(rows) if r.tested and r.ours == ours}
                for ours in (False, True)}
    adjusted = {**holm(families[False]), **holm(families[True])}
    out = []
    for i, row in enumerate(rows):
        if i in adjusted:
            family = len(families[row.ours])
            verdict, p = tested_verdict(row, adjusted[i], family), f"{fmt_p(adjusted[i])} ({family})"
        elif row.want is not None:
            verdict, p = "single seed, not decided", "-"
        else:
            verdict, p = row.verdict, "- (categorical)"
        out.append({"the paper's claim": f"\"{row.claim}\"", "where": row.where, "reading": row.reading,
                    "this rerun": row.evidence, "gap (first − second)": f"{row.gap.gap:{row.spec}}",
                    "95% interval": "- (categorical rule)" if row.want is None else interval(row.gap, row.spec),
                    "n": sizes(row.gap), "p (Holm, family size)": p, "verdict": verdict})
    return out


def per_point(cell: Cell | None) -> list[float]:
    """Parameters per point of test accuracy, thousands, per seed: from what each run logged."""
    if cell is None:
        return []
    return [float(r["params.num_parameters"]) / float(r["metrics.final_test_acc"]) / 1e3 for r in cell.runs
            if float(r.get("metrics.final_test_acc") or 0) > 0 and r.get("params.num_parameters") is not None
            and r.get("params.num_parameters") == r.get("params.num_parameters")]  # NaN != NaN


def epoch_columns(short: int | None, long: int) -> str:
    return f"{short} and {long}" if short else f"{long}"


def discussion(rows: list[dict], short: int | None, long: int, data: str) -> list[str]:
    """The claims section: the rule, the caveats that apply, the table of ``judge``'s ``rows``.
    ``data``: the data's name."""
    lines = [STATISTIC, ""]
    if (short, long) != paper.EPOCHS:
        lines.append(f"*These runs are {epoch_columns(short, long)} epochs, not the study's 5 and 40: the verdicts "
                     "below compare like with unlike and say little about the study's claims.*")
    if data != "official":
        lines.append(f"*Data: `{data}`, not the official CIFAR-10 archive. On the JPEG mirror expect "
                     "accuracies up to a couple of points lower than on official CIFAR-10.*")
    if rows:
        columns = list(rows[0])
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * 4 + "---:|" * 4 + "---|"]
        lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
        lines += ["", "Gap: the first network's mean minus the second's (points of test accuracy; thousands of "
                  "parameters per point in the last row); n: seeds per side; p: the two-sided Welch p-value against "
                  "the claim's threshold (0, or the margin of a reading marked ours), Holm-adjusted within its family "
                  "(the paper's readings, or ours), the family's size in brackets. Our reading of *catches up* allows "
                  f"VGG-8 to be up to {MATCH_MARGIN:g} point below AlexNet: "
                  f"decided only when the gap is shown to lie above −{MATCH_MARGIN:g}."]
    return lines
