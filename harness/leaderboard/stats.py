"""Intervals, shared ranks and the digits a number is printed with.

Interval of a cell (a method variant's k distinct seeds with values x_i and evaluation standard errors s_i, the
errors from the evaluation's own sampling recorded with each metric value):

    k = 1:  x_1 ± z_{0.975} · s_1                                   (z = 1.96; no interval when s_1 is unknown)
    k ≥ 2:  x̄ ± t_{0.975, k−1} · sqrt( max(v_seeds, mean_i s_i²) / k )

where v_seeds is the sample variance over seeds. The spread over seeds already contains the evaluation noise, so
the two are not added (that would count it twice); the evaluation variance is a floor under v_seeds, which with few
seeds can come out near zero by chance. Unknown s_i (older records) are left out of the mean; with none known the
interval is the plain t-interval over seeds.

Ranks: every value is an interval [lo, hi] (a value without uncertainty is its 3-significant-digit rounding
interval, so it ties only with values equal to 3 digits). Row i is certainly behind row j when j's interval lies
entirely on the better side of i's. Its rank is the range 1 + #(rows certainly ahead) … #rows − #(rows certainly
behind), printed "2–4" when the range is wider than one place: overlapping intervals share a rank.

Digits: a value with a half-width h is printed to the decimal place of h's second significant digit (0.0311 ±
0.0043, 1230 ± 120); a value without uncertainty with 3 significant digits. A bound is rounded away from the value it
bounds ("> 1220" for an IACT of at least 1228.4) so that it stays a bound.
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95
POINT_DIGITS = 3  # significant digits of a value without uncertainty
HALF_DIGITS = 2  # significant digits of a half-width


def _t(df: int, confidence: float = CONFIDENCE) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def _z(confidence: float = CONFIDENCE) -> float:
    from scipy import stats

    return float(stats.norm.ppf(0.5 + confidence / 2))


def mean_ci(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, half-width of the t confidence interval, sample sd, n) of the finite values; the half-width is
    t_{(1+c)/2, n−1} · s / √n (NaN for n < 2)."""
    x = [v for v in values if math.isfinite(v)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = math.fsum(x) / n
    if n < 2:
        return mean, math.nan, math.nan, 1
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (n - 1))
    return mean, _t(n - 1, confidence) * sd / math.sqrt(n), sd, n


def combined_interval(values: list[float], stderrs: list[float],
                      confidence: float = CONFIDENCE) -> tuple[float, float, float, int, float]:
    """(mean, half-width, sd over seeds, k, rms evaluation stderr) by the formula in the module docstring."""
    pairs = [(v, s) for v, s in zip(values, stderrs, strict=True) if math.isfinite(v)]
    k = len(pairs)
    known = [s * s for _, s in pairs if math.isfinite(s) and s >= 0]
    ev = math.fsum(known) / len(known) if known else math.nan
    rms = math.sqrt(ev) if known else math.nan
    if k == 0:
        return math.nan, math.nan, math.nan, 0, math.nan
    mean = math.fsum(v for v, _ in pairs) / k
    if k == 1:
        return mean, _z(confidence) * rms if known else math.nan, math.nan, 1, rms
    var = math.fsum((v - mean) ** 2 for v, _ in pairs) / (k - 1)
    spread = max(var, ev) if known else var
    return mean, _t(k - 1, confidence) * math.sqrt(spread / k), math.sqrt(var), k, rms


def ranks(means: list[float], higher_is_better: bool | None) -> list[int | None]:
    """Competition ranks ("1224") of the finite means in the metric's direction; None for missing values."""
    sign = -1.0 if higher_is_better else 1.0
    finite = sorted(sign * m for m in means if math.isfinite(m))
    return [finite.index(sign * m) + 1 if math.isfinite(m) else None for m in means]


def point_halfwidth(v: float, digits: int = POINT_DIGITS) -> float:
    """Half a unit in the last of `digits` significant digits of v: the rounding interval of a printed value."""
    if not math.isfinite(v) or v == 0:
        return 0.0
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(v))) - digits + 1)


def rank_ranges(intervals: list[tuple[float, float] | None],
                higher_is_better: bool | None) -> list[tuple[int, int] | None]:
    """(best, worst) place of each interval (None: unranked); see the module docstring."""
    live = [iv for iv in intervals if iv is not None]
    out = []
    for iv in intervals:
        if iv is None:
            out.append(None)
            continue
        lo, hi = iv
        if higher_is_better:
            ahead = sum(o[0] > hi for o in live)
            behind = sum(o[1] < lo for o in live)
        else:
            ahead = sum(o[1] < lo for o in live)
            behind = sum(o[0] > hi for o in live)
        out.append((1 + ahead, len(live) - behind))
    return out


def rank_text(rank: tuple[int, int] | None) -> str:
    if rank is None:
        return "—"
    return str(rank[0]) if rank[0] == rank[1] else f"{rank[0]}–{rank[1]}"


def _fixed(v: float, decimals: int) -> str:
    if decimals <= 0:
        q = 10 ** (-decimals)
        return str(int(round(v / q)) * q)
    s = f"{v:.{decimals}f}"
    return "0" + s[2:] if s.startswith("-0") and float(s) == 0 else s


def _lead(v: float) -> int:
    return math.floor(math.log10(abs(v))) if v else 0


def fmt_sig(v: float, digits: int = POINT_DIGITS, direction: str = "") -> str:
    """v to `digits` significant digits, in fixed notation between 1e-4 and 1e7; direction "down"/"up" rounds
    towards −∞/+∞ (for bounds)."""
    if not math.isfinite(v):
        return ""
    if v == 0:
        return "0"
    lead = _lead(v)
    decimals = digits - 1 - lead
    scale = 10.0 ** decimals
    r = {"down": math.floor, "up": math.ceil}.get(direction, round)(v * scale) / scale
    if not -4 <= lead < 7:
        return f"{r:.{digits - 1}e}"
    return _fixed(r, decimals)


def fmt_interval(mean: float, half: float) -> str:
    """'mean ± half' to the decimal place of half's second significant digit."""
    if half == 0:
        return f"{fmt_sig(mean)} ± 0"
    decimals = HALF_DIGITS - 1 - _lead(half)
    if decimals > 8 or _lead(half) > 7:
        return f"{mean:.{max(HALF_DIGITS - 1 + _lead(mean) - _lead(half), 0)}e} ± {half:.{HALF_DIGITS - 1}e}"
    scale = 10.0 ** decimals
    return f"{_fixed(round(mean * scale) / scale, decimals)} ± {_fixed(round(half * scale) / scale, decimals)}"
