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
        return f"{fmt_number(mean, spec)} (n=1)" if always_n else fmt_number(mean, spec)
    return f"{fmt_number(mean, spec)} ± {fmt_sd(sd, spec)} (n={n})"


def spread(values: list[float], spec: str = ".2f") -> str:
    """mean ± sd (a table's n column says how many seeds), or the single value; rounded half up."""
    mean, sd, _ = mean_sd(values)
    return fmt_number(mean, spec) if sd is None else f"{fmt_number(mean, spec)} ± {fmt_sd(sd, spec)}"


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


def one_sided_p(gap: Gap, want: str, threshold: float = 0.0) -> float | None:
    """Welch p-value of "mean(a) − mean(b) > threshold" (``want`` 'greater') or "< threshold"
    ('less') against the null on the boundary; None without a spread."""
    if gap.se is None:
        return None
    distance = gap.gap - threshold if want == "greater" else threshold - gap.gap
    if gap.se == 0:
        return 0.0 if distance > 0 else 1.0
    from scipy import stats

    return float(stats.t.sf(distance / gap.se, gap.df))


def p_for(gap: Gap, want: str, threshold: float) -> float | None:
    """The p-value of the test that shows the claim: one-sided in its direction, or for 'within'
    (an equivalence at margin ``threshold``) the two one-sided tests (TOST: the larger p)."""
    if want == "within":
        sides = (one_sided_p(gap, "greater", -threshold), one_sided_p(gap, "less", threshold))
        return None if None in sides else max(sides)
    return one_sided_p(gap, want, threshold)


def p_against(gap: Gap, want: str, threshold: float) -> float | None:
    """The p-value of the test that shows the claim's opposite: one-sided the other way, or for
    'within' the gap beyond the margin on either side (each side at half the level)."""
    if want == "within":
        sides = (one_sided_p(gap, "less", -threshold), one_sided_p(gap, "greater", threshold))
        return None if None in sides else min(1.0, 2 * min(sides))
    return one_sided_p(gap, "less" if want == "greater" else "greater", threshold)


def in_claim(gap: Gap, want: str, threshold: float) -> bool:
    """Whether the observed gap lies where the claim says."""
    if want == "within":
        return abs(gap.gap) < threshold
    return gap.gap > threshold if want == "greater" else gap.gap < threshold


def prediction(values: list[float], target: float, test_images: int, confidence: float = CONFIDENCE):
    """The paper's single run against the seeds: the interval for one new run of this recipe,
    mean ± t·sqrt(sd²(1 + 1/n) + q²), where q is the binomial sd of one run's accuracy on
    ``test_images`` images at the paper's value (that run's own test-set noise, known, so its df
    is infinite: Welch-Satterthwaite gives the rest); and the two-sided p of the paper's value.
    Returns (low, high, p, q) in points; None below two seeds."""
    mean, sd, n = mean_sd(values)
    if sd is None:
        return None
    share = min(max(target / 100, 0.0), 1.0)
    q = 100 * math.sqrt(share * (1 - share) / test_images)
    seeds = sd**2 * (1 + 1 / n)
    variance = seeds + q**2
    if variance == 0:
        return mean, mean, (1.0 if target == mean else 0.0), q
    from scipy import stats

    df = variance**2 / (seeds**2 / (n - 1)) if seeds > 0 else math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(variance)
    p = float(2 * stats.t.sf(abs(target - mean) / math.sqrt(variance), df))
    return mean - half, mean + half, p, q


def _welch_df(n: int, sd_a: float, sd_b: float | None) -> float:
    """Welch-Satterthwaite degrees of freedom at ``n`` seeds a side (one sample when ``sd_b`` is None)."""
    if sd_b is None:
        return n - 1
    va, vb = sd_a**2, sd_b**2
    return (n - 1) * (va + vb) ** 2 / (va**2 + vb**2) if va + vb > 0 else 2 * n - 2


def _power(n: int, effect: float, sd_a: float, sd_b: float | None, alpha: float, sides: int = 2) -> float:
    """Power of the Welch t test at ``n`` seeds a side (noncentral t at Welch's df): two-sided, or
    one-sided (``sides`` 1) in the direction of a positive ``effect``."""
    from scipy import stats

    df = _welch_df(n, sd_a, sd_b)
    ncp = effect / math.sqrt((sd_a**2 + (sd_b or 0.0) ** 2) / n)
    crit = float(stats.t.ppf(1 - alpha / sides, df))
    return float(stats.nct.sf(crit, df, ncp) + (stats.nct.cdf(-crit, df, ncp) if sides == 2 else 0.0))


def seeds_for_power(effect: float, sd_a: float, sd_b: float | None = None, power: float = POWER,
                    alpha: float = ALPHA, most: int = 10_000, sides: int = 2) -> int | None:
    """Seeds per side at which a Welch t test at ``alpha`` (two-sided, or one-sided with ``sides``
    1, in the effect's direction) detects a true difference of ``effect`` with spreads ``sd_a`` and
    ``sd_b`` (``sd_b`` None: one sample against a fixed value) with probability ``power``; None
    beyond ``most`` or for an effect of 0 or against a one-sided test. Equal sds make it Student's
    test: the textbook case, effect 0.5 sd at 5% two-sided and 80%, is 64 a side."""
    if effect == 0 or (sides == 1 and effect < 0):
        return None
    if sd_a <= 0 and not sd_b:
        return 2
    low, high = 2, 2
    while _power(high, abs(effect), sd_a, sd_b, alpha, sides) < power:
        if high >= most:
            return None
        low, high = high, min(high * 2, most)
    while low < high:  # the smallest n with enough power
        middle = (low + high) // 2
        if _power(middle, abs(effect), sd_a, sd_b, alpha, sides) >= power:
            high = middle
        else:
            low = middle + 1
    return high


def planning_seeds(effect: float, gap: Gap, alpha: float) -> tuple[int | None, int | None, int | None] | None:
    """Seeds a side for 80% power of the one-sided Welch test at ``alpha`` to show a true gap of
    ``effect`` (a stated target, in the claim's direction: positive), at the observed sds, and
    with each sd at its own 95% chi-square bounds (n − 1 df each: at two or three seeds an sd is
    itself uncertain), both at the low bound, then both at the high: (at the sds, low, high)."""
    sd_a, sd_b = gap.sd
    if sd_a is None or sd_b is None:
        return None
    from scipy import stats

    def bounds(sd, n):
        return sd * math.sqrt((n - 1) / float(stats.chi2.ppf(0.975, n - 1))), \
            sd * math.sqrt((n - 1) / float(stats.chi2.ppf(0.025, n - 1)))

    (a_low, a_high) = bounds(sd_a, gap.n[0])
    (b_low, b_high) = bounds(sd_b, gap.n[1]) if gap.n[1] else (None, None)
    return tuple(seeds_for_power(effect, a, b, alpha=alpha, sides=1)
                 for a, b in ((sd_a, sd_b if gap.n[1] else None), (a_low, b_low), (a_high, b_high)))


def round_half_up(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals, halves away from zero as the decimal number it prints as
    (80.975 -> 80.98, which binary rounding gives as 80.97)."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def fmt_number(value: float, spec: str = ".2f") -> str:
    """``format(value, spec)`` for a fixed-point spec ('.2f', '+.0f'), rounded half up."""
    digits = int(spec.rstrip("f").split(".")[-1])
    text = round_half_up(value, digits)
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return f"+{text}" if spec.startswith("+") and not text.startswith("-") else text


def fmt_sd(sd: float, spec: str = ".2f") -> str:
    """An sd at the spec's decimals, or with two significant digits where those would print a
    non-zero spread as 0."""
    text = fmt_number(sd, spec.lstrip("+"))
    if sd > 0 and float(text) == 0:
        text = f"{sd:.2g}" if "e" not in f"{sd:.2g}" else f"{sd:.1e}"
    return text


def fmt_p(p: float) -> str:
    """A p-value in three significant digits, more where rounding would hide which side of alpha it is."""
    text = f"{p:.3g}"
    return text if (float(text) < ALPHA) == (p < ALPHA) and float(text) != ALPHA else f"{p:.5f}"


def at_chance(values: list[float]) -> bool:
    return bool(values) and all(abs(v - CHANCE) <= AT_CHANCE_WITHIN for v in values)


def far_above_chance(values: list[float]) -> bool:
    return bool(values) and all(v >= CHANCE + FAR_ABOVE for v in values)
