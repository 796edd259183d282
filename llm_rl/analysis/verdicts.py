"""The report's verdict sentences, computed from the data — never canned.

* :func:`difference_verdict` reads a paired difference (`relabel_rl.stats.CrossedEstimate` over seeds x items)
  against its family: a difference is claimed only when its Holm-adjusted p-value is below 0.05 (the interval
  shown is the unadjusted 95 % one, so a claimed difference always has an interval that excludes 0, not the
  other way round); the sentence also gives the minimum detectable difference of the design, so a "no detectable
  difference" says how large a difference could have hidden.
* `llm_rl.analysis.readings.contrast_reading` says in plain words what such a verdict means for the one
  ingredient its two variants differ in.
* :func:`slope_verdict` reads the slope of a paired gap against length: "the gap grows with length" only when the
  slope's 95 % interval lies above 0.
* :func:`variance_sentence` reads the variance probe's per-arm trends (slope of log10 pooled relative gradient
  variance on task length, 95 % bootstrap interval) against the seed's prediction: GRPO's grows, the
  relabeller's does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from relabel_rl.stats import ContrastEstimate, CrossedEstimate

__all__ = [
    "ALPHA",
    "ARM_LABELS",
    "SEED_CLAIM",
    "below_start_text",
    "conclusion_lines",
    "difference_verdict",
    "fmt_budget",
    "fmt_estimate",
    "label",
    "slope_reading",
    "slope_verdict",
    "variance_sentence",
]

ALPHA = 0.05
ARM_LABELS = {
    "grpo": "GRPO",
    "relabel": "relabel (tree search)",
    "mc_value": "MC value (VinePPO-style)",
    "tree_grpo": "tree GRPO (TreeRL)",
    "rft": "RFT (rejection sampling)",
}

SEED_CLAIM = {
    "a better": "The seed's prediction (search-made targets beat GRPO at equal budget) is supported here.",
    "b better": "The seed's prediction (search-made targets beat GRPO at equal budget) is contradicted here.",
    "no detectable difference": "The seed's prediction (search-made targets beat GRPO at equal budget) is not "
    "confirmed here.",
    "undetermined": "The seed's prediction (search-made targets beat GRPO at equal budget) cannot be tested here.",
}


def label(name: str) -> str:
    """An arm's display name (a variant keeps its own name)."""
    return ARM_LABELS.get(name, name)


def _sign(v: float, digits: int = 3) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:+.{digits}f}"


def fmt_budget(v: float | None, axis: str) -> str:
    """A spend on budget axis ``axis``: seconds to one decimal, counts with thousands separators."""
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.1f}" if axis == "wall_time" else f"{v:,.0f}"


def fmt_estimate(e: CrossedEstimate | None, *, signed: bool = False, digits: int = 3) -> str:
    """``"0.412 [0.391, 0.433]"`` (``signed``: ``"+0.012 [-0.004, +0.028]"``); ``"0.412 (n=1)"`` without an
    interval; ``"–"`` for nothing."""
    if e is None or math.isnan(e.estimate):
        return "–"
    f = (lambda v: _sign(v, digits)) if signed else (lambda v: "nan" if math.isnan(v) else f"{v:.{digits}f}")
    if math.isnan(e.low):
        return f"{f(e.estimate)} (no interval)"
    return f"{f(e.estimate)} [{f(e.low)}, {f(e.high)}]"


def difference_verdict(
    a: str, b: str, est: CrossedEstimate | None, *, p_adjusted: float, family: int, setting: str = ""
) -> tuple[str, dict[str, Any]]:
    """One sentence on the paired difference ``a − b`` and its verdict (``"a better"``, ``"b better"``,
    ``"no detectable difference"``, ``"undetermined"``)."""
    la, lb = label(a), label(b)
    where = f" ({setting})" if setting else ""
    if est is None or math.isnan(est.estimate):
        return f"{la} − {lb}{where}: no paired runs (both need finished runs with the same seeds).", {
            "a": a,
            "b": b,
            "verdict": "undetermined",
            "difference": None,
            "p_adjusted": p_adjusted,
            "family_size": family,
        }
    design = (
        f"{est.num_seeds} seed{'s' if est.num_seeds != 1 else ''} x {est.num_items} items; "
        f"minimum detectable difference {est.mde:.3f}"
        if math.isfinite(est.mde)
        else f"{est.num_seeds} seeds x {est.num_items} items"
    )
    head = f"{la} − {lb}{where}: {fmt_estimate(est, signed=True)} ({design}"
    if math.isnan(est.low) or math.isnan(p_adjusted):
        verdict = "undetermined"
        tail = (
            "): no interval (one seed and one item, or no variation), so the data cannot say which is better."
        )
    else:
        pp = f"p = {est.p_value:.3g}" + (
            f", Holm-adjusted {p_adjusted:.3g} over {family} contrasts" if family > 1 else ""
        )
        if p_adjusted < ALPHA and est.estimate > 0:
            verdict, tail = "a better", f"; {pp}): {la} is better here."
        elif p_adjusted < ALPHA and est.estimate < 0:
            verdict, tail = "b better", f"; {pp}): {lb} is better here."
        elif est.mde == 0.0:  # every seed and item scored alike in both: nothing varies, nothing to detect
            verdict = "no detectable difference"
            tail = f"; {pp}): both scored alike on every seed and item; the data cannot separate them."
        else:
            verdict = "no detectable difference"
            tail = f"; {pp}): the data do not separate them; a true difference below {est.mde:.3f} could hide here."
    return head + tail, {
        "a": a,
        "b": b,
        "verdict": verdict,
        "difference": est.as_dict(),
        "p_adjusted": p_adjusted,
        "family_size": family,
    }


def slope_verdict(name: str, slope: ContrastEstimate, *, knob: str, setting: str) -> tuple[str, str]:
    """``(sentence, direction)`` for the slope of ``name``'s paired gap to the baseline against the sweep knob."""
    if math.isnan(slope.estimate):
        return (
            f"{label(name)} ({setting}): no slope (fewer than two {knob} values with paired runs).",
            "unknown",
        )
    per = f"per unit of {knob}"
    text = (
        f"{label(name)} ({setting}): the gap to the baseline changes by {_sign(slope.estimate)} pass@1 {per} "
        f"[{_sign(slope.low)}, {_sign(slope.high)}]"
    )
    d = slope.direction
    if d == "increasing":
        text += f": the gap grows with {knob}."
    elif d == "decreasing":
        text += f": the gap shrinks with {knob}."
    elif d == "flat":
        text += f": no detectable trend with {knob} (the interval includes 0)."
    else:
        text += ": no interval."
    return text, d


def variance_sentence(variance: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Whether the probe supports the seed's prediction: GRPO's relative gradient variance grows with task length,
    the relabeller's does not. Decided from each arm's slope of log10 pooled relative variance on length (95 %
    bootstrap interval), per gradient; the per-token slope is stated beside it."""
    arms = variance.get("arms", {})
    parts, trends = [], {}
    for arm, data in arms.items():
        t = data.get("trend") or {}
        tt = data.get("trend_per_token") or {}
        trends[arm] = {**t, "per_token": tt}
        slope = t.get("slope")
        if slope is None or not math.isfinite(slope):
            parts.append(f"{label(arm)}: no trend ({t.get('why', 'too few defined estimates')})")
            continue
        text = f"{label(arm)}: slope of log10 relative variance per step {_sign(slope)}"
        if t.get("low") is not None and math.isfinite(t["low"]):
            text += f" [{_sign(t['low'])}, {_sign(t['high'])}] ({t['direction']})"
        else:
            text += f" (no interval: {t.get('why', 'undefined')})"
        ts = tt.get("slope")
        if ts is not None and math.isfinite(ts) and tt.get("low") is not None and math.isfinite(tt["low"]):
            text += f", per 1k generated tokens {_sign(ts)} [{_sign(tt['low'])}, {_sign(tt['high'])}]"
        parts.append(text)
    g = (trends["grpo"].get("direction") or "unknown") if "grpo" in trends else None
    r = (trends["relabel"].get("direction") or "unknown") if "relabel" in trends else None
    if g is None or r is None:
        verdict = "not tested"
        tail = "The seed's prediction needs both GRPO and relabel in the probe; it was not tested."
    elif g == "increasing" and r in ("flat", "decreasing"):
        verdict = "supported"
        tail = (
            "The data support the seed's prediction: whole-sequence PG (GRPO) variance grows with task length "
            f"and the relabeller's does not ({r})."
        )
    elif g in ("flat", "decreasing") and r == "increasing":
        verdict = "contradicted"
        tail = "The data contradict the seed's prediction: the relabeller's variance grows with length and GRPO's does not."
    elif g == "increasing" and r == "increasing":
        slower = trends["relabel"]["slope"] < trends["grpo"]["slope"]
        verdict = "partly supported" if slower else "not supported"
        tail = "Both arms' variance grows with length, " + (
            "the relabeller's more slowly: the prediction is only partly supported."
            if slower
            else "the relabeller's at least as fast: the data do not support the prediction."
        )
    elif g == "decreasing":
        verdict = "contradicted"
        tail = "GRPO's variance falls with length, against the seed's prediction."
    else:
        verdict = "inconclusive"
        tail = (
            f"GRPO's trend is {g} and the relabeller's is {r}: the probe cannot confirm or refute the prediction "
            "at this size (more prompts, repeats or lengths would narrow the intervals)."
        )
    return "Gradient-variance probe — " + "; ".join(parts) + ". " + tail, {
        "verdict": verdict,
        "trends": trends,
    }


_SLOPE_WORDS = {
    "decreasing": "the gap shrinks with it: the prediction is contradicted.",
    "flat": "no detectable trend: the data neither confirm nor refute the prediction at this size.",
    "unknown": "no interval could be computed.",
}


def slope_reading(primary: Mapping[str, Any], *, knob: str) -> str:
    """What the headline slope says about the seed's prediction ("search-made targets beat GRPO, more as reasoning
    gets longer"). A gap that grows is "supported" only when search is also *ahead* at the longest value; when it
    is not, a growing gap is GRPO's lead shrinking — the predicted direction, not the claim — and the sentence says
    so, with the baseline's gain at the longest value (a lead that shrinks because the baseline stops learning
    there is a floor, not credit assignment)."""
    d = primary["direction"]
    if d != "increasing":
        return _SLOPE_WORDS[d]
    points = primary.get("points") or []
    if not points:
        return "the gap grows with it: the prediction is supported."
    last = points[-1]
    if last["diff"]["low"] > 0:
        return f"the gap grows with it and search is ahead at {knob} {last['value']:g}: the prediction is supported."

    def values(ps: list[Mapping[str, Any]]) -> str:
        return ", ".join(f"{p['value']:g}" for p in ps)

    behind = [p for p in points if p["diff"]["high"] < 0]
    ahead = [p for p in points if p["diff"]["low"] > 0]
    d_last = last["diff"]
    text = (
        f"the gap grows with it, but search is not ahead at {knob} {last['value']:g} ({_sign(d_last['estimate'])} "
        f"[{_sign(d_last['low'])}, {_sign(d_last['high'])}])"
        + (f", it is behind at {knob} {values(behind)}" if behind else "")
        + (f", ahead only at {values(ahead)}" if ahead else "")
        + ": the baseline's lead shrinks rather than search pulling ahead"
    )
    base = last.get("baseline_gain")
    if base is not None and base["low"] <= 0:
        text += (
            f"; at {knob} {last['value']:g} the baseline gains {_sign(base['estimate'])} [{_sign(base['low'])}, "
            f"{_sign(base['high'])}] over its start, so the gap there is measured where the baseline barely learns"
        )
    return text + ". The direction the seed predicts, not its claim: partly supported."


def below_start_text(entries: list[Mapping[str, Any]]) -> str:
    """One sentence naming the runs that ended below their start (`llm_rl.analysis.estimates.below_start`), each
    with its start, final and per-item change; an entry's ``where`` names its group (e.g. " at length 6")."""
    runs = "; ".join(
        f"{label(e['variant'])} seed {e['seed']}{e.get('where', '')}: {e['start']:.3f} → {e['final']:.3f}, "
        f"{_sign(e['change']['mean'])} [{_sign(e['change']['low'])}, {_sign(e['change']['high'])}]"
        for e in entries
    )
    return (
        f"{len(entries)} run{'s' if len(entries) != 1 else ''} ended below {'their' if len(entries) != 1 else 'its'} "
        f"start (per-item change on its test rows, 95% interval below 0) — {runs}. An arm that ends below its "
        "start is a bug until shown otherwise: read the run's greedy completions (`llm-rl eval RUN_DIR/final`) "
        "before reading its mean, which such a run pulls down."
    )


def conclusion_lines(summary: Mapping[str, Any], *, knob: str) -> list[str]:
    """The report's "Conclusion": the answer in plain words with its numbers, from the verdicts computed above
    (the sweep's slope, every search arm against GRPO, the variance probe, what dominates the intervals)."""
    lines = ["## Conclusion", ""]
    primary = (summary.get("headline") or {}).get("primary")
    if primary is not None:
        s = primary["slope"]
        lines.append(
            f"- The seed predicts that the gap between search-made targets and GRPO grows with {knob}. Measured "
            f"({label(primary['name'])}, {primary['feedback']} feedback): the paired gap changes by "
            f"{_sign(s['estimate'])} pass@1 per unit of {knob} [{_sign(s['low'])}, {_sign(s['high'])}] — "
            + slope_reading(primary, knob=knob)
        )
    for c in summary.get("contrasts", []):
        if c["kind"] == "vs baseline" and c.get("arms", [None])[0] in ("relabel", "tree_grpo"):
            lines.append(f"- {c['text']}")
    if summary.get("below_start"):
        lines.append(f"- {below_start_text(summary['below_start'])}")
    if "variance" in summary:
        lines.append(f"- Variance probe: {summary['variance']['verdict']}.")
    u = summary.get("uncertainty")
    if u:
        lines.append(
            f"- The intervals are dominated by {u['dominated_by']} (median seed share {u['median_seed_share']:.2f})."
        )
    return [*lines, ""] if len(lines) > 2 else []
