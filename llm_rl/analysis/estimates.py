"""The numbers of one group of runs (one sweep value, or one warm start): each variant's final pass@1, its gain
over the start, its paired difference to the baseline, its budget to a threshold, its spend, and every variant
at equal spend on the other budget axes — all over seeds x items with `relabel_rl.stats`.

Pairing: two variants are compared on the seeds both finished, item by item on the evaluation rows (every run of a
group is scored on the same rows; their ``items_digest`` must agree). Runs written before per-item results were
kept (or with different rows) fall back to one value per seed — a plain t-interval over seeds — and are flagged.

The start: every run of a group starts from the same warm-started checkpoint and is evaluated at step 0 on the same
rows, so its step-0 results are one start, measured once per run and checked to agree (greedy decoding is
deterministic on one machine). That one vector is the start of every gain; if runs disagree (e.g. a mixed
CPU/GPU set), each run's gain is taken against its own start and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm_rl.analysis.contrasts import VariantInfo, baseline_for
from llm_rl.analysis.runs import RunRecord
from relabel_rl.report import MeanCI, mean_ci
from relabel_rl.stats import CrossedEstimate, crossed_mean, paired_difference

__all__ = [
    "EQUAL_SPEND_AXES",
    "SPEND_AXES",
    "GroupResult",
    "analyse_group",
    "below_start",
    "btt_text",
    "budget_to_threshold",
    "equal_spend",
    "group_start",
    "paired",
    "variant_stats",
]

# Every counter a run records, for the spend columns and summary.json.
SPEND_AXES = (
    "generated_tokens",
    "prefill_tokens",
    "total_tokens",
    "outcome_verifier_calls",
    "step_verifier_calls",
    "verifier_calls",
    "prompts",
    "optimizer_steps",
    "wall_time",
)
# The axes on which every variant is also compared at the smallest common spend (the run's own budget axis is
# left out: there every run stopped at the limit).
EQUAL_SPEND_AXES = (
    "generated_tokens",
    "prefill_tokens",
    "total_tokens",
    "verifier_calls",
    "prompts",
    "optimizer_steps",
    "wall_time",
)


def _stack(rows: Sequence[np.ndarray], digests: Sequence[str | None]) -> tuple[np.ndarray, bool]:
    """``[S, N]`` from per-run rows; ``(table, per_item)``. Rows of different lengths or rows sets (digests)
    become one value per run (``[S, 1]``, per_item False)."""
    shapes = {r.shape for r in rows}
    same_rows = len(set(digests)) <= 1 and None not in digests
    if len(shapes) == 1 and next(iter(shapes))[0] > 1 and same_rows:
        return np.stack(rows), True
    return np.array([[float(np.mean(r))] for r in rows]), False


def _finished_rows(
    runs: Sequence[RunRecord], key: str = "item_pass@1", seeds: Sequence[int] | None = None
) -> tuple[list[int], list[np.ndarray], list[str | None]]:
    wanted = None if seeds is None else set(seeds)
    out = [
        (r.seed, r.items(-1, key), r.items_digest)
        for r in sorted(runs, key=lambda r: r.seed)
        if r.finished and (wanted is None or r.seed in wanted)
    ]
    out = [o for o in out if o[1] is not None]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def group_start(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The group's start (module docstring): ``{"items", "estimate", "identical", "runs", "distinct"}``."""
    starts = [(r.items(0), r.evals[0].get("items_digest")) for r in runs if r.evals]
    starts = [s for s in starts if s[0] is not None]
    if not starts:
        return {"items": None, "estimate": None, "identical": True, "runs": 0, "distinct": 0}
    first = starts[0][0]
    distinct = {(tuple(s.tolist()), d) for s, d in starts}
    identical = len(distinct) == 1
    return {
        "items": first if identical else None,
        "estimate": crossed_mean(first) if identical and first.size > 1 else None,
        "pass@1": float(np.mean([s.mean() for s, _ in starts])),
        "identical": identical,
        "runs": len(starts),
        "distinct": len(distinct),
        "n": int(first.size),
    }


def below_start(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The finished runs that ended below their own start: the 95 % t-interval of their per-item change (final −
    start, paired by item on the run's own rows) lies below 0. Each as ``{"seed", "start", "final", "change":
    {"mean", "low", "high"}, "run"}``.

    Why a list of runs and not only a mean: an arm that ends below its start is a bug until shown otherwise, and
    one collapsed seed in ten moves an arm's mean gain as much as a real effect does while its interval over seeds
    only widens. Runs without per-item results are skipped (one value has no interval).
    """
    out = []
    for r in sorted(runs, key=lambda r: r.seed):
        start, final = (r.items(0), r.items(-1)) if r.finished else (None, None)
        if start is None or final is None or start.shape != final.shape or start.size < 2:
            continue
        change = mean_ci((final - start).tolist())
        if change.high < 0:
            out.append({"seed": r.seed, "start": float(start.mean()), "final": float(final.mean()),
                        "change": {"mean": change.mean, "low": change.low, "high": change.high},
                        "run": str(r.path)})  # fmt: skip
    return out


def paired(a: Sequence[RunRecord], b: Sequence[RunRecord]) -> CrossedEstimate | None:
    """``a − b`` over the seeds both finished, item by item (module docstring); None without a common seed."""
    sa, _, _ = _finished_rows(a)
    sb, _, _ = _finished_rows(b)
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    _, ra, da = _finished_rows(a, seeds=common)
    _, rb, db = _finished_rows(b, seeds=common)
    ta, item_a = _stack(ra, da)
    tb, item_b = _stack(rb, db)
    if not (item_a and item_b and ta.shape == tb.shape and set(da) == set(db)):  # one value per seed
        ta, tb = ta.mean(axis=1, keepdims=True), tb.mean(axis=1, keepdims=True)
    return paired_difference(ta, tb)


def budget_to_threshold(runs: Sequence[RunRecord], threshold: float, axis: str) -> dict[str, Any]:
    """Per seed: ``"start"`` (the start already meets ``threshold``), the spend on ``axis`` at the first later
    evaluation that meets it, or ``"not reached"`` (``"not yet"`` while unfinished). Only evaluations after the
    start count as reaching it: a start above the threshold is not a result of training."""
    per_seed = []
    for r in runs:
        xs, ys = r.curve(axis)
        if not ys:
            continue
        if ys[0] >= threshold:
            per_seed.append({"seed": r.seed, "status": "already met at start", "spend": 0.0})
            continue
        hit = next((x for x, y in zip(xs[1:], ys[1:]) if y >= threshold), None)
        status = "reached" if hit is not None else ("not reached" if r.finished else "not yet")
        per_seed.append({"seed": r.seed, "status": status, "spend": hit})
    reached = [p["spend"] for p in per_seed if p["status"] == "reached"]
    counts = {
        s: sum(p["status"] == s for p in per_seed)
        for s in ("already met at start", "reached", "not reached", "not yet")
    }
    return {"threshold": threshold, "per_seed": per_seed, "spend": mean_ci(reached), "counts": counts}


def btt_text(b: Mapping[str, Any], fmt: Any) -> str:
    """ "already met at start" / "not reached (0/3 seeds)" / "12,000 [9,000, 15,000] (2/3 seeds; 1 not reached)"."""
    n = len(b["per_seed"])
    c = b["counts"]
    if n == 0:
        return "–"
    if c["already met at start"] == n:
        return "already met at start"
    if c["reached"] == 0:
        return f"not reached (0/{n} seeds)" + (f"; {c['not yet']} running" if c["not yet"] else "")
    ci: MeanCI = b["spend"]
    value = fmt(ci.mean) + ("" if math.isnan(ci.low) else f" [{fmt(max(ci.low, 0.0))}, {fmt(ci.high)}]")
    rest = [f"{c[s]} {s}" for s in ("not reached", "already met at start", "not yet") if c[s]]
    return f"{value} ({c['reached']}/{n} seeds" + ("; " + ", ".join(rest) if rest else "") + ")"


def variant_stats(
    runs: Sequence[RunRecord], start: Mapping[str, Any], *, threshold: float, axis: str
) -> dict[str, Any]:
    """One variant in one group: final pass@1 / pass@k, gain over the start, budget to threshold, spend."""
    seeds, rows, digests = _finished_rows(runs)
    out: dict[str, Any] = {"seeds": [r.seed for r in runs], "finished": len(seeds), "per_item": False}
    if rows:
        final, per_item = _stack(rows, digests)
        out["final"] = crossed_mean(final)
        out["per_item"] = per_item
        if start.get("items") is not None and per_item and final.shape[1] == start["items"].size:
            out["gain"] = paired_difference(final, start["items"])
        else:  # each run against its own start
            own = [r.items(0) for r in sorted(runs, key=lambda r: r.seed) if r.finished and r.seed in seeds]
            st, _ = _stack([o for o in own if o is not None], digests)
            out["gain"] = paired_difference(final, st) if st.shape == final.shape else None
        _, krows, kdig = _finished_rows(runs, "pass@k")
        out["final_pass@k"] = crossed_mean(_stack(krows, kdig)[0]) if krows else None
        out["k"] = max((int(r.last_eval().get("k") or 0) for r in runs if r.evals), default=0) or None
    out["budget_to_threshold"] = budget_to_threshold(runs, threshold, axis)
    out["spend"] = {
        a: mean_ci([v for r in runs if r.finished and (v := r.spend(a)) is not None]) for a in SPEND_AXES
    }
    return out


def equal_spend(
    by_variant: Mapping[str, Sequence[RunRecord]],
    baseline_of: Mapping[str, str | None],
    *,
    budget_axis: str | None = None,
) -> dict[str, Any]:
    """Every variant's pass@1 at the smallest final spend any finished run of the group reached on each of
    `EQUAL_SPEND_AXES` but ``budget_axis`` (interpolated between evaluations), with its paired difference to its
    baseline there."""
    out: dict[str, Any] = {}
    finished = [r for rs in by_variant.values() for r in rs if r.finished]
    for axis in (a for a in EQUAL_SPEND_AXES if a != budget_axis):
        spends = [s for r in finished if (s := r.spend(axis)) is not None]
        if not spends:
            continue
        x = min(spends)
        tables: dict[str, tuple[list[int], np.ndarray]] = {}
        for name, rs in by_variant.items():
            rows = [
                (r.seed, r.items_at_spend(axis, x), r.items_digest)
                for r in sorted(rs, key=lambda r: r.seed)
                if r.finished
            ]
            rows = [row for row in rows if row[1] is not None]
            if rows:
                tables[name] = (
                    [s for s, _, _ in rows],
                    _stack([v for _, v, _ in rows], [d for _, _, d in rows])[0],
                )
        per: dict[str, Any] = {}
        for name, (seeds, table) in tables.items():
            entry: dict[str, Any] = {"pass@1": crossed_mean(table)}
            base = baseline_of.get(name)
            if base in tables and base != name:
                bseeds, btable = tables[base]
                common = sorted(set(seeds) & set(bseeds))
                ta = table[[seeds.index(s) for s in common]]
                tb = btable[[bseeds.index(s) for s in common]]
                entry["vs_baseline"] = paired_difference(ta, tb) if common and ta.shape == tb.shape else None
            per[name] = entry
        out[axis] = {"at": x, "variants": per}
    return out


# ---------------------------------------------------------------------------------------------------------------
# One group, analysed


@dataclass
class GroupResult:
    """Everything the report says about one group (one sweep value or warm start, or the whole comparison).

    Attributes:
      key: ``"single"`` or the group folder (``length4``, ``ws0.05``).
      warm_start, sweep_value: the group's coordinates (None when not in a regime / sweep).
      infos: the variants' arm, feedback and other overrides (for contrasts and labels).
      runs: the runs of each variant.
      start: `group_start`.
      threshold: the pass@1 whose first crossing is "budget to threshold" (absolute, or start + gain).
      stats: `variant_stats` per variant.
      baseline_of: each variant's baseline under its feedback setting (None where there is none).
      vs_baseline: each variant's paired difference to its baseline.
      equal: `equal_spend`.
      below_start: each variant's runs that ended below their start (`below_start`).
    """

    key: str
    warm_start: float | None
    sweep_value: float | None
    infos: list[VariantInfo]
    runs: dict[str, list[RunRecord]]
    start: dict[str, Any]
    threshold: float
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline_of: dict[str, str | None] = field(default_factory=dict)
    vs_baseline: dict[str, CrossedEstimate | None] = field(default_factory=dict)
    equal: dict[str, Any] = field(default_factory=dict)
    below_start: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def info(self, name: str) -> VariantInfo:
        return next(v for v in self.infos if v.name == name)


def analyse_group(
    key: str,
    runs: Sequence[RunRecord],
    *,
    baseline: str,
    axis: str,
    threshold: float,
    threshold_gain: float | None,
) -> GroupResult:
    """The statistics of one group of runs (module docstring)."""
    by_variant: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_variant.setdefault(r.name, []).append(r)
    infos = []
    for name, rs in by_variant.items():
        r = rs[0]
        ablation = {k: v for k, v in r.overrides.items() if k != "task.feedback"}
        infos.append(VariantInfo(name, r.arm, r.feedback, ablation))
    start = group_start(runs)
    if threshold_gain is not None and start["runs"]:
        threshold = min(1.0, start["pass@1"] + threshold_gain)
    g = GroupResult(key, runs[0].warm_start, runs[0].sweep_value, infos, by_variant, start, threshold)
    for name, rs in by_variant.items():
        g.stats[name] = variant_stats(rs, start, threshold=threshold, axis=axis)
        base = baseline_for(infos, baseline, g.info(name).feedback)
        g.baseline_of[name] = base
        g.vs_baseline[name] = paired(rs, by_variant[base]) if base is not None and base != name else None
        g.below_start[name] = below_start(rs)
    g.equal = equal_spend(by_variant, g.baseline_of, budget_axis=axis)
    return g
