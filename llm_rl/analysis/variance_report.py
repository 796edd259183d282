"""The variance probe's part of the report: its plot and its markdown section (the numbers come from
`llm_rl.analysis.variance_probe`, the verdict sentence from `llm_rl.analysis.verdicts`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_rl.analysis.verdicts import ARM_LABELS, variance_sentence
from relabel_rl.report import markdown_table, new_figure, save_figure

__all__ = ["finite_positive", "markdown_section", "on_log_scale", "plot_variance"]


def on_log_scale(rec: Mapping[str, Any]) -> bool:
    """A prompt whose relative variance enters the log-scale statistics: defined, positive, not deterministic."""
    return finite_positive(rec.get("relative_variance")) and not rec.get("deterministic")


def finite_positive(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v) and v > 0


def plot_variance(variance: Mapping[str, Any], path: str | Path) -> Path:
    """A PNG: per arm, the geometric-mean relative variance per length with its 95 % interval (log y), and every
    prompt's value as a faint dot."""
    fig, ax, colours = new_figure()
    arms = variance.get("arms", {})
    width = 0.12 * max(1, len(arms))
    plotted = False  # a log axis with nothing positive on it cannot be laid out (every gradient exactly zero)
    for i, (arm, data) in enumerate(arms.items()):
        c = colours[i % len(colours)]
        shift = (i - (len(arms) - 1) / 2) * width / max(1, len(arms))
        pts = [r for r in data.get("per_prompt", []) if on_log_scale(r)]
        ax.scatter(
            [r["length"] + shift for r in pts],
            [r["relative_variance"] for r in pts],
            color=c,
            alpha=0.3,
            s=10,
        )
        bins = [b for b in data.get("bins", []) if finite_positive(b.get("relative_variance_geomean"))]
        xs = [b["length"] + shift for b in bins]
        ys = [b["relative_variance_geomean"] for b in bins]
        plotted = plotted or bool(pts) or bool(ys)
        lo = [
            y - b["relative_variance_low"] if finite_positive(b["relative_variance_low"]) else 0
            for y, b in zip(ys, bins)
        ]
        hi = [
            b["relative_variance_high"] - y if finite_positive(b["relative_variance_high"]) else 0
            for y, b in zip(ys, bins)
        ]
        t = data.get("trend", {})
        slope = t.get("slope")
        slope_txt = f", slope {slope:+.2f} log10/step" if slope is not None and math.isfinite(slope) else ""
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            color=c,
            marker="o",
            capsize=3,
            linewidth=2,
            label=f"{ARM_LABELS.get(arm, arm)}{slope_txt}",
        )
    if plotted:
        ax.set_yscale("log")
    ax.set_xlabel("task length (operations)")
    ax.set_ylabel("relative gradient variance  E‖g−ḡ‖² / ‖ḡ‖²")
    ax.set_title(
        f"Per-prompt gradient noise vs length ({variance.get('repeats', '?')} estimates/prompt)\n"
        "(geometric mean over prompts, 95% CI; dots: single prompts)",
        fontsize=10,
    )
    lengths = variance.get("lengths") or []
    if lengths:
        ax.set_xticks(lengths)
    return save_figure(fig, ax, path, legend=bool(arms), grid_which="both")


def markdown_section(
    variance: Mapping[str, Any], out: str | Path, *, plots: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """The report's "Gradient variance vs task length" section (markdown lines) and its computed verdict (with
    ``text``); draws ``variance_vs_length.png`` into ``out`` when ``plots``."""
    sentence, verdict = variance_sentence(variance)
    verdict = {**verdict, "text": sentence}
    rows = []
    for arm, data in variance.get("arms", {}).items():
        for b in data.get("bins", []):
            rows.append(
                [
                    ARM_LABELS.get(arm, arm),
                    b["length"],
                    _fmt_float(b.get("relative_variance_geomean")),
                    f"[{_fmt_float(b.get('relative_variance_low'))}, {_fmt_float(b.get('relative_variance_high'))}]",
                    _fmt_float(b.get("relative_variance_median")),
                    _fmt_float(b.get("snr_mean")),
                    f"{b.get('n_defined', 0)}/{b.get('n_prompts', 0)}",
                    _fmt_float(b.get("zero_gradient_fraction")),
                    _fmt_float(b.get("noise_dominated_fraction")),
                    _fmt_float(b.get("deterministic_fraction")),
                ]
            )
    name = "variance_vs_length.png"
    if plots:
        plot_variance(variance, Path(out) / name)
    lines = [
        "## Gradient variance vs task length",
        "",
        f"Per-prompt gradient estimates at the checkpoint `{variance.get('checkpoint', '?')}` "
        f"({variance.get('repeats', '?')} independent estimates per prompt, all policy parameters). Relative variance "
        "is E‖g − ḡ‖² / ‖ḡ‖² (unbiased trace of the covariance over the squared norm of the mean); SNR is "
        "‖ḡ‖ / √(E‖g − ḡ‖²). Prompts whose mean gradient is exactly zero (e.g. a GRPO group with equal rewards) "
        "have no relative variance and are counted apart; a prompt is noise-dominated when ‖ḡ‖² ≤ tr Σ̂ / R (its "
        "mean gradient cannot be told from noise at R repeats, and its relative variance is an underestimate); "
        "deterministic when its R estimates agree to float rounding (no sampling noise: counted apart, not put on "
        "the log scale).",
        "",
        markdown_table(
            [
                "arm",
                "length",
                "rel. variance (geo-mean)",
                "95% CI",
                "median",
                "SNR (mean)",
                "defined",
                "zero-grad share",
                "noise-dominated share",
                "deterministic share",
            ],
            rows,
            align="lrrrrrrrrr",
        ),
        "",
        f"- {sentence}",
        "",
    ]
    return lines + ([f"![{name}]({name})", ""] if plots else []), verdict


def _fmt_float(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    return f"{v:.3g}"
