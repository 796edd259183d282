"""Which paired differences the report tests, derived from the variants a comparison ran: the contrasts that
isolate one ingredient at a time.

For the variants of one group (each: its arm, its ``task.feedback``, its other overrides), in this order:

1. **vs the baseline** — every plain arm against the baseline arm (GRPO) *under the same feedback setting*: search
   (or MC values, tree GRPO, RFT) vs outcome-only policy gradient under ``outcome``, and the same under ``steps``;
2. **step checks on vs off** — the same arm with the same other overrides under ``steps`` vs ``outcome``;
3. **ablations** — a variant with overrides against its plain arm under the same feedback (e.g. value head vs
   none, pruning vs none);
4. **named ingredients**, once the arms exist: search vs outcome-only PG (``relabel − grpo``), a tree vs independent
   completions (``tree_grpo − grpo``), the tree alone vs the AlphaZero target (``tree_grpo − relabel``), a tree vs
   none (``relabel − mc_value``), credit assignment vs none (every other arm ``− rft``);
5. the recipe's own ``compare.contrasts``.

All of them, over all groups, form one family: the report gives each one's raw p-value and its Holm-adjusted
p-value over the family, and claims a difference only when the adjusted one is below 0.05;
`llm_rl.analysis.readings` words each verdict for the ingredient its pair isolates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Contrast", "VariantInfo", "baseline_for", "derive_contrasts"]

# (a, b, what the contrast isolates) between plain arms under the same feedback setting.
# Those with GRPO are also "vs baseline" contrasts when GRPO is the baseline (each pair is tested once).
NAMED = (
    ("relabel", "grpo", "search targets vs outcome-only policy gradient"),
    ("tree_grpo", "grpo", "a step-boundary tree vs independent completions"),
    ("tree_grpo", "relabel", "the tree alone vs the AlphaZero target"),
    ("relabel", "mc_value", "a search tree vs per-step MC values without one"),
)
NO_CREDIT_ARM = "rft"


@dataclass(frozen=True)
class VariantInfo:
    """What the contrasts need to know of a variant: its arm, feedback setting and other overrides."""

    name: str
    arm: str
    feedback: str
    ablation: Mapping[str, Any]


@dataclass(frozen=True)
class Contrast:
    """``a − b`` and why the report tests it (``kind``: one of the module docstring's five, ``what``: words)."""

    a: str
    b: str
    kind: str
    what: str


def _plain(infos: Sequence[VariantInfo], arm: str, feedback: str) -> VariantInfo | None:
    return next((v for v in infos if v.arm == arm and v.feedback == feedback and not v.ablation), None)


def baseline_for(infos: Sequence[VariantInfo], baseline: str, feedback: str) -> str | None:
    """The name of the baseline under ``feedback``: the variant named ``baseline`` if it has that feedback,
    else the plain variant of the arm ``baseline`` under it."""
    named = next((v for v in infos if v.name == baseline), None)
    if named is not None and named.feedback == feedback and named.ablation:
        return named.name
    found = _plain(infos, named.arm if named is not None else baseline, feedback)
    return None if found is None else found.name


def _fmt_overrides(ablation: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in ablation.items())


def derive_contrasts(
    infos: Sequence[VariantInfo], *, baseline: str, declared: Sequence[Sequence[str]] = ()
) -> list[Contrast]:
    """The contrasts of one group (module docstring), without repeats."""
    out: list[Contrast] = []
    seen: set[frozenset[str]] = set()

    def add(a: str, b: str, kind: str, what: str) -> None:
        key = frozenset((a, b))
        if a != b and key not in seen:
            seen.add(key)
            out.append(Contrast(a, b, kind, what))

    for v in infos:
        base = baseline_for(infos, baseline, v.feedback)
        if base is not None and not v.ablation:
            add(v.name, base, "vs baseline", f"{v.arm} vs {baseline} under {v.feedback} feedback")
    for v in infos:
        if v.feedback != "steps":
            continue
        off = next(
            (w for w in infos if w.arm == v.arm and w.feedback == "outcome" and w.ablation == v.ablation),
            None,
        )
        if off is not None:
            add(v.name, off.name, "step checks", f"{v.arm}: step checks on (steps) vs off (outcome)")
    for v in infos:
        plain = _plain(infos, v.arm, v.feedback)
        if v.ablation and plain is not None:
            add(
                v.name,
                plain.name,
                "ablation",
                f"{v.arm} with {_fmt_overrides(v.ablation)} vs without, {v.feedback}",
            )
    for feedback in sorted({v.feedback for v in infos}):
        for a_arm, b_arm, what in NAMED:
            a, b = _plain(infos, a_arm, feedback), _plain(infos, b_arm, feedback)
            if a is not None and b is not None:
                add(a.name, b.name, "ingredient", f"{what}, {feedback}")
        rft = _plain(infos, NO_CREDIT_ARM, feedback)
        if rft is not None:
            for v in infos:
                if v.feedback == feedback and not v.ablation and v.arm != NO_CREDIT_ARM:
                    add(
                        v.name,
                        rft.name,
                        "ingredient",
                        f"credit assignment ({v.arm}) vs none (rft), {feedback}",
                    )
    names = {v.name for v in infos}
    for pair in declared:
        if len(pair) == 2 and set(pair) <= names:
            add(pair[0], pair[1], "declared", "declared in compare.contrasts")
    return out
