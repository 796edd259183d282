"""The variance probe's statistics: pooled relative variance per length, per gradient and per generation cost,
and its trend over length, with percentile-bootstrap intervals over prompts (why pooled: see
`llm_rl.analysis.variance_probe`).

For one arm and length with prompts ``p`` (``R`` estimates each): ``noise_p = tr Σ̂_p`` (unbiased) and
``signal_p = ‖ḡ_p‖² − tr Σ̂_p / R`` (unbiased for ‖E g_p‖²). The pooled relative variance is
``Σ noise_p / Σ signal_p``; per 1,000 generated tokens it is multiplied by ``c / 1000`` with ``c`` the mean
generated tokens of one estimate. The bootstrap resamples prompts with replacement within each length
(independently across lengths, all lengths in one replicate for the trend); a replicate whose pooled signal is not
positive at some length has no defined ratio there. Percentile intervals are taken over the defined replicates
when at least 95 % of them are defined; otherwise the interval is reported as undefined with the share, since
dropping the undefined replicates would bias it towards low variance. Written with NumPy rather than
``scipy.stats.bootstrap`` for that bookkeeping (SciPy's bootstrap has no notion of an undefined replicate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MIN_DEFINED_SHARE", "summarise_arm"]

# A bootstrap interval is reported only when at least this share of its replicates is defined.
MIN_DEFINED_SHARE = 0.95
_CONFIDENCE = 0.95


def _per_prompt_arrays(recs: Sequence[Mapping[str, Any]], repeats: int) -> dict[str, np.ndarray]:
    noise = np.array([float(r["trace_cov"]) if _finite(r.get("trace_cov")) else 0.0 for r in recs])
    mean_sq = np.array([float(r["mean_norm_sq"]) if _finite(r.get("mean_norm_sq")) else 0.0 for r in recs])
    cost = np.array([float(r.get("generated_tokens_per_estimate", math.nan)) for r in recs])
    nonzero = np.array([round((1.0 - float(r.get("zero_fraction", 0.0))) * repeats) for r in recs])
    return {"noise": noise, "signal": mean_sq - noise / repeats, "cost": cost, "nonzero": nonzero}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _ratio(noise: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Pooled ratio along the last axis; nan where the pooled signal is not positive."""
    num, den = noise.sum(axis=-1), signal.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _percentile(samples: np.ndarray) -> tuple[float, float, float]:
    """``(low, high, defined_share)`` of a 95 % percentile interval over the finite samples."""
    finite = samples[np.isfinite(samples)]
    share = finite.size / samples.size if samples.size else 0.0
    if share < MIN_DEFINED_SHARE or finite.size < 2:
        return math.nan, math.nan, share
    alpha = (1.0 - _CONFIDENCE) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high), share


def _slope(xs: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """OLS slope of ``logs[..., L]`` on ``xs[L]`` along the last axis (nan if any log is nan)."""
    xc = xs - xs.mean()
    return (logs * xc).sum(axis=-1) / float((xc**2).sum())


def _direction(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "unknown"
    return "increasing" if low > 0 else "decreasing" if high < 0 else "flat"


def summarise_arm(
    recs: Sequence[Mapping[str, Any]], repeats: int, *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """``{"bins": [...], "trend": {...}, "trend_per_token": {...}}`` for one arm's per-prompt records (module doc)."""
    rng = np.random.default_rng(seed)
    lengths = sorted({int(r["length"]) for r in recs})
    bins, boot_rv, boot_cost = [], [], []
    for L in lengths:
        at = [r for r in recs if int(r["length"]) == L]
        a = _per_prompt_arrays(at, repeats)
        n = len(at)
        idx = rng.integers(0, n, size=(resamples, n))
        rv_b = _ratio(a["noise"][idx], a["signal"][idx])
        cost_b = (
            np.nanmean(a["cost"][idx], axis=-1)
            if np.isfinite(a["cost"]).any()
            else np.full(resamples, np.nan)
        )
        boot_rv.append(rv_b)
        boot_cost.append(cost_b)
        rv = float(_ratio(a["noise"], a["signal"]))
        cost = float(np.nanmean(a["cost"])) if np.isfinite(a["cost"]).any() else math.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi, share = _percentile(np.log10(rv_b))
            lo_t, hi_t, _ = _percentile(np.log10(rv_b * cost_b / 1000.0))
        per_prompt = [
            float(r["relative_variance"])
            for r in at
            if _finite(r.get("relative_variance")) and r["relative_variance"] > 0
        ]
        bins.append(
            {
                "length": L,
                "n_prompts": n,
                "relative_variance": rv,
                "relative_variance_low": _pow10(lo),
                "relative_variance_high": _pow10(hi),
                "relative_variance_per_1k_tokens": rv * cost / 1000.0,
                "per_1k_tokens_low": _pow10(lo_t),
                "per_1k_tokens_high": _pow10(hi_t),
                "generated_tokens_per_estimate": cost,
                "bootstrap_defined_share": share,
                "pooled_signal": float(a["signal"].sum()),
                "pooled_noise": float(a["noise"].sum()),
                "per_prompt_median": float(np.median(per_prompt)) if per_prompt else math.nan,
                "zero_share": float(np.mean(a["nonzero"] == 0)),
                "capped_share": float(np.mean(a["nonzero"] == 1)),
                "noise_dominated_share": float(np.mean(a["signal"] <= 0)),
                "deterministic_share": float(np.mean([bool(r.get("deterministic")) for r in at])),
                "snr": math.sqrt(1.0 / rv) if rv > 0 else math.nan,
            }
        )
    xs = np.array(lengths, dtype=float)
    rv_all = np.stack(boot_rv, axis=-1) if boot_rv else np.zeros((resamples, 0))
    cost_all = np.stack(boot_cost, axis=-1) if boot_cost else np.zeros((resamples, 0))
    point = np.array([b["relative_variance"] for b in bins])
    silent = [b["pooled_noise"] == 0.0 and b["pooled_signal"] == 0.0 for b in bins]
    per_token = np.array([b["relative_variance_per_1k_tokens"] for b in bins])
    return {
        "bins": bins,
        "trend": _trend(xs, point, rv_all, "log10 relative variance", silent),
        "trend_per_token": _trend(
            xs, per_token, rv_all * cost_all / 1000.0, "log10 relative variance per 1k tokens", silent
        ),
    }


def _trend(
    xs: np.ndarray, point: np.ndarray, boot: np.ndarray, label: str, silent: Sequence[bool]
) -> dict[str, Any]:
    """The slope of log10 ``point`` on ``xs`` with its bootstrap interval; why undefined when it is."""
    out: dict[str, Any] = {
        "y": label,
        "n": len(xs),
        "slope": math.nan,
        "low": math.nan,
        "high": math.nan,
    }
    if len(xs) < 2:
        out.update(direction="unknown", why="fewer than two lengths")
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(point)
        boot_logs = np.log10(boot)
    if not np.isfinite(logs).all():
        bad = [int(x) for x, v in zip(xs, logs) if not np.isfinite(v)]
        zero = [int(x) for x, v in zip(xs, silent) if v]
        why = (
            f"every gradient estimate was exactly zero at length(s) {zero} (no signal at all)"
            if zero
            else f"the mean gradient cannot be told from noise at length(s) {bad} (more repeats are needed)"
        )
        out.update(direction="unknown", why=why)
        return out
    slope = float(_slope(xs, logs))
    low, high, share = _percentile(_slope(xs, boot_logs))
    out.update(slope=slope, low=low, high=high, defined_share=share, direction=_direction(low, high))
    if math.isnan(low):
        out["why"] = (
            f"only {share:.0%} of bootstrap resamples have a defined ratio at every length (noise swamps the mean "
            "gradient in the rest): more repeats per prompt are needed"
        )
    return out


def _pow10(v: float) -> float:
    return math.nan if math.isnan(v) else 10.0**v
