"""The report's verdict sentences, computed from the data — never canned.

* :func:`performance_sentence` compares two arms' final held-out pass@1 over seeds: a difference is claimed only
  when the 95 % Welch interval of the difference of means excludes 0 (whether the two per-arm 95 % intervals
  overlap is stated too, since readers look for it; it is the more conservative test).
* :func:`contrast_reading` says in plain words what a verdict between two arms that differ in one ingredient means
  (`CONTRASTS`: tree vs AlphaZero target, tree vs independent completions, credit assignment vs none).
* :func:`variance_sentence` reads the variance probe's per-arm trends (slope of log10 relative gradient variance
  on task length, 95 % interval) against the seed's prediction: GRPO's grows, the relabeller's does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from relabel_rl.report import MeanCI, difference_ci, format_ci

__all__ = [
    "ARM_LABELS",
    "CONTRASTS",
    "SEED_CLAIM",
    "ci_dict",
    "contrast_reading",
    "performance_sentence",
    "variance_sentence",
]

ARM_LABELS = {
    "grpo": "GRPO",
    "relabel": "relabel (tree search)",
    "mc_value": "MC value (VinePPO-style)",
    "tree_grpo": "tree GRPO (TreeRL)",
    "rft": "RFT (rejection sampling)",
}

# Pairs of arms that differ in one ingredient, compared beside "each arm against the baseline" (`contrast_reading`
# says what their verdict means): the same step-boundary tree with and without the AlphaZero target; imitation of
# verified samples against each arm that assigns credit.
CONTRASTS = (("relabel", "tree_grpo"), ("relabel", "rft"), ("mc_value", "rft"), ("tree_grpo", "rft"))


def contrast_reading(verdict: Mapping[str, Any]) -> str:
    """What a `performance_sentence` verdict between two arms means for the ingredient they differ in ("" when the
    pair isolates none, or the verdict is undetermined). Either order of the pair is read the same way."""
    a, b, v = verdict["a"], verdict["b"], verdict["verdict"]
    pair = {a, b}
    if pair == {"relabel", "tree_grpo"}:
        return {
            "relabel better": "Tree vs AlphaZero target: on the same kind of step-boundary tree, training on the "
            "search's targets beats TreeRL's leaf-backed advantages: the AlphaZero target adds to the tree.",
            "tree_grpo better": "Tree vs AlphaZero target: the tree's own leaf-backed advantages beat the search's "
            "targets: the AlphaZero target is not what helps.",
            "no detectable difference": "Tree vs AlphaZero target: the data do not separate the AlphaZero target "
            "from the tree's own advantages.",
        }.get(v, "")
    if pair == {"tree_grpo", "grpo"}:
        return {
            "tree_grpo better": "Tree vs independent completions: sampling a tree and crediting each step from the "
            "leaves below it beats GRPO's independent completions.",
            "grpo better": "Tree vs independent completions: GRPO's independent completions beat the tree: the "
            "tree alone does not help.",
            "no detectable difference": "Tree vs independent completions: the tree alone is not shown to help.",
        }.get(v, "")
    if "rft" in pair and len(pair) == 2:
        name = (pair - {"rft"}).pop()
        other = ARM_LABELS.get(name, name)
        return {
            f"{name} better": f"Credit vs none: {other} beats imitating its own verified samples: its credit "
            "assignment helps.",
            "rft better": f"Credit vs none: imitating verified samples beats {other}: its credit assignment does "
            "not help here.",
            "no detectable difference": f"Credit vs none: {other} does not beat imitating verified samples: at "
            "this budget the data, not the credit, may be what helps.",
        }.get(v, "")
    return ""


SEED_CLAIM = {
    "relabel better": "The seed's prediction (relabelling beats GRPO at equal budget) is supported here.",
    "grpo better": "The seed's prediction (relabelling beats GRPO at equal budget) is contradicted here.",
    "no detectable difference": "The seed's prediction (relabelling beats GRPO at equal budget) is not confirmed.",
    "undetermined": "The seed's prediction (relabelling beats GRPO at equal budget) cannot be tested with one seed.",
}


def performance_sentence(
    a: str, b: str, stats: Mapping[str, Mapping[str, Any]], *, budget_text: str
) -> tuple[str, dict[str, Any]]:
    """One sentence comparing the final pass@1 of arms ``a`` and ``b`` from their per-seed values."""
    fa = [v for v in stats[a]["per_seed_final_pass@1"] if v is not None]
    fb = [v for v in stats[b]["per_seed_final_pass@1"] if v is not None]
    ca, cb = stats[a]["final_pass@1"], stats[b]["final_pass@1"]
    diff = difference_ci(fa, fb)
    la, lb = ARM_LABELS.get(a, a), ARM_LABELS.get(b, b)
    head = (
        f"At equal budget ({budget_text}), {la}'s final held-out pass@1 is {format_ci(ca)} and {lb}'s is "
        f"{format_ci(cb)} ({len(fa)} vs {len(fb)} seeds)"
    )
    if math.isnan(diff.low):
        verdict = "undetermined"
        tail = (
            f"; the difference is {diff.mean:+.3f}, but with fewer than two seeds per arm there is no interval, "
            "so the data cannot say which is better."
        )
    else:
        overlap = ca.overlaps(cb)
        overlap_text = "overlap" if overlap else "do not overlap"
        if diff.low > 0:
            verdict = f"{a} better"
            tail = f"; the difference {format_ci(diff)} excludes 0 (the two 95% CIs {overlap_text}): {la} is better here."
        elif diff.high < 0:
            verdict = f"{b} better"
            tail = f"; the difference {format_ci(diff)} excludes 0 (the two 95% CIs {overlap_text}): {lb} is better here."
        else:
            verdict = "no detectable difference"
            tail = (
                f"; the difference {format_ci(diff)} includes 0 (the two 95% CIs {overlap_text}): the data do not "
                f"separate the two arms at {min(len(fa), len(fb))} seeds."
            )
    return head + tail, {"a": a, "b": b, "difference": ci_dict(diff), "verdict": verdict}


def variance_sentence(variance: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Whether the probe supports the seed's prediction: GRPO's relative gradient variance grows with task length,
    the relabeller's does not. Decided from each arm's slope of log10 relative variance on length (95 % CI)."""
    arms = variance.get("arms", {})
    parts, trends = [], {}
    for arm, data in arms.items():
        t = data.get("trend") or {}
        trends[arm] = t
        if t.get("slope") is None or not math.isfinite(t.get("slope", math.nan)):
            bins = data.get("bins") or []
            n = sum(b.get("n_prompts", 0) for b in bins)
            zero = (
                sum(b.get("zero_gradient_fraction", 0.0) * b.get("n_prompts", 0) for b in bins) / n
                if n
                else 0.0
            )
            why = f"; {zero:.0%} of its gradient estimates were exactly zero" if zero > 0 else ""
            parts.append(f"{ARM_LABELS.get(arm, arm)}: no trend (too few defined estimates{why})")
            continue
        parts.append(
            f"{ARM_LABELS.get(arm, arm)}: slope of log10 relative variance per step {t['slope']:+.3f} "
            f"[{t['low']:+.3f}, {t['high']:+.3f}] ({t['direction']})"
            if t.get("low") is not None and math.isfinite(t["low"])
            else f"{ARM_LABELS.get(arm, arm)}: slope {t['slope']:+.3f} (no interval)"
        )
    g = trends["grpo"].get("direction") or "unknown" if "grpo" in trends else None
    r = trends["relabel"].get("direction") or "unknown" if "relabel" in trends else None
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


def ci_dict(ci: MeanCI) -> dict[str, Any]:
    """A `MeanCI` as a JSON-ready dict (summary.json)."""
    return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n, "std": ci.std}
