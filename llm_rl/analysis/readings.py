"""What a contrast's verdict means, in plain words, for the one ingredient its two variants differ in.

`llm_rl.analysis.contrasts` picks the pairs (each isolates one ingredient) and `verdicts.difference_verdict`
decides each one against its Holm family; this module only words the decided verdict:

* search vs outcome-only policy gradient (``relabel`` vs ``grpo``) under ``outcome``, and the same pair under
  ``steps`` (where the relabeller prunes rejected steps and GRPO gets DeepSeekMath's process supervision);
* step checks on vs off for one arm (the same arm and overrides under ``steps`` vs ``outcome``);
* the tree alone vs the AlphaZero target (``tree_grpo`` vs ``relabel``: the same step-boundary tree, with TreeRL's
  leaf-backed advantages or with the search's visit-count targets);
* a tree vs independent completions (``tree_grpo`` vs ``grpo``) and a search tree vs per-step MC values without
  one (``relabel`` vs ``mc_value``);
* credit assignment vs none (any arm vs ``rft``, which imitates its own verified samples);
* ablations: a variant's overrides vs its plain arm, worded as "value head vs none" when the overrides touch the
  value head (a key with ``value`` in its last part, e.g. ``relabel.value_loss_coef``).

Nothing here decides anything: a verdict the data cannot make ("no detectable difference", "undetermined") is
worded as such, never as support.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llm_rl.analysis.verdicts import label

__all__ = ["contrast_reading", "is_value_ablation"]


def is_value_ablation(ablation: Mapping[str, Any]) -> bool:
    """Whether a variant's overrides (other than ``task.feedback``) touch the value head."""
    return any("value" in key.rsplit(".", 1)[-1] for key in ablation)


def _winner(verdict: str, a: str, b: str) -> str | None:
    """The arm (or variant) the verdict favours; ``""`` for "no detectable difference"; None when undetermined."""
    return {"a better": a, "b better": b, "no detectable difference": ""}.get(verdict)


def _pick(win: str | None, first: str, words: Mapping[str, str]) -> str:
    """``words["first"]`` when ``first`` won, ``words["other"]`` when the other side won, ``words["none"]``."""
    if win is None:
        return ""
    return words["none"] if win == "" else words["first"] if win == first else words["other"]


def _search_vs_pg(win: str | None, relabel: str, feedback: str) -> str:
    if feedback == "steps":
        head = "Search vs policy gradient, both with step checks (the relabeller prunes rejected steps, GRPO gets "
        head += "process supervision): "
    else:
        head = "Search vs outcome-only policy gradient (both see only the final score): "
    return head + _pick(win, relabel, {
        "first": "the search's per-step targets beat GRPO's one reward per completion.",
        "other": "GRPO's one reward per completion beats the search's per-step targets: search does not help here.",
        "none": "the data do not separate the search's per-step targets from GRPO's one reward per completion.",
    })  # fmt: skip


def _pair_reading(win: str | None, arms: Mapping[str, str], feedback: str) -> str:
    """The reading of a pair of plain arms ``arms`` (variant name -> arm) that isolates an ingredient."""
    by_arm = {arm: name for name, arm in arms.items()}
    pair = set(by_arm)
    if pair == {"relabel", "grpo"}:
        return _search_vs_pg(win, by_arm["relabel"], feedback)
    if pair == {"relabel", "tree_grpo"}:
        return "The tree alone vs the AlphaZero target (the same kind of step-boundary tree): " + _pick(
            win, by_arm["relabel"], {
                "first": "training on the search's targets beats TreeRL's leaf-backed advantages: the AlphaZero "
                "target adds to the tree alone.",
                "other": "the tree alone (its own leaf-backed advantages) beats the search's targets: the AlphaZero "
                "target is not what helps.",
                "none": "the data do not separate the AlphaZero target from the tree alone.",
            })  # fmt: skip
    if pair == {"tree_grpo", "grpo"}:
        return "A tree vs independent completions: " + _pick(win, by_arm["tree_grpo"], {
            "first": "sampling a tree and crediting each step from the leaves below it beats GRPO's independent "
            "completions: the tree alone helps.",
            "other": "GRPO's independent completions beat the tree: the tree alone does not help.",
            "none": "the tree alone is not shown to help.",
        })  # fmt: skip
    if pair == {"relabel", "mc_value"}:
        return "A search tree vs per-step MC values without one: " + _pick(win, by_arm["relabel"], {
            "first": "the tree's targets beat MC step values: the tree is part of what helps.",
            "other": "MC step values beat the tree's targets: the tree is not what helps.",
            "none": "MC values match the tree within the data's resolution: the tree is not shown to be what helps.",
        })  # fmt: skip
    if "rft" in pair and len(pair) == 2:
        other_arm = (pair - {"rft"}).pop()
        other = label(other_arm)
        return "Credit vs none: " + _pick(win, by_arm[other_arm], {
            "first": f"{other} beats imitating its own verified samples: its credit assignment helps.",
            "other": f"imitating verified samples beats {other}: its credit assignment does not help here.",
            "none": f"{other} does not beat imitating verified samples: at this budget the data, not the credit, "
            "may be what helps.",
        })  # fmt: skip
    return ""


def contrast_reading(
    kind: str,
    a: str,
    b: str,
    verdict: str,
    *,
    arms: Mapping[str, str],
    feedback: Mapping[str, str],
    ablation: Mapping[str, Mapping[str, Any]],
) -> str:
    """The plain-word reading of contrast ``a − b`` of kind ``kind`` (`llm_rl.analysis.contrasts.Contrast`) with
    ``verdict`` (`verdicts.difference_verdict`'s); ``""`` when the pair isolates no named ingredient or the data
    decide nothing. ``arms``/``feedback``/``ablation``: per variant name, its arm, its ``task.feedback`` and its
    other overrides."""
    win = _winner(verdict, a, b)
    if win is None:
        return ""
    if kind == "step checks":
        on, arm = (a, arms[a]) if feedback[a] == "steps" else (b, arms[b])
        return f"Step checks on vs off ({label(arm)}): " + _pick(win, on, {
            "first": "the arm does better with per-step checks: its result depends on process supervision.",
            "other": "the arm does better without per-step checks.",
            "none": "the data do not show that per-step checks change this arm's result.",
        })  # fmt: skip
    if kind == "ablation":
        variant = a if ablation.get(a) else b
        what = ", ".join(f"{k}={v}" for k, v in ablation[variant].items())
        name = "Value-head ablation" if is_value_ablation(ablation[variant]) else "Ablation"
        return f"{name} ({label(arms[variant])} with {what}): " + _pick(win, variant, {
            "first": "the variant beats the plain arm.",
            "other": "the plain arm beats the variant: what the variant changes costs pass@1.",
            "none": "the data do not separate the variant from the plain arm.",
        })  # fmt: skip
    if ablation.get(a) or ablation.get(b) or feedback[a] != feedback[b]:
        return ""  # a declared pair across settings or ablations: no single ingredient to name
    return _pair_reading(win, {a: arms[a], b: arms[b]}, feedback[a])
