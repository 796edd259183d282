"""The `llm-rl compare` report: what each arm bought, with confidence intervals, from the runs' own records.

Everything here is computed from files on disk — each run's ``metrics.jsonl`` (the ``kind: "eval"`` records the
arms log at every budget interval, with the budget counters flattened in) and ``final_metrics.json``, plus the
variance probe's ``variance.json`` — so a report can be re-rendered from a finished (or half-finished) output
directory with ``llm-rl compare RECIPE --report-only``.

Layout read (written by `llm_rl.compare`)::

    OUTPUT_DIR/runs/<arm>-seed<k>/               one warm start
    OUTPUT_DIR/runs/ws<rate>/<arm>-seed<k>/      the low-pass-rate regime: one folder per warm-start target

Written: ``report.md``, ``summary.json``, ``evals.jsonl`` (every eval record of every run, tagged with arm, seed
and warm start: one file to load into a dataframe) and PNGs (pass@1 against generated tokens, verifier calls and
wall time; relative gradient variance against task length).

The verdict sentences are computed, never canned: a difference is called a difference only when its 95 % Welch
interval excludes zero, and a variance trend is called growing only when the slope of log10 relative variance
on length has a 95 % interval above zero.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_rl.analysis.variance_report import markdown_section
from llm_rl.analysis.verdicts import (
    ARM_LABELS,
    CONTRASTS,
    SEED_CLAIM,
    ci_dict,
    contrast_reading,
    performance_sentence,
    variance_sentence,
)
from llm_rl.harness.budget import AXES
from relabel_rl.report import MeanCI, first_crossing, format_ci, markdown_table, mean_ci, plot_mean_ci
from relabel_rl.rundir import jsonable, read_metrics

__all__ = [
    "ARM_LABELS",
    "RunRecord",
    "arm_summary",
    "load_runs",
    "performance_sentence",
    "variance_sentence",
    "write_report",
]

# The x axes of the learning-curve plots: (record key, axis label, file stem).
CURVE_AXES = (
    ("generated_tokens", "generated tokens", "pass1_vs_generated_tokens"),
    ("verifier_calls", "verifier calls", "pass1_vs_verifier_calls"),
    ("wall_time", "wall time (s)", "pass1_vs_wall_time"),
)
# Every budget counter (`llm_rl.harness.budget.AXES`) goes into summary.json; the table shows these, so named.
SPEND_AXES = AXES
TABLE_SPEND = {
    "generated_tokens": "generated tok",
    "prefill_tokens": "prefill tok",
    "verifier_calls": "verifier calls",
    "prompts": "prompts",
    "optimizer_steps": "opt steps",
    "wall_time": "wall (s)",
}
_RUN_NAME = re.compile(r"^(?P<arm>[A-Za-z_][A-Za-z0-9_]*)-seed(?P<seed>-?\d+)$")
_WS_NAME = re.compile(r"^ws(?P<rate>[0-9.]+)$")


@dataclass(frozen=True)
class RunRecord:
    """One (arm, seed, warm start) run as read back from disk.

    Attributes:
      arm, seed: from the directory name ``<arm>-seed<k>``.
      warm_start: the warm-start target pass rate of its folder ``ws<rate>``; None for the single warm start.
      path: the run directory.
      evals: its ``kind == "eval"`` records in logged order.
      final: ``final_metrics.json`` (what the arm's ``train`` returned); empty while the run is unfinished.
    """

    arm: str
    seed: int
    warm_start: float | None
    path: Path
    evals: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return bool(self.final)

    def curve(self, axis: str, metric: str = "pass@1") -> tuple[list[float], list[float]]:
        pts = [
            (float(r[axis]), float(r[metric])) for r in self.evals if r.get(axis) is not None and metric in r
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    def last_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}


def load_runs(output_dir: str | Path) -> list[RunRecord]:
    """Every run under ``output_dir/runs`` (finished or not), sorted by warm start, arm, seed."""
    root = Path(output_dir) / "runs"
    found: list[RunRecord] = []
    if not root.is_dir():
        return found
    candidates: list[tuple[Path, float | None]] = []
    for child in sorted(root.iterdir()):
        ws = _WS_NAME.match(child.name)
        if child.is_dir() and ws:
            candidates += [(grand, float(ws["rate"])) for grand in sorted(child.iterdir())]
        else:
            candidates.append((child, None))
    for path, ws_rate in candidates:
        m = _RUN_NAME.match(path.name)
        if not (path.is_dir() and m):
            continue
        evals = [r for r in read_metrics(path / "metrics.jsonl") if r.get("kind") == "eval"]
        final_file = path / "final_metrics.json"
        final = json.loads(final_file.read_text()) if final_file.exists() else {}
        found.append(RunRecord(m["arm"], int(m["seed"]), ws_rate, path, evals, final))
    order = {name: i for i, name in enumerate(ARM_LABELS)}
    found.sort(
        key=lambda r: (
            r.warm_start if r.warm_start is not None else -1.0,
            order.get(r.arm, 99),
            r.arm,
            r.seed,
        )
    )
    return found


# ---------------------------------------------------------------------------------------------------------------
# Per-arm statistics


def _final(run: RunRecord, key: str) -> float | None:
    value = run.final.get(key, run.last_eval().get(key))
    return None if value is None else float(value)


def _start(run: RunRecord, key: str) -> float | None:
    return float(run.evals[0][key]) if run.evals and key in run.evals[0] else None


def arm_summary(runs: Sequence[RunRecord], *, axis: str, threshold: float) -> dict[str, Any]:
    """Statistics over the seeds of one arm (one warm start): final pass@1 / pass@k, gain over the start, budget
    to reach ``threshold`` on ``axis``, and the spend on every axis."""
    finals = [_final(r, "pass@1") for r in runs]
    finals_k = [_final(r, "pass@k") for r in runs]
    starts = [_start(r, "pass@1") for r in runs]
    gains = [f - s for f, s in zip(finals, starts) if f is not None and s is not None]
    reach = [first_crossing(*r.curve(axis), threshold) for r in runs]
    reached = [b for b in reach if b is not None]
    spend = {a: mean_ci([v for r in runs if (v := _final_spend(r, a)) is not None]) for a in SPEND_AXES}
    ks = {int(r.last_eval().get("k", 0)) for r in runs if r.evals}
    return {
        "seeds": [r.seed for r in runs],
        "finished": sum(r.finished for r in runs),
        "final_pass@1": mean_ci([f for f in finals if f is not None]),
        "final_pass@k": mean_ci([f for f in finals_k if f is not None]),
        "k": max(ks) if ks else None,
        "start_pass@1": mean_ci([s for s in starts if s is not None]),
        "gain_pass@1": mean_ci(gains),
        "budget_to_threshold": mean_ci(reached),
        "budget_to_threshold_per_seed": reach,
        "seeds_reaching_threshold": len(reached),
        "spend": spend,
        "per_seed_final_pass@1": finals,
    }


def _final_spend(run: RunRecord, axis: str) -> float | None:
    budget = run.final.get("budget") if isinstance(run.final.get("budget"), Mapping) else None
    for source in (budget or {}, run.final, run.last_eval()):
        if source.get(axis) is not None:
            return float(source[axis])
    return None


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _clip(ci: MeanCI, low: float, high: float) -> MeanCI:
    """The interval cut to the range the quantity lives in (a pass rate in [0, 1], a budget >= 0) for display;
    with three seeds a t-interval easily pokes out of it. summary.json keeps the raw interval."""
    if math.isnan(ci.low):
        return ci
    return dataclasses.replace(ci, low=min(max(ci.low, low), high), high=max(min(ci.high, high), low))


def _fmt_budget(v: float, axis: str) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:.1f}" if axis == "wall_time" else f"{v:,.0f}"


def _ratio(a: MeanCI, b: MeanCI) -> str:
    if math.isnan(a.mean) or math.isnan(b.mean) or b.mean == 0:
        return "–"
    return f"{a.mean / b.mean:.2f}x"


def _group(runs: Sequence[RunRecord]) -> dict[float | None, dict[str, list[RunRecord]]]:
    groups: dict[float | None, dict[str, list[RunRecord]]] = {}
    for r in runs:
        groups.setdefault(r.warm_start, {}).setdefault(r.arm, []).append(r)
    return groups


def write_report(
    output_dir: str | Path,
    *,
    axis: str,
    limit: float,
    threshold: float,
    task: str,
    runs: Sequence[RunRecord] | None = None,
    variance: Mapping[str, Any] | None = None,
    warm_starts: Sequence[Mapping[str, Any]] = (),
    baseline: str = "grpo",
    title: str = "relabel-rl comparison",
    plots: bool = True,
) -> dict[str, Any]:
    """Write ``report.md``, ``summary.json``, ``evals.jsonl`` and the PNGs into ``output_dir``; return the summary.

    Args:
      output_dir: the compare output directory (runs are read from ``output_dir/runs`` unless ``runs`` is given).
      axis, limit: the budget axis and the per-run limit on it (the report's "equal budget").
      threshold: the held-out pass@1 whose first crossing is reported as "budget to threshold".
      task: the verifier name, for the text.
      variance: the probe's ``variance.json`` content, if it ran.
      warm_starts: ``{"target", "pass_rate", "steps", "path"}`` per warm start, for the text.
      baseline: the arm the ratios are taken against.
      plots: draw the PNGs (False: text and JSON only).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(load_runs(out) if runs is None else runs)
    groups = _group(runs)
    report = _Report(out, axis=axis, limit=limit, threshold=threshold, baseline=baseline, plots=plots)
    lines = [f"# {title}", "", report.intro(task), "", *_warm_start_section(warm_starts)]
    summary: dict[str, Any] = {
        "axis": axis,
        "limit": limit,
        "threshold": threshold,
        "task": task,
        "warm_starts": list(warm_starts),
        "groups": {},
        "sentences": [],
        "plots": [],
    }
    for ws, by_arm in groups.items():
        lines += report.group_section(ws, by_arm, summary)
    if len(groups) > 1 and all(ws is not None for ws in groups):
        lines += _regime_section(groups, out, axis=axis, threshold=threshold, summary=summary, plots=plots)
    if variance:
        text, verdict = markdown_section(variance, out, plots=plots)
        summary["variance"] = verdict
        summary["sentences"].append({"kind": "variance", **verdict})
        summary["plots"] += ["variance_vs_length.png"] if plots else []
        lines += text
    if not runs:
        lines += ["_No runs found yet._", ""]
    lines += [
        "## Files",
        "",
        "`summary.json` (every number above), `evals.jsonl` (all eval records, tagged), `runs/*/metrics.jsonl` "
        "(per-run logs: train and eval records with the budget counters), `variance.json` (the probe).",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    with open(out / "evals.jsonl", "w") as f:
        for r in runs:
            for e in r.evals:
                f.write(json.dumps({"arm": r.arm, "seed": r.seed, "warm_start": r.warm_start, **e}) + "\n")
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2))
    return summary


def _warm_start_section(warm_starts: Sequence[Mapping[str, Any]]) -> list[str]:
    if not warm_starts:
        return []
    rows = [
        [_fmt_rate(w.get("target")), f"{float(w.get('pass_rate', math.nan)):.3f}", w.get("steps", "–")]
        for w in warm_starts
    ]
    table = markdown_table(["target pass@1", "reached pass@1", "SFT steps"], rows, align="rrr")
    return ["## Warm start", "", table, ""]


@dataclass(frozen=True)
class _Report:
    """The settings every section of one report shares."""

    out: Path
    axis: str
    limit: float
    threshold: float
    baseline: str
    plots: bool

    @property
    def budget_text(self) -> str:
        return f"{_fmt_budget(self.limit, self.axis)} {self.axis.replace('_', ' ')} per run"

    def intro(self, task: str) -> str:
        axis, threshold = self.axis.replace("_", " "), self.threshold
        return (
            f"Task `{task}`; every arm trains from the same warm-started checkpoint until it has spent "
            f"{self.budget_text}. Pass@1 is greedy, on a held-out split never trained on; intervals are 95% "
            "Student-t over seeds (cut to the possible range in the tables). "
            f'"Budget to {threshold:g}" is the {axis} at the first evaluation with pass@1 ≥ '
            f"{threshold:g}, averaged over the seeds that reached it."
        )

    def group_section(
        self, ws: float | None, by_arm: Mapping[str, Sequence[RunRecord]], summary: dict[str, Any]
    ) -> list[str]:
        """One warm start's results: the table, the ratios and verdict sentences, the curves."""
        heading = "## Results" if ws is None else f"## Warm start target pass@1 = {ws:g}"
        stats = {arm: arm_summary(rs, axis=self.axis, threshold=self.threshold) for arm, rs in by_arm.items()}
        lines = [heading, "", self.results_table(stats), ""]
        sentences, ratio_lines = self.comparisons(stats, ws, summary)
        lines += ratio_lines
        overshoot = _overshoot_notes(stats, axis=self.axis, limit=self.limit)
        summary.setdefault("overshoot", []).extend({"warm_start": ws, **o} for o in overshoot)
        sentences += [o["text"] for o in overshoot]
        lines += [f"- {s}" for s in sentences] + ([""] if sentences else [])
        plot_names = self.curve_plots(ws, by_arm)
        lines += [f"![{n}]({n})" for n in plot_names] + [""]
        summary["plots"] += plot_names
        summary["groups"]["single" if ws is None else f"{ws:g}"] = {
            arm: {key: (ci_dict(v) if isinstance(v, MeanCI) else v) for key, v in s.items() if key != "spend"}
            | {"spend": {a: ci_dict(c) for a, c in s["spend"].items()}}
            for arm, s in stats.items()
        }
        return lines

    def results_table(self, stats: Mapping[str, Mapping[str, Any]]) -> str:
        k = next((s["k"] for s in stats.values() if s["k"]), None)
        headers = [
            "arm", "seeds (done)", "final pass@1", f"final pass@{k or 'k'}", "gain over start",
            f"budget to {self.threshold:g}", *TABLE_SPEND.values(),
        ]  # fmt: skip
        rows = []
        for arm, s in stats.items():
            reach = s["seeds_reaching_threshold"]
            btt = format_ci(_clip(s["budget_to_threshold"], 0.0, math.inf), digits=0) if reach else "never"
            rows.append(
                [
                    ARM_LABELS.get(arm, arm),
                    f"{len(s['seeds'])} ({s['finished']})",
                    format_ci(_clip(s["final_pass@1"], 0.0, 1.0)),
                    format_ci(_clip(s["final_pass@k"], 0.0, 1.0)),
                    format_ci(_clip(s["gain_pass@1"], -1.0, 1.0)),
                    f"{btt} ({reach}/{len(s['seeds'])} seeds)",
                    *[_fmt_budget(s["spend"][a].mean, a) for a in TABLE_SPEND],
                ]
            )
        return markdown_table(headers, rows, align="ll" + "r" * (len(headers) - 2))

    def comparisons(
        self, stats: Mapping[str, Mapping[str, Any]], ws: float | None, summary: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """The verdict sentences (each arm against the baseline; relabel against MC values; the `CONTRASTS` that
        isolate an ingredient) and the ratio table."""
        sentences: list[str] = []
        ratio_lines: list[str] = []
        baseline = self.baseline
        if baseline in stats and len(stats) > 1:
            ratio_rows = []
            for arm, s in stats.items():
                if arm == baseline:
                    continue
                ratio_rows.append(_ratio_row(arm, s, baseline, stats[baseline]))
                sentence, verdict = performance_sentence(arm, baseline, stats, budget_text=self.budget_text)
                if arm == "relabel" and baseline == "grpo":
                    sentence += " " + SEED_CLAIM[verdict["verdict"]]
                if reading := contrast_reading(verdict):
                    sentence += " " + reading
                sentences.append(sentence)
                summary["sentences"].append({"warm_start": ws, **verdict, "text": sentence})
            headers = ["arms", "final pass@1", f"budget to {self.threshold:g}", "wall time", "verifier calls"]
            ratio_lines = [
                "Ratios (means; budget ratio <1 means the arm reached the threshold with less):",
                "",
                markdown_table(headers, ratio_rows, align="lrrrr"),
                "",
            ]
        if "relabel" in stats and "mc_value" in stats:
            sentence, verdict = performance_sentence(
                "relabel", "mc_value", stats, budget_text=self.budget_text
            )
            sentences.append(sentence + " (If MC values match the tree, the tree is not what helps.)")
            summary["sentences"].append({"warm_start": ws, **verdict, "text": sentence})
        for a, b in CONTRASTS:  # the pairs that differ in one ingredient (the baseline's are above)
            if a in stats and b in stats and baseline not in (a, b):
                sentence, verdict = performance_sentence(a, b, stats, budget_text=self.budget_text)
                if reading := contrast_reading(verdict):
                    sentence += " " + reading
                sentences.append(sentence)
                summary["sentences"].append({"warm_start": ws, **verdict, "text": sentence})
        return sentences, ratio_lines

    def curve_plots(self, ws: float | None, by_arm: Mapping[str, Sequence[RunRecord]]) -> list[str]:
        """The pass@1 learning curves against each axis of `CURVE_AXES`; returns the PNG names written."""
        names = []
        suffix = "" if ws is None else f"_ws{ws:g}"
        for key, label, stem in CURVE_AXES if self.plots else ():
            curves = {ARM_LABELS.get(a, a): [r.curve(key) for r in rs] for a, rs in by_arm.items()}
            if not any(xs for runs_ in curves.values() for xs, _ in runs_):
                continue
            name = f"{stem}{suffix}.png"
            plot_mean_ci(
                self.out / name,
                curves,
                xlabel=label,
                ylabel="held-out pass@1 (greedy)",
                title=f"pass@1 vs {label}" + ("" if ws is None else f" (warm start {ws:g})"),
                hline=self.threshold,
                hline_label=f"threshold {self.threshold:g}",
                clip=(0.0, 1.0),
            )
            names.append(name)
        return names


def _ratio_row(arm: str, s: Mapping[str, Any], baseline: str, b: Mapping[str, Any]) -> list[str]:
    all_reached = s["seeds_reaching_threshold"] == len(s["seeds"]) and b["seeds_reaching_threshold"] == len(
        b["seeds"]
    )
    return [
        f"{ARM_LABELS.get(arm, arm)} / {ARM_LABELS.get(baseline, baseline)}",
        _ratio(s["final_pass@1"], b["final_pass@1"]),
        _ratio(s["budget_to_threshold"], b["budget_to_threshold"])
        if all_reached
        else "– (not all seeds reached it)",
        _ratio(s["spend"]["wall_time"], b["spend"]["wall_time"]),
        _ratio(s["spend"]["verifier_calls"], b["spend"]["verifier_calls"]),
    ]


def _overshoot_notes(
    stats: Mapping[str, Mapping[str, Any]], *, axis: str, limit: float
) -> list[dict[str, Any]]:
    """Arms whose final spend on the budget axis passed the limit by more than 10 %: their optimizer step is coarse
    against the budget (a step in flight finishes), so "equal budget" holds only roughly for the final numbers."""
    notes = []
    for arm, s in stats.items():
        spent = s["spend"].get(axis)
        if spent is None or math.isnan(spent.mean) or spent.mean <= 1.1 * limit:
            continue
        pct = 100.0 * (spent.mean / limit - 1.0)
        notes.append(
            {
                "arm": arm,
                "mean_spend": spent.mean,
                "text": (
                    f"Note: {ARM_LABELS.get(arm, arm)} spent {_fmt_budget(spent.mean, axis)} "
                    f"{axis.replace('_', ' ')} on average, {pct:.0f}% over the limit of {_fmt_budget(limit, axis)} "
                    "(its last step finished past the limit): read its curve at equal spend, or raise budget.limit "
                    "so that one step is a small part of it."
                ),
            }
        )
    return notes


def _fmt_rate(v: Any) -> str:
    return "–" if v is None else f"{float(v):g}"


def _regime_section(
    groups: Mapping[float | None, Mapping[str, Sequence[RunRecord]]],
    out: Path,
    *,
    axis: str,
    threshold: float,
    summary: dict[str, Any],
    plots: bool = True,
) -> list[str]:
    """The low-pass-rate regime: each arm's gain in pass@1 as a function of the warm start's pass rate."""
    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    rows = []
    for ws, by_arm in sorted(groups.items(), key=lambda kv: kv[0] or 0.0):
        for arm, rs in by_arm.items():
            s = arm_summary(rs, axis=axis, threshold=threshold)
            rows.append(
                [
                    f"{ws:g}",
                    ARM_LABELS.get(arm, arm),
                    format_ci(_clip(s["start_pass@1"], 0.0, 1.0)),
                    format_ci(_clip(s["gain_pass@1"], -1.0, 1.0)),
                ]
            )
    # one "run" per seed index: x = warm-start target, y = that seed's gain
    order = list(ARM_LABELS)
    all_arms = {a for by_arm in groups.values() for a in by_arm}
    for arm in sorted(all_arms, key=lambda a: (order.index(a) if a in order else len(order), a)):
        per_seed: dict[int, tuple[list[float], list[float]]] = {}
        for ws, by_arm in sorted(groups.items(), key=lambda kv: kv[0] or 0.0):
            for r in by_arm.get(arm, []):
                f, s0 = _final(r, "pass@1"), _start(r, "pass@1")
                if f is not None and s0 is not None:
                    xs, ys = per_seed.setdefault(r.seed, ([], []))
                    xs.append(float(ws or 0.0))
                    ys.append(f - s0)
        curves[ARM_LABELS.get(arm, arm)] = list(per_seed.values())
    name = "gain_vs_warm_start.png"
    text = [
        "## Low-pass-rate regime",
        "",
        markdown_table(["warm start", "arm", "start pass@1", "gain"], rows, align="rlrr"),
        "",
    ]
    if plots:
        plot_mean_ci(
            out / name,
            curves,
            xlabel="warm-start target pass@1",
            ylabel="pass@1 gained by training",
            title="Learning from a low pass rate",
            markers=True,
        )
        summary["plots"].append(name)
        text += [f"![{name}]({name})", ""]
    return text
