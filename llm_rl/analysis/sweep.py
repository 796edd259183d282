"""The headline of a sweep (`compare.sweep`): each arm's final pass@1 gain over the start, and its paired
difference to the baseline (GRPO), against the sweep's knob (task length), under each feedback setting side by
side; and the computed verdict on the seed's prediction, "the gap grows with length": the least-squares slope of
the paired gap against length with its 95 % interval (`relabel_rl.stats.linear_contrast`; every length has its
own runs and rows, so the per-length estimates are independent).

Written: ``headline.png`` and ``headline.pdf`` (columns: feedback settings; rows: gain over start, difference to
the baseline; error bars: 95 % intervals over seeds x items) and ``tables/headline.{md,csv,tex}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_rl.analysis.estimates import GroupResult
from llm_rl.analysis.verdicts import fmt_budget, fmt_estimate, label, slope_verdict
from llm_rl.config import ExperimentConfig
from llm_rl.grid import sweep_budget
from relabel_rl.report import new_grid, save_grid, write_table
from relabel_rl.stats import CrossedEstimate, linear_contrast

__all__ = ["FEEDBACK_ORDER", "SEARCH_ARMS", "budget_sentence", "sweep_section"]

FEEDBACK_ORDER = ("outcome", "steps")
# The arms whose gap to GRPO carries the seed's claim, in order of preference for the headline sentence.
SEARCH_ARMS = ("relabel", "tree_grpo", "mc_value")
HEADLINE = "headline.png"


def budget_sentence(cfg: ExperimentConfig, groups: Sequence[GroupResult]) -> str:
    """What every run spends: the recipe's budget, or under ``compare.sweep.scale_budget`` the budget per unit of
    the knob with each value's limit (`llm_rl.grid.sweep_budget`)."""
    axis, knob = cfg.budget.axis, cfg.compare.sweep.knob
    limit = f"{fmt_budget(cfg.budget.limit, axis)} {axis.replace('_', ' ')}"
    if not cfg.compare.sweep.scale_budget:
        return limit
    each = ", ".join(
        f"{fmt_budget(sweep_budget(cfg, g.sweep_value).limit, axis)} at {knob} {g.sweep_value:g}"
        for g in sorted(groups, key=lambda g: g.sweep_value or 0)
        if g.sweep_value is not None
    )
    return (
        f"{limit} per unit of {knob} (`compare.sweep.scale_budget`: {each}), so that every {knob} gets about the "
        f"same number of prompts; within a {knob} every arm has the same budget"
    )


def _plain_names(groups: Sequence[GroupResult], feedback: str) -> list[str]:
    """Plain variants (no ablation) under ``feedback``, in the order they first appear."""
    names: list[str] = []
    for g in groups:
        for v in g.infos:
            if v.feedback == feedback and not v.ablation and v.name not in names:
                names.append(v.name)
    return names


def _series(groups: Sequence[GroupResult], name: str, what: str) -> tuple[list[float], list[CrossedEstimate]]:
    xs, ests = [], []
    for g in groups:
        if name not in g.stats:
            continue
        est = g.stats[name].get("gain") if what == "gain" else g.vs_baseline.get(name)
        if est is not None and not math.isnan(est.estimate):
            xs.append(float(g.sweep_value))
            ests.append(est)
    return xs, ests


def sweep_section(
    groups: Sequence[GroupResult], out: Path, *, knob: str, baseline: str, plots: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """The report's headline section for a sweep: figure, table, slopes and verdict sentences."""
    groups = sorted(groups, key=lambda g: g.sweep_value)
    feedbacks = [f for f in FEEDBACK_ORDER if _plain_names(groups, f)]
    feedbacks += sorted({v.feedback for g in groups for v in g.infos} - set(feedbacks))
    rows, slopes, sentences = [], [], []
    for f in feedbacks:
        for name in _plain_names(groups, f):
            for g in groups:
                if name not in g.stats:
                    continue
                s = g.stats[name]
                start = g.start.get("estimate")
                rows.append([f"{g.sweep_value:g}", f, label(name), fmt_estimate(start), fmt_estimate(s.get("final")),
                             fmt_estimate(s.get("gain"), signed=True),
                             fmt_estimate(g.vs_baseline.get(name), signed=True), f"{s['finished']}"])  # fmt: skip
            xs, ests = _series(groups, name, "diff")
            if len(xs) >= 2:
                slope = linear_contrast(ests, xs)
                text, direction = slope_verdict(name, slope, knob=knob, setting=f"{f} feedback")
                slopes.append({"name": name, "feedback": f, "slope": slope.as_dict(), "direction": direction,
                               "points": _points(groups, name)})  # fmt: skip
                sentences.append(text)
    headers = [knob, "feedback", "arm", "start pass@1", "final pass@1", "gain over start", f"− {label(baseline)}",
               "seeds"]  # fmt: skip
    table = write_table(out / "tables", "headline", headers, rows, align="rllrrrrr")
    primary = _primary(slopes)
    lines = ["## Headline: the gap against " + knob, ""]
    if plots and groups:
        plot_headline(groups, out / HEADLINE, feedbacks=feedbacks, knob=knob, baseline=baseline)
        lines += [f"![{HEADLINE}]({HEADLINE})", ""]
    sizes = sorted({g.start.get("n") for g in groups if g.start.get("n")})
    rows_text = f"{sizes[0]} test rows" if len(sizes) == 1 else "test rows (sizes in each Results section)"
    lines += [
        f"Final pass@1 gain over the start, and the paired difference to {label(baseline)} under the same feedback "
        f"setting, at every {knob} (95% intervals over seeds x items; every {knob} has its own runs and "
        f"{rows_text}, named in its Results section; all from one warm start).",
        "",
        table,
        "",
        *(f"- {s}" for s in sentences),
        "",
    ]
    return lines, {"slopes": slopes, "primary": primary, "sentences": sentences, "knob": knob}


def _points(groups: Sequence[GroupResult], name: str) -> list[dict[str, Any]]:
    """Per sweep value with a paired gap: the gap, the variant's gain over the start and its baseline's (what the
    conclusion needs to tell "search pulls ahead" from "the baseline's lead shrinks")."""
    out = []
    for g in groups:
        diff, base = g.vs_baseline.get(name), g.baseline_of.get(name)
        if diff is None or math.isnan(diff.estimate) or name not in g.stats:
            continue
        base_gain = g.stats.get(base, {}).get("gain") if base else None
        gain = g.stats[name].get("gain")
        out.append({"value": float(g.sweep_value), "diff": diff.as_dict(),
                    "gain": gain.as_dict() if gain is not None else None,
                    "baseline_gain": base_gain.as_dict() if base_gain is not None else None})  # fmt: skip
    return out


def _primary(slopes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The slope that answers the seed's prediction: a search arm's gap under ``outcome`` (else ``steps``)."""
    for feedback in FEEDBACK_ORDER:
        for arm in SEARCH_ARMS:
            hit = next((s for s in slopes if s["name"] == arm and s["feedback"] == feedback), None)
            if hit is not None:
                return hit
    return None


def plot_headline(
    groups: Sequence[GroupResult], path: Path, *, feedbacks: Sequence[str], knob: str, baseline: str
) -> Path:
    """The headline figure (module docstring): PNG at ``path``, PDF beside it; the legend below the panels."""
    cols = max(1, len(feedbacks))
    fig, axes, colours = new_grid(2, cols, width=3.4 * cols, height=4.6)
    names = list(dict.fromkeys(v.arm for g in groups for v in g.infos))
    handles: dict[str, Any] = {}
    values = sorted({float(g.sweep_value) for g in groups})
    span = (values[-1] - values[0]) if len(values) > 1 else 1.0
    for c, f in enumerate(feedbacks):
        plain = _plain_names(groups, f)
        for row, what in enumerate(("gain", "diff")):
            ax = axes[row][c]
            for i, name in enumerate(plain):
                xs, ests = _series(groups, name, what)
                if not xs:
                    continue
                arm = groups[0].info(name).arm if name in groups[0].stats else name
                colour = (
                    colours[names.index(arm) % len(colours)] if arm in names else colours[i % len(colours)]
                )
                shift = (i - (len(plain) - 1) / 2) * 0.02 * span
                lo = [e.estimate - e.low if not math.isnan(e.low) else 0 for e in ests]
                hi = [e.high - e.estimate if not math.isnan(e.high) else 0 for e in ests]
                h = ax.errorbar([x + shift for x in xs], [e.estimate for e in ests], yerr=[lo, hi], color=colour,
                                marker="o", markersize=3, capsize=2, linewidth=1.2, label=label(arm))  # fmt: skip
                handles.setdefault(label(arm), h)
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(f"{f} feedback")
            if c == 0:
                ax.set_ylabel("pass@1 gain over start" if what == "gain" else f"pass@1 − {label(baseline)}")
            if row == 1:
                ax.set_xlabel(knob)
                ax.set_xticks(values)
    save_grid(fig, path, list(handles.values()), list(handles))
    return path
