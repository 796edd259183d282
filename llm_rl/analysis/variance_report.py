"""The variance probe's part of the report: its plot and its markdown section (the numbers come from
`llm_rl.analysis.variance_probe` / `variance_stats`, the verdict sentence from `llm_rl.analysis.verdicts`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_rl.analysis.verdicts import ARM_LABELS, variance_sentence
from relabel_rl.report import markdown_table, new_grid, save_grid, write_table

__all__ = ["finite_positive", "markdown_section", "on_log_scale", "plot_variance"]


def on_log_scale(rec: Mapping[str, Any]) -> bool:
    """A prompt whose relative variance enters the log-scale statistics: defined, positive, not deterministic."""
    return finite_positive(rec.get("relative_variance")) and not rec.get("deterministic")


def finite_positive(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v) and v > 0


def plot_variance(variance: Mapping[str, Any], path: str | Path) -> Path:
    """Per arm, the pooled relative variance per length with its 95 % bootstrap interval (log y): per gradient
    (top) and per 1,000 generated tokens (bottom). PNG at ``path`` and PDF beside it."""
    fig, grid, colours = new_grid(2, 1, width=3.4, height=4.4)
    axes = [row[0] for row in grid]
    arms = variance.get("arms", {})
    panels = (
        ("relative_variance", "relative_variance_low", "relative_variance_high", "trend", "per gradient"),
        ("relative_variance_per_1k_tokens", "per_1k_tokens_low", "per_1k_tokens_high", "trend_per_token",
         "per 1k generated tokens"),
    )  # fmt: skip
    for ax, (key, low_key, high_key, trend_key, what) in zip(axes, panels):
        plotted = (
            False  # a log axis with nothing positive on it cannot be laid out (every gradient exactly zero)
        )
        for i, (arm, data) in enumerate(arms.items()):
            bins = [b for b in data.get("bins", []) if finite_positive(b.get(key))]
            shift = (i - (len(arms) - 1) / 2) * 0.08
            xs = [b["length"] + shift for b in bins]
            ys = [b[key] for b in bins]
            plotted = plotted or bool(ys)
            # a percentile interval need not contain the point estimate of a ratio: clamp the bars at it
            lo = [
                max(0.0, y - b[low_key]) if finite_positive(b.get(low_key)) else 0 for y, b in zip(ys, bins)
            ]
            hi = [
                max(0.0, b[high_key] - y) if finite_positive(b.get(high_key)) else 0 for y, b in zip(ys, bins)
            ]
            t = data.get(trend_key) or {}
            slope = t.get("slope")
            label = ARM_LABELS.get(arm, arm) + (
                f" ({slope:+.2f}/step)" if isinstance(slope, float) and math.isfinite(slope) else ""
            )
            ax.errorbar(xs, ys, yerr=[lo, hi], color=colours[i % len(colours)], marker="o", capsize=2,
                        linewidth=1.2, markersize=3, label=label)  # fmt: skip
        ax.set_yscale("log" if plotted else "linear")
        ax.set_ylabel(f"rel. variance\n{what}")
        ax.grid(True, alpha=0.3, which="both")
    axes[-1].set_xlabel("task length (operations)")
    lengths = variance.get("lengths") or []
    if lengths:
        axes[-1].set_xticks(lengths)
    axes[0].set_title(f"Gradient noise vs length ({variance.get('repeats', '?')} estimates/prompt, 95% CI)")
    handles, labels = axes[0].get_legend_handles_labels()
    return save_grid(fig, path, handles, labels)


def markdown_section(
    variance: Mapping[str, Any], out: str | Path, *, plots: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """The report's "Gradient variance vs task length" section (markdown lines) and its computed verdict (with
    ``text``); draws ``variance_vs_length.png`` (and its PDF) into ``out`` and writes the table under
    ``out/tables`` when ``plots``."""
    sentence, verdict = variance_sentence(variance)
    verdict = {**verdict, "text": sentence}
    rows = []
    for arm, data in variance.get("arms", {}).items():
        for b in data.get("bins", []):
            rows.append(
                [
                    ARM_LABELS.get(arm, arm),
                    b["length"],
                    b.get("n_prompts", 0),
                    f"{_fmt_float(b.get('relative_variance'))} [{_fmt_float(b.get('relative_variance_low'))}, "
                    f"{_fmt_float(b.get('relative_variance_high'))}]",
                    f"{_fmt_float(b.get('relative_variance_per_1k_tokens'))} [{_fmt_float(b.get('per_1k_tokens_low'))}, "
                    f"{_fmt_float(b.get('per_1k_tokens_high'))}]",
                    _fmt_float(b.get("generated_tokens_per_estimate")),
                    _fmt_float(b.get("zero_share")),
                    _fmt_float(b.get("capped_share")),
                    _fmt_float(b.get("noise_dominated_share")),
                ]
            )
    name = "variance_vs_length.png"
    headers = ["arm", "length", "prompts", "rel. variance per gradient [95% CI]",
               "per 1k generated tokens [95% CI]", "tokens / estimate", "all-zero share", "one-non-zero share",
               "noise-dominated share"]  # fmt: skip
    table = (
        write_table(Path(out) / "tables", "variance_probe", headers, rows, align="lrrrrrrrr")
        if plots
        else markdown_table(headers, rows, align="lrrrrrrrr")
    )
    if plots:
        plot_variance(variance, Path(out) / name)
    skipped = variance.get("skipped") or {}
    lines = [
        "## Gradient variance vs task length",
        "",
        f"Per-prompt gradient estimates at the checkpoint `{variance.get('checkpoint', '?')}` "
        f"({variance.get('prompts_per_length', '?')} prompts per length x {variance.get('repeats', '?')} "
        "independent estimates per prompt, all trainable LM parameters). Per length, the *pooled* relative "
        "variance Σ tr Σ̂ / Σ (‖ḡ‖² − tr Σ̂ / R) over all prompts (unbiased numerator and denominator; 95% "
        "percentile bootstrap over prompts), and the same per 1,000 generated tokens (times the tokens one estimate "
        "generated / 1000: what a token budget buys). Prompts whose estimates were all zero (a GRPO group with "
        "equal rewards) or all but one zero (whose per-prompt ratio would be exactly R) stay in the pooled sums; "
        "their shares are listed, as is the share of prompts whose own mean gradient cannot be told from noise.",
        "",
        table,
        "",
        f"- {sentence}",
        *(f"- {arm}: not probed ({why})" for arm, why in skipped.items()),
        "",
    ]
    return lines + ([f"![{name}]({name})", ""] if plots else []), verdict


def _fmt_float(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    return f"{v:.3g}"
