"""Paired statistics over seeds *and* items: the estimator behind every verdict of `llm-rl compare`.

Why not intervals over seeds alone? Every arm of a comparison trains from the same warm start with the same
seeds and is scored on the same held-out rows, so the natural unit is one (seed, item) cell: arm A's score on item
``i`` after training with seed ``s``, against arm B's on the same item with the same seed. Averaging each run over
its items first and comparing the per-seed means with a Welch interval (what the report did before) throws away
the pairing by item and cannot say whether an interval is wide because training is noisy or because the
evaluation set is small. A reviewer asks both (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"; Hochlehnert et al. 2025, "A Sober Look at Progress in LM Reasoning", arXiv 2504.07086).

The model (a crossed random-effects design, seeds x items)::

    d[s, i] = delta + a_s + b_i + e_si       a_s ~ (0, var_seed), b_i ~ (0, var_item), e_si ~ (0, var_resid)

where ``d`` is a per-cell score (one arm) or a paired difference (two arms, or an arm minus the start), ``a_s`` is
what a training seed does to every item, ``b_i`` how much harder or easier an item is for that arm, and ``e_si`` the
rest (with greedy decoding, the seed x item interaction). The population mean ``delta`` is estimated by the grand
mean; its variance is ``var_seed / S + var_item / N + var_resid / (S N)``. The components are the method-of-moments
(two-way ANOVA) estimates, truncated at zero; the interval is Student-t with Satterthwaite's degrees of freedom.
This is an analytic alternative to a two-way ("pigeonhole") bootstrap: with the 3-5 seeds a CPU experiment can
afford, resampling seeds cannot produce a t quantile with few degrees of freedom and undercovers; the analytic
form does not (``tests/test_stats_paired.py`` checks the coverage by simulation at 3 and 5 seeds). The decomposition
also answers "is this interval dominated by training variance or by the size of the evaluation set?":
``seed_share`` is the part of the variance that more seeds would shrink, ``item_share`` the part more items would.

Also here: :func:`linear_contrast` (the slope of per-length estimates against length, for "the gap grows with
length"), :func:`holm` (several contrasts reported together), the minimum detectable difference of a design
(:attr:`CrossedEstimate.mde`), and the design's planning questions answered from the measured components:
:meth:`CrossedEstimate.half_width_at` (the interval half-width another number of seeds or items would give) and
:meth:`CrossedEstimate.seeds_for` (the fewest seeds that bring it under a target), and
:func:`interpolate_items` (an arm's per-item results at a spend between two evaluations, for comparisons at equal
spend on another budget axis). Quantiles come from SciPy; the moment estimates are a few lines of NumPy (SciPy and
statsmodels have no crossed two-way random-effects estimator for a complete S x N table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "ContrastEstimate",
    "CrossedEstimate",
    "crossed_mean",
    "holm",
    "interpolate_items",
    "interval_direction",
    "linear_contrast",
    "paired_difference",
]


@dataclass(frozen=True)
class CrossedEstimate:
    """A mean over a seeds x items table with its interval and where its uncertainty comes from.

    Attributes:
      estimate: the grand mean (a pass rate, or a paired difference of pass rates).
      low, high: the two-sided interval (nan when no variance component can be estimated).
      se: the standard error of ``estimate``.
      df: Satterthwaite's degrees of freedom of the t-interval (inf when only items vary with many of them).
      p_value: two-sided p-value of "the population mean is 0" (meaningful for differences).
      mde: the minimum detectable difference of this design: the smallest true effect a two-sided test at
        ``1 - confidence`` detects with probability ``power`` (``(t_{1-alpha/2} + t_{power}) * se``).
      num_seeds, num_items: the table's shape (S, N).
      var_seed, var_item, var_resid: the variance components (truncated at 0).
      seed_share, item_share: the fractions of the estimate's variance that come from seeds (``var_seed / S`` and
        the interaction ``var_resid / (S N)``: training randomness) and from items (``var_item / N``: the size of
        the evaluation set). They sum to 1 (both nan when the variance is 0).
      confidence, power: as requested.
    """

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    mde: float
    num_seeds: int
    num_items: int
    var_seed: float
    var_item: float
    var_resid: float
    seed_share: float
    item_share: float
    confidence: float = 0.95
    power: float = 0.8

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0 (False when it is undefined)."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def half_width_at(self, seeds: int, items: int | None = None) -> float:
        """The interval half-width this design would have with ``seeds`` seeds and ``items`` items (default: as
        measured), if the variance components stayed as estimated. Satterthwaite's df is taken from the mean
        squares those components imply at the new shape."""
        from scipy import stats

        s, n = int(seeds), int(items if items is not None else self.num_items)
        if s < 1 or n < 1:
            raise ValueError(f"need seeds >= 1 and items >= 1, got {s}, {n}")
        variance = self.var_seed / s + self.var_item / n + self.var_resid / (s * n)
        if variance == 0.0:
            return 0.0
        # expected mean squares at (s, n) and the terms of Var(mean) = sum c_k MS_k, as in crossed_mean
        ms_resid = self.var_resid
        terms = [(1.0 / (s * n), n * self.var_seed + ms_resid, s - 1) if self.var_seed > 0 else None,
                 (1.0 / (s * n), s * self.var_item + ms_resid, n - 1) if self.var_item > 0 else None]  # fmt: skip
        c_resid = (1.0 - sum(t is not None for t in terms)) / (s * n)
        parts = [t for t in terms if t is not None] + [(c_resid, ms_resid, (s - 1) * (n - 1))]
        denom = sum((c * m) ** 2 / d for c, m, d in parts if d > 0)
        df = variance**2 / denom if denom > 0 else math.inf
        if not df > 0:
            return math.nan
        alpha = 1.0 - self.confidence
        q = float(stats.norm.ppf(1 - alpha / 2) if math.isinf(df) else stats.t.ppf(1 - alpha / 2, df))
        return q * math.sqrt(variance)

    def seeds_for(self, half_width: float, *, items: int | None = None, max_seeds: int = 1000) -> int | None:
        """The fewest seeds (>= 2) whose interval half-width would be <= ``half_width`` at ``items`` items
        (default: as measured); None when even ``max_seeds`` seeds would not do (the item part alone is too big:
        more items are needed) or the components are undefined."""
        if not half_width > 0 or any(math.isnan(v) for v in (self.var_seed, self.var_item, self.var_resid)):
            return None
        for s in range(2, max_seeds + 1):
            hw = self.half_width_at(s, items)
            if math.isfinite(hw) and hw <= half_width:
                return s
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def _table(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:  # one seed
        x = x[None, :]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"expected a [seeds, items] table, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the table holds nan or inf: every (seed, item) cell needs a finite score")
    return x


def _t_interval(
    estimate: float, se: float, df: float, *, confidence: float, power: float
) -> tuple[float, float, float, float]:
    """``(low, high, p_value, mde)`` of a t-interval (normal when ``df`` is inf)."""
    from scipy import stats

    if not math.isfinite(se) or se < 0 or not df > 0:
        return math.nan, math.nan, math.nan, math.nan
    alpha = 1.0 - confidence
    dist = stats.norm if math.isinf(df) else stats.t(df)
    q = float(dist.ppf(1.0 - alpha / 2.0))
    mde = (q + float(dist.ppf(power))) * se
    if se == 0.0:
        p = 1.0 if estimate == 0.0 else 0.0
        return estimate, estimate, p, 0.0
    p = float(2.0 * dist.sf(abs(estimate) / se))
    return estimate - q * se, estimate + q * se, p, mde


def crossed_mean(values: Any, *, confidence: float = 0.95, power: float = 0.8) -> CrossedEstimate:
    """The mean of a ``[S, N]`` table (seeds x items) with the crossed random-effects interval (module doc).

    A 1-D input is one seed. With one seed the seed component cannot be estimated: the interval then covers item
    sampling only (``var_seed`` is 0, ``df`` is N - 1) — report it as such. With one item, likewise for items.
    """
    x = _table(values)
    s, n = x.shape
    grand = float(x.mean())
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    ms_seed = n * float(((rows - grand) ** 2).sum()) / (s - 1) if s > 1 else math.nan
    ms_item = s * float(((cols - grand) ** 2).sum()) / (n - 1) if n > 1 else math.nan
    if s > 1 and n > 1:
        resid = x - rows[:, None] - cols[None, :] + grand
        ms_resid = float((resid**2).sum()) / ((s - 1) * (n - 1))
    else:  # one seed or one item: the interaction is confounded with the other factor
        ms_resid = 0.0
    var_seed = max(0.0, (ms_seed - ms_resid) / n) if s > 1 else 0.0
    var_item = max(0.0, (ms_item - ms_resid) / s) if n > 1 else 0.0
    var_resid = ms_resid
    # Var(mean) as a combination sum_k c_k MS_k of mean squares (for Satterthwaite's df); a truncated component
    # drops its mean square and leaves the residual's coefficient to carry the rest.
    terms: list[tuple[float, float, float]] = []  # (coefficient, mean square, its df)
    c_resid = 1.0 / (s * n)
    if var_seed > 0:
        terms.append((1.0 / (s * n), ms_seed, s - 1))
        c_resid -= 1.0 / (s * n)
    if var_item > 0:
        terms.append((1.0 / (s * n), ms_item, n - 1))
        c_resid -= 1.0 / (s * n)
    if s > 1 and n > 1:
        terms.append((c_resid, ms_resid, (s - 1) * (n - 1)))
    variance = var_seed / s + var_item / n + var_resid / (s * n)
    se = math.sqrt(variance)
    denom = sum((c * m) ** 2 / d for c, m, d in terms if d > 0)
    if s == 1 and n == 1:
        df = math.nan
    elif denom > 0:
        df = variance**2 / denom
    else:
        df = math.inf if variance == 0 else math.nan
    low, high, p, mde = _t_interval(grand, se, df, confidence=confidence, power=power)
    training = var_seed / s + var_resid / (s * n)
    seed_share = training / variance if variance > 0 else math.nan
    item_share = (var_item / n) / variance if variance > 0 else math.nan
    return CrossedEstimate(
        estimate=grand,
        low=low,
        high=high,
        se=se,
        df=df,
        p_value=p,
        mde=mde,
        num_seeds=s,
        num_items=n,
        var_seed=var_seed,
        var_item=var_item,
        var_resid=var_resid,
        seed_share=seed_share,
        item_share=item_share,
        confidence=confidence,
        power=power,
    )


def paired_difference(a: Any, b: Any, *, confidence: float = 0.95, power: float = 0.8) -> CrossedEstimate:
    """``mean(a - b)`` paired by seed and item: ``a`` and ``b`` are ``[S, N]`` tables of the same arms' scores
    on the same items with the same seeds; ``b`` may be ``[N]`` (e.g. the warm start, one checkpoint for every
    seed), which is subtracted from every seed's row."""
    xa = _table(a)
    xb = np.asarray(b, dtype=float)
    if xb.ndim == 1 and xa.shape[1] == xb.shape[0] and xa.shape[0] > 1:
        xb = np.broadcast_to(xb, xa.shape)
    xb = _table(xb)
    if xa.shape != xb.shape:
        raise ValueError(
            f"paired tables differ in shape: {xa.shape} vs {xb.shape} (seeds x items must match)"
        )
    return crossed_mean(xa - xb, confidence=confidence, power=power)


def interval_direction(low: float, high: float) -> str:
    """ "increasing" / "decreasing" when ``[low, high]`` excludes 0, "flat" otherwise, "unknown" if undefined."""
    if math.isnan(low) or math.isnan(high):
        return "unknown"
    if low > 0:
        return "increasing"
    if high < 0:
        return "decreasing"
    return "flat"


@dataclass(frozen=True)
class ContrastEstimate:
    """A linear combination of independent estimates (e.g. a slope over lengths) with its t-interval."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    confidence: float = 0.95

    @property
    def direction(self) -> str:
        """ "increasing" / "decreasing" when the interval excludes 0, "flat" otherwise ("unknown" if undefined)."""
        return interval_direction(self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def linear_contrast(
    estimates: Sequence[CrossedEstimate], xs: Sequence[float], *, confidence: float = 0.95
) -> ContrastEstimate:
    """The least-squares slope of ``estimates`` against ``xs`` (e.g. the paired gap to GRPO against task length),
    with ``Var(slope) = sum_L w_L^2 se_L^2`` over independent estimates (each length has its own runs and rows)
    and Satterthwaite's df. Needs at least two distinct ``xs``."""
    if len(estimates) != len(xs):
        raise ValueError(f"{len(estimates)} estimates but {len(xs)} x values")
    x = np.asarray(xs, dtype=float)
    if len(set(x.tolist())) < 2:
        return ContrastEstimate(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, confidence)
    w = (x - x.mean()) / float(((x - x.mean()) ** 2).sum())
    slope = float(sum(wi * e.estimate for wi, e in zip(w, estimates)))
    parts = [(wi * e.se) ** 2 for wi, e in zip(w, estimates)]
    variance = float(sum(parts))
    denom = sum(p**2 / e.df for p, e in zip(parts, estimates) if p > 0 and e.df > 0 and math.isfinite(e.df))
    df = variance**2 / denom if denom > 0 else (math.inf if variance >= 0 else math.nan)
    low, high, p, _ = _t_interval(slope, math.sqrt(variance), df, confidence=confidence, power=0.8)
    return ContrastEstimate(slope, low, high, math.sqrt(variance), df, p, confidence)


def interpolate_items(xs: Sequence[float], items: Sequence[Sequence[float]], x: float) -> np.ndarray:
    """Per-item results at spend ``x``, linearly interpolated between the evaluations at ``xs`` (increasing) with
    per-item results ``items[i]``; the mean of the result is the interpolated pass rate. ``x`` must lie within
    ``[xs[0], xs[-1]]`` (no extrapolation)."""
    x_arr = np.asarray(xs, dtype=float)
    if x_arr.size == 0 or not x_arr[0] <= x <= x_arr[-1]:
        raise ValueError(
            f"spend {x} outside the evaluated range [{x_arr.min(initial=np.nan)}, {x_arr.max(initial=np.nan)}]"
        )
    table = np.asarray(items, dtype=float)
    j = int(np.searchsorted(x_arr, x, side="left"))
    if x_arr[j] == x:
        return table[j].copy()
    w = (x - x_arr[j - 1]) / (x_arr[j] - x_arr[j - 1])
    return (1.0 - w) * table[j - 1] + w * table[j]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): for reporting several contrasts as one family."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(np.where(np.isnan(p), np.inf, p))
    adjusted = np.full(m, math.nan)
    running = 0.0
    valid = int((~np.isnan(p)).sum())
    for rank, idx in enumerate(order):
        if math.isnan(p[idx]):
            continue
        running = max(running, min(1.0, (valid - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()
