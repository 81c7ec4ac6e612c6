"""The claims ledger: every claim of the paper the runs can speak to, quoted with its section
and judged first on the paper's own reading, with the statistics of study/analysis/stats.py on
the runs the report selected (study/analysis/selection.py). The claims themselves, as data:
study/analysis/ledger.py.

A tested claim is one or more comparisons of means over seeds (Welch). It is *reproduced* when
the test of the claim (one-sided in its direction; two one-sided tests at a stated margin for a
claim of similarity; every comparison of a claim that names several) rejects its negation after
Holm's correction over its family, *contradicted* when the test of its opposite does, and
otherwise *not supported* or *not decided* by where the observed gaps lie. The paper's readings
form one family, the project's own (marked *ours*, shown beside the paper's, never instead)
another; a test shared by two quotes counts once.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from study.analysis import paper
from study.analysis.ledger import CLAIMS, Claim, Evidence, Side, judged_elsewhere, per_point
from study.analysis.paper import NAMES
from study.analysis.stats import (
    ALPHA,
    CONFIDENCE,
    POWER,
    Gap,
    at_chance,
    fmt_number,
    fmt_p,
    holm,
    in_claim,
    mean_sd,
    p_against,
    p_for,
    planning_seeds,
    prediction,
    spread,
    welch,
)

PAPERS = "the paper's"
OURS = "ours: "
VERDICTS = {
    "reproduced": "the test of the claim rejects its negation at 5% after Holm's correction over its family "
                  "(a categorical claim: its rule holds on every seed)",
    "contradicted": "the test of the claim's opposite rejects at 5% after Holm's correction (a categorical "
                    "claim: its rule fails on every seed)",
    "not supported": "neither test decides, and the observed gap lies against the claim",
    "not decided": "neither test decides, and the observed gap lies where the claim says; or one seed a side "
                   "(no spread, no test); or the seeds disagree on a categorical rule",
}
COLUMNS = ["the paper's claim", "where", "reading", "this rerun", "gap", "95% interval", "n",
           "p for (Holm, family)", "p against (Holm, family)", "verdict"]


def interval(gap: Gap, spec: str = "+.2f") -> str:
    return "- (one seed)" if gap.low is None else f"[{fmt_number(gap.low, spec)}, {fmt_number(gap.high, spec)}]"


def sizes(gap: Gap) -> str:
    return f"{gap.n[0]} / {gap.n[1]}" if gap.n[1] else f"{gap.n[0]}"


@dataclass
class Tested:
    """One claim's comparisons on the runs: the gaps, and the two p-values before Holm."""

    claim: Claim
    gaps: list[Gap]
    p_for: float | None  # the largest over the comparisons (all must hold)
    p_against: float | None  # the smallest, Bonferroni over the comparisons (one failing suffices)

    @property
    def inside(self) -> bool:
        return all(in_claim(g, s.want, s.threshold) for g, s in zip(self.gaps, self.claim.sides, strict=True))

    @property
    def key(self) -> tuple:
        return self.claim.sides


def compare(claim: Claim) -> Tested | None:
    """The claim's comparisons, or None when a side has no runs."""
    if any(not a or not b for a, b in (side.values for side in claim.sides)):
        return None
    gaps = [welch(list(a), list(b)) for a, b in (side.values for side in claim.sides)]
    fors = [p_for(g, s.want, s.threshold) for g, s in zip(gaps, claim.sides, strict=True)]
    againsts = [p_against(g, s.want, s.threshold) for g, s in zip(gaps, claim.sides, strict=True)]
    if None in fors:
        return Tested(claim, gaps, None, None)
    return Tested(claim, gaps, max(fors), min(1.0, len(againsts) * min(againsts)))


def verdict_words(tested: Tested, p_yes: float, p_no: float, family: int) -> str:
    """The verdict, and why: the seeds' order, the confounding, the seeds a target would need."""
    if p_yes < ALPHA:
        words = ["reproduced"]
    elif p_no < ALPHA:
        words = ["**contradicted**"]
    else:
        words = ["not decided" if tested.inside else "**not supported**"]
        if not tested.inside:
            words.append("the observed gap lies against the claim")
    orders = [order for g, s in zip(tested.gaps, tested.claim.sides, strict=True) if (order := seed_order(s, g))]
    words += list(dict.fromkeys(orders))  # each once: the ranking names a pair at both epoch counts
    if p_yes >= ALPHA and (plan := planning_words(tested, family)):
        words.append(plan)
    if tested.claim.caveat:
        words.append(tested.claim.caveat)
    return "; ".join(words)


def seed_order(side: Side, gap: Gap) -> str:
    a, b = side.values
    if len(a) < 2 or len(b) < 2:
        return ""
    if max(a) < min(b):
        return f"every {NAMES[side.a]} seed is below every {NAMES[side.b]} seed"
    if min(a) > max(b):
        return f"every {NAMES[side.a]} seed is above every {NAMES[side.b]} seed"
    return ""


def planning_words(tested: Tested, family: int) -> str:
    """Seeds a side to show the paper's own gap in the claim's direction with 80% power at the
    family's Bonferroni level (what Holm needs at worst), for the comparison that holds the claim
    back (its largest p); said plainly where the paper's own numbers go against it."""
    claim = tested.claim
    fors = [p_for(g, s.want, s.threshold) for g, s in zip(tested.gaps, claim.sides, strict=True)]
    worst = max(range(len(fors)), key=lambda i: fors[i])
    gap, side = tested.gaps[worst], claim.sides[worst]
    target = side.paper_gap()
    if target is None or side.want == "within":
        return ""
    name = f"{NAMES[side.a]} − {NAMES[side.b]}"
    effect = target - side.threshold if side.want == "greater" else side.threshold - target
    if effect <= 0:
        return (f"the paper's own numbers go against it ({name}: {fmt_number(target, side.spec)}), so no number of "
                "seeds is planned to show it")
    seeds = planning_seeds(effect, gap, ALPHA / family)
    if seeds is None:
        return ""

    def n(value):
        return "more than 10,000" if value is None else f"{value}"

    at, low, high = seeds
    return (f"were the paper's own gap the truth ({name}: {fmt_number(target, side.spec)}), {POWER:.0%} power to "
            f"show it would take about {n(at)} seeds a side at the observed sds ({n(low)} to {n(high)} with each sd "
            f"at its {CONFIDENCE:.0%} chi-square bounds): a planning number, not a verdict on the gap seen here")


def categorical_row(claim: Claim, evidence: Evidence) -> dict | None:
    outcome = claim.rule(evidence)
    if outcome is None:
        return None
    verdict, shown, n = outcome
    return {"the paper's claim": f"\"{claim.quote}\"", "where": claim.where, "reading": claim.reading,
            "this rerun": shown, "gap": "-", "95% interval": "- (categorical rule)", "n": n,
            "p for (Holm, family)": "- (categorical)", "p against (Holm, family)": "- (categorical)",
            "verdict": verdict}


def judge(evidence: Evidence) -> list[dict]:
    """One row per claim the runs speak to, in the ledger's order; verdicts Holm-corrected within
    the paper's family and within ours, each test counted once."""
    rows: list[dict | Tested] = []
    for claim in CLAIMS:
        row = categorical_row(claim, evidence) if claim.rule else None
        if row is None and claim.sides:
            claim = claim.bound(evidence)
            row = compare(claim)
        if row is not None:
            rows.append(row)
    tested = [r for r in rows if isinstance(r, Tested) and r.p_for is not None]
    adjusted = {}
    for ours in (False, True):
        family = {r.key: r for r in tested if r.claim.reading.startswith(OURS) == ours}
        adjusted[ours] = (holm({k: r.p_for for k, r in family.items()}),
                          holm({k: r.p_against for k, r in family.items()}), len(family))
    return [row if isinstance(row, dict) else tested_row(row, adjusted) for row in rows]


def tested_row(tested: Tested, adjusted: dict) -> dict:
    claim = tested.claim
    mixed = len({s.epochs for s in claim.sides}) > 1 or any(s.epochs[0] != s.epochs[1] for s in claim.sides)

    def label(s: Side) -> str:
        when = "" if not mixed else f" ({s.epochs[0]} ep)" if s.epochs[0] == s.epochs[1] else \
            f" ({s.epochs[0]} ep − {s.epochs[1]} ep)"
        return f"{NAMES[s.a]} − {NAMES[s.b]}{when}"

    shown = "; ".join(f"{label(s)}: {fmt_number(g.gap, s.spec)}" for s, g in zip(claim.sides, tested.gaps, strict=True))
    base = {"the paper's claim": f"\"{claim.quote}\"", "where": claim.where, "reading": claim.reading,
            "this rerun": claim.evidence_text(), "gap": shown,
            "95% interval": "; ".join(interval(g, s.spec) for s, g in zip(claim.sides, tested.gaps, strict=True)),
            "n": "; ".join(sizes(g) for g in tested.gaps)}
    if tested.p_for is None:
        return {**base, "p for (Holm, family)": "-", "p against (Holm, family)": "-",
                "verdict": "not decided (one seed a side: no spread, no test)"}
    yes, no, size = adjusted[claim.reading.startswith(OURS)]
    p_yes, p_no = yes[tested.key], no[tested.key]
    return {**base, "p for (Holm, family)": f"{fmt_p(p_yes)} ({size})", "p against (Holm, family)":
            f"{fmt_p(p_no)} ({size})", "verdict": verdict_words(tested, p_yes, p_no, size)}


def counts(rows: list[dict]) -> dict[str, Counter]:
    """Verdicts per reading: {"the paper's": Counter, "ours": Counter}."""
    tally: dict[str, Counter] = {PAPERS: Counter(), "ours": Counter()}
    for row in rows:
        word = next((w for w in VERDICTS if row["verdict"].strip("*").startswith(w)), "not decided")
        tally["ours" if row["reading"].startswith(OURS) else PAPERS][word] += 1
    return tally


def count_line(rows: list[dict]) -> str:
    tally = counts(rows)
    papers = tally[PAPERS]
    line = (f"On the paper's own readings, {sum(papers.values())} claims: "
            + ", ".join(f"{papers[w]} {w}" for w in VERDICTS) + ".")
    if tally["ours"]:
        line += " Beside them, ours: " + ", ".join(f"{tally['ours'][w]} {w}" for w in VERDICTS if tally['ours'][w]) \
            + "."
    return line


ABSOLUTE_COLUMNS = ["model", "epochs", "paper", "this rerun", "n", "95% interval for one run", "test-set sd",
                    "seeds' commits", "p (Holm, family)", "verdict"]


def absolute_rows(evidence: Evidence, commits: dict[tuple[str, int], str] | None = None) -> list[dict]:
    """Table 5's numbers judged cell by cell: the paper's single run against the interval for one
    new run of this recipe (seed spread and that run's test-set noise); a cell the paper and the
    rerun both have at chance by the categorical rule. The tested cells form one Holm family."""
    rows, tested = [], {}
    for model in paper.PAPER_MODELS:
        for index, which in enumerate(("short", "long")):
            epochs, values = evidence.epochs(which), evidence.values(model, which, "acc")
            if not epochs or not values or epochs != paper.EPOCHS[index]:  # the paper's cell is at its own count
                continue
            theirs = paper.ACCURACY[model][index]
            mean, sd, n = mean_sd(values)
            q = 100 * math.sqrt(theirs / 100 * (1 - theirs / 100) / evidence.test_images)  # the paper's run's
            row = {"model": NAMES[model], "epochs": epochs, "paper": fmt_number(theirs), "this rerun": spread(values),
                   "n": n, "95% interval for one run": "- (one seed)", "test-set sd": f"{fmt_number(q)}",
                   "seeds' commits": (commits or {}).get((model, epochs), ""), "p (Holm, family)": "-",
                   "verdict": "not decided (one seed: no spread, no test)"}
            if at_chance(values) and at_chance([theirs]):
                row.update({"95% interval for one run": "- (categorical rule)", "p (Holm, family)": "- (categorical)",
                            "verdict": "reproduced (categorical: every seed at chance, as the paper's run)"})
            elif (found := prediction(values, theirs, evidence.test_images)) is not None:
                low, high, p, _ = found
                row["95% interval for one run"] = f"[{fmt_number(max(low, 0.0))}, {fmt_number(min(high, 100.0))}]"
                tested[len(rows)] = (p, theirs < mean)
            rows.append(row)
    for i, p in holm({i: p for i, (p, _) in tested.items()}).items():
        lower = tested[i][1]
        rows[i]["p (Holm, family)"] = f"{fmt_p(p)} ({len(tested)})"
        rows[i]["verdict"] = (f"**contradicted** (the rerun is {'higher' if lower else 'lower'})" if p < ALPHA else
                              "not decided (the paper's value lies inside the interval)")
    return rows


def epoch_columns(short: int | None, long: int) -> str:
    return f"{short} and {long}" if short else f"{long}"


__all__ = ["COLUMNS", "CLAIMS", "Evidence", "VERDICTS", "count_line", "counts", "epoch_columns", "judge",
           "judged_elsewhere", "per_point", "spread"]
