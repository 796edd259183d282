"""The report's contrast family: every contrast of every group (`llm_rl.analysis.contrasts`), paired over seeds x
items, decided as one Holm family (`verdicts.difference_verdict`) and worded for the ingredient it isolates
(`readings.contrast_reading`; the seed's claim is added where search-made targets meet GRPO under `outcome`
feedback: under `steps` both sides also get per-step ground truth, which is not the seed's mechanism).

One family over all groups because a reader scans all of them for the one that "worked": the more contrasts are
tested, the more one of them crosses 0.05 by chance, and Holm's step-down adjustment keeps the chance of any false
claim in the whole report below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from llm_rl.analysis.contrasts import Contrast, derive_contrasts
from llm_rl.analysis.estimates import GroupResult, paired
from llm_rl.analysis.readings import contrast_reading
from llm_rl.analysis.verdicts import SEED_CLAIM, difference_verdict
from relabel_rl.stats import CrossedEstimate, holm

__all__ = ["contrast_family"]

SEARCH_ARMS = ("relabel", "tree_grpo")  # arms whose targets the seed's claim is about, against GRPO


def _sentence(g: GroupResult, c: Contrast, verdict: dict[str, Any], text: str) -> str:
    """``text`` with the seed's claim (search arm vs GRPO) and the plain-word reading of the ingredient."""
    infos = {n: g.info(n) for n in (c.a, c.b)}
    search_vs_grpo = infos[c.a].arm in SEARCH_ARMS and infos[c.b].arm == "grpo"
    if c.kind in ("vs baseline", "ingredient") and search_vs_grpo and infos[c.a].feedback == "outcome":
        text += " " + SEED_CLAIM[verdict["verdict"]]  # the seed's claim is about outcome-only feedback
    reading = contrast_reading(
        c.kind, c.a, c.b, verdict["verdict"], arms={n: i.arm for n, i in infos.items()},
        feedback={n: i.feedback for n, i in infos.items()},
        ablation={n: dict(i.ablation) for n, i in infos.items()},
    )  # fmt: skip
    return f"{text} {reading}" if reading else text


def contrast_family(
    groups: Sequence[GroupResult],
    *,
    baseline: str,
    declared: Sequence[Sequence[str]],
    title: Callable[[GroupResult], str],
) -> list[dict[str, Any]]:
    """One record per contrast: ``group``, ``kind``, ``what``, ``arms``, ``text``, the verdict's fields
    (``a``, ``b``, ``verdict``, ``difference``, ``p_adjusted``, ``family_size``) and the `CrossedEstimate`
    under ``estimate`` (None without paired runs). ``title``: a group's name in the sentences."""
    found: list[tuple[GroupResult, Contrast, CrossedEstimate | None]] = []
    for g in groups:
        for c in derive_contrasts(g.infos, baseline=baseline, declared=declared):
            found.append((g, c, paired(g.runs[c.a], g.runs[c.b])))
    if not found:
        return []
    adjusted = holm([e.p_value if e is not None else math.nan for _, _, e in found])
    family = sum(e is not None and not math.isnan(e.p_value) for _, _, e in found)
    records = []
    for (g, c, e), p_adj in zip(found, adjusted):
        setting = f"{title(g)}, {c.what}" if g.key != "single" else c.what
        text, verdict = difference_verdict(c.a, c.b, e, p_adjusted=p_adj, family=family, setting=setting)
        records.append({"group": g.key, "kind": c.kind, "what": c.what, "arms": [g.info(c.a).arm, g.info(c.b).arm],
                        "text": _sentence(g, c, verdict, text), **verdict, "estimate": e})  # fmt: skip
    return records
