"""The statistics behind the report's verdicts, with scipy: the Welch t interval and p-value of
a difference of means, Holm's correction for a family of comparisons, and how many seeds a
side a test would need for 80% power.

A claim is decided when its test rejects "no difference from the threshold" at 5% after
Holm's correction over its family (the report's tested claims; the JPEG steps); the 95%
interval beside it is the uncorrected one. A categorical claim (a network at chance against
one far above it) is judged by its stated rule at any n, outside the family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05  # 1 - CONFIDENCE, written out: 1 - 0.95 is 0.050000000000000044
POWER = 0.8  # the power a "seeds a side" estimate is for
CHANCE = 10.0  # % test accuracy of a constant guess on CIFAR-10's balanced test set
AT_CHANCE_WITHIN = 1.0  # points: a network this close to chance on every seed has not learned
FAR_ABOVE = 20.0  # points above chance on every seed: a network that has learned, whatever the seed


def mean_sd(values: list[float]) -> tuple[float, float | None, int]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd, n


def fmt_stat(values: list[float], spec: str = ".2f", always_n: bool = False) -> str:
    """One seed: the number (with (n=1) when ``always_n``); several: mean ± sd (n=…)."""
    if not values:
        return "-"
    mean, sd, n = mean_sd(values)
    if sd is None:
        return f"{mean:{spec}} (n=1)" if always_n else format(mean, spec)
    return f"{mean:{spec}} ± {sd:{spec}} (n={n})"


@dataclass(frozen=True)
class Gap:
    """mean(a) − mean(b) with its Welch t interval; ``low``/``high`` are None when a side has
    one seed (no spread to estimate). ``b`` may be a fixed value (then ``n[1]`` is None)."""

    gap: float
    low: float | None
    high: float | None
    df: float | None
    n: tuple[int, int | None]
    sd: tuple[float | None, float | None]
    se: float | None = None  # the standard error of the gap


def welch(a: list[float], b: list[float] | float, confidence: float = CONFIDENCE) -> Gap:
    """The difference of means and its interval with the t quantile at the Welch-Satterthwaite
    degrees of freedom: honest at two or three seeds a side, where 2 SE covers far less than 95%."""
    mean_a, sd_a, n_a = mean_sd(a)
    mean_b, sd_b, n_b = (float(b), 0.0, None) if isinstance(b, (int, float)) else mean_sd(b)
    gap = mean_a - mean_b
    if sd_a is None or sd_b is None:
        return Gap(gap, None, None, None, (n_a, n_b), (sd_a, sd_b))
    terms = [(sd_a**2 / n_a, n_a - 1)] + ([(sd_b**2 / n_b, n_b - 1)] if n_b else [])
    variance = sum(v for v, _ in terms)
    if variance == 0:  # every seed identical on both sides (a network stuck at one guess): no spread
        return Gap(gap, gap, gap, None, (n_a, n_b), (sd_a, sd_b), 0.0)
    df = variance**2 / sum(v**2 / d for v, d in terms)
    from scipy import stats  # here: at one seed there is no interval, and scipy.stats is slow to import

    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(variance)
    return Gap(gap, gap - half, gap + half, df, (n_a, n_b), (sd_a, sd_b), math.sqrt(variance))


def p_value(gap: Gap, threshold: float = 0.0) -> float | None:
    """Two-sided Welch p-value of "mean(a) − mean(b) = threshold"; None without a spread."""
    if gap.se is None:
        return None
    if gap.se == 0:
        return 1.0 if gap.gap == threshold else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(gap.gap - threshold) / gap.se, gap.df))


def holm(p_values: dict) -> dict:
    """Holm's step-down adjusted p-values for one family ({key: p}): reject where adjusted < alpha.
    Controls the chance of any false "decided" in the family at alpha, whatever their dependence."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[key] = running
    return adjusted


def decide(gap: Gap, want: str, threshold: float = 0.0, p_adjusted: float | None = None) -> str:
    """'reproduced', 'not reproduced' or 'not decided' for the claim mean(a) − mean(b) > threshold
    (``want`` 'greater') or < threshold ('less'). Without ``p_adjusted``: decided when the whole 95%
    interval lies on one side; with it (Holm's, over the family): when it is below alpha."""
    if gap.low is None:
        return "not decided"
    if p_adjusted is not None:
        if p_adjusted >= ALPHA or gap.gap == threshold:
            return "not decided"
        above = gap.gap > threshold
    else:
        above, below = gap.low > threshold, gap.high < threshold
        if not (above or below):
            return "not decided"
    return "reproduced" if (above if want == "greater" else not above) else "not reproduced"


def _welch_df(n: int, sd_a: float, sd_b: float | None) -> float:
    """Welch-Satterthwaite degrees of freedom at ``n`` seeds a side (one sample when ``sd_b`` is None)."""
    if sd_b is None:
        return n - 1
    va, vb = sd_a**2, sd_b**2
    return (n - 1) * (va + vb) ** 2 / (va**2 + vb**2) if va + vb > 0 else 2 * n - 2


def _power(n: int, effect: float, sd_a: float, sd_b: float | None, alpha: float) -> float:
    """Power of the two-sided Welch t test at ``n`` seeds a side (noncentral t at Welch's df)."""
    from scipy import stats

    df = _welch_df(n, sd_a, sd_b)
    ncp = effect / math.sqrt((sd_a**2 + (sd_b or 0.0) ** 2) / n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_for_power(effect: float, sd_a: float, sd_b: float | None = None, power: float = POWER,
                    alpha: float = ALPHA, most: int = 10_000) -> int | None:
    """Seeds per side at which a two-sided Welch t test at ``alpha`` detects a true difference of
    ``effect`` with spreads ``sd_a`` and ``sd_b`` (``sd_b`` None: one sample against a fixed value)
    with probability ``power``; None beyond ``most``. Equal sds make it Student's test: the
    textbook case, effect 0.5 sd at 5% and 80%, is 64 a side."""
    if sd_a <= 0 and not sd_b:
        return 2
    if effect == 0:
        return None
    low, high = 2, 2
    while _power(high, abs(effect), sd_a, sd_b, alpha) < power:
        if high >= most:
            return None
        low, high = high, min(high * 2, most)
    while low < high:  # the smallest n with enough power
        middle = (low + high) // 2
        if _power(middle, abs(effect), sd_a, sd_b, alpha) >= power:
            high = middle
        else:
            low = middle + 1
    return high


def power_estimate(gap: Gap, threshold: float = 0.0, family: int = 1) -> tuple[int | None, ...] | None:
    """Seeds a side for 80% power of the Welch test at the observed gap (to ``threshold``) and
    spreads, at the Bonferroni alpha of its family (alpha / ``family``: what Holm needs at worst),
    and the same with both sds at the ends of their 95% chi-square interval (on Welch's degrees of
    freedom: at two or three seeds the sd itself is uncertain): (at the sds, at the low end, at the
    high end); None without a spread."""
    sd_a, sd_b = gap.sd
    if sd_a is None or sd_b is None:
        return None
    from scipy import stats

    two_sample = gap.n[1] is not None
    df = gap.df or (gap.n[0] + (gap.n[1] or 0) - (2 if two_sample else 1))
    low = math.sqrt(df / float(stats.chi2.ppf(0.975, df)))
    high = math.sqrt(df / float(stats.chi2.ppf(0.025, df)))
    effect, alpha = gap.gap - threshold, ALPHA / family
    return tuple(seeds_for_power(effect, sd_a * k, sd_b * k if two_sample else None, alpha=alpha)
                 for k in (1.0, low, high))


def fmt_p(p: float) -> str:
    """A p-value in three significant digits, more where rounding would hide which side of alpha it is."""
    text = f"{p:.3g}"
    return text if (float(text) < ALPHA) == (p < ALPHA) and float(text) != ALPHA else f"{p:.5f}"


def at_chance(values: list[float]) -> bool:
    return bool(values) and all(abs(v - CHANCE) <= AT_CHANCE_WITHIN for v in values)


def far_above_chance(values: list[float]) -> bool:
    return bool(values) and all(v >= CHANCE + FAR_ABOVE for v in values)
