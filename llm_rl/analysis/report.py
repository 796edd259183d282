"""The `llm-rl compare` report: what each arm and variant bought, with intervals over seeds x items, from the
runs' own records.

Everything here is computed from files on disk — each run's ``config.yaml``, ``meta.json``, ``metrics.jsonl`` (the
eval records with the budget counters and every item's result) and ``final_metrics.json``, the warm start's
record, and the variance probe's ``variance.json`` — so a report can be re-rendered from a finished (or
half-finished, or extended) output directory with ``llm-rl compare RECIPE --report-only``.

Statistics (`relabel_rl.stats`): every interval is a 95 % interval over seeds x items (crossed random effects,
Satterthwaite t); every difference is paired by seed and by item; the contrasts are one family with Holm-adjusted
p-values; each difference states its minimum detectable difference and how much of its variance comes from
training (seeds) versus the size of the evaluation set (items), and how many seeds would bring its interval to
±0.05. The verdict sentences are computed, never canned.

Written: ``report.md``; ``summary.json`` (every number); ``evals.jsonl`` (every eval record, tagged); every table
as ``tables/<name>.{md,csv,tex}``; every figure as PNG and PDF (``headline`` for a sweep, the learning curves per
group, ``variance_vs_length``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_rl.analysis.estimates import EQUAL_SPEND_AXES, GroupResult, analyse_group, btt_text
from llm_rl.analysis.family import contrast_family
from llm_rl.analysis.runs import RunRecord, load_runs
from llm_rl.analysis.sweep import budget_sentence, sweep_section
from llm_rl.analysis.variance_report import markdown_section
from llm_rl.analysis.verdicts import (
    ARM_LABELS,
    below_start_text,
    conclusion_lines,
    fmt_budget,
    fmt_estimate,
    label,
)
from llm_rl.config import ExperimentConfig
from llm_rl.grid import sweep_budget
from relabel_rl.report import MeanCI, plot_mean_ci, write_table
from relabel_rl.rundir import jsonable
from relabel_rl.stats import CrossedEstimate

__all__ = ["ARM_LABELS", "RunRecord", "load_runs", "write_report"]

# The x axes of the learning-curve plots: (record key, axis label, file stem).
CURVE_AXES = (
    ("generated_tokens", "generated tokens", "pass1_vs_generated_tokens"),
    ("total_tokens", "total tokens (prefill + generated)", "pass1_vs_total_tokens"),
    ("verifier_calls", "verifier calls", "pass1_vs_verifier_calls"),
    ("wall_time", "wall time (s)", "pass1_vs_wall_time"),
)
SPEND_COLUMNS = {
    "generated_tokens": "generated tok",
    "prefill_tokens": "prefill tok",
    "total_tokens": "total tok",
    "outcome_verifier_calls": "outcome checks",
    "step_verifier_calls": "step checks",
    "prompts": "prompts",
    "optimizer_steps": "opt steps",
    "wall_time": "wall (s)",
}
TARGET_HALF_WIDTH = 0.05


def _group_title(g: GroupResult, knob: str) -> str:
    if g.sweep_value is not None:
        return f"{knob} {g.sweep_value:g}"
    if g.warm_start is not None:
        return f"warm start {g.warm_start:g}"
    return "all runs"


def _est(e: CrossedEstimate | None) -> dict[str, Any] | None:
    return None if e is None else e.as_dict()


def _ci(c: MeanCI) -> dict[str, Any]:
    return {"mean": c.mean, "low": c.low, "high": c.high, "n": c.n, "std": c.std}


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def write_report(
    output_dir: str | Path,
    cfg: ExperimentConfig,
    *,
    runs: Sequence[RunRecord] | None = None,
    variance: Mapping[str, Any] | None = None,
    warm_starts: Sequence[Mapping[str, Any]] = (),
    eval_sets: Mapping[str, Mapping[str, Any]] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the report (module docstring) into ``output_dir``; return the summary.

    Args:
      output_dir: the compare output directory (runs are read from ``output_dir/runs`` unless ``runs`` is given).
      cfg: the recipe (budget, thresholds, baseline, declared contrasts, sweep knob, task).
      variance: the probe's ``variance.json`` content, if it ran.
      warm_starts: ``{"target", "pass_rate", "steps", "path", ...}`` per warm start.
      eval_sets: per group key, the evaluation rows' description (``llm_rl.compare``: split, seed, rows, digest,
        overlap with the warm start's validation rows).
      plots: draw the figures (False: text, tables and JSON only).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(load_runs(out) if runs is None else runs)
    report = _Report(out, cfg, plots, dict(eval_sets or {}))
    groups = report.analyse(runs)
    summary: dict[str, Any] = {
        "axis": cfg.budget.axis,
        "limit": cfg.budget.limit,
        "limit_scaled_by": cfg.compare.sweep.knob if cfg.compare.sweep.scale_budget else None,
        "task": cfg.task.verifier,
        "baseline": cfg.compare.baseline,
        "warm_starts": list(warm_starts),
        "eval_sets": dict(eval_sets or {}),
        "groups": {},
        "sentences": [],
        "plots": [],
    }
    lines = [f"# relabel-rl comparison on {cfg.task.verifier}", "", report.intro(groups), ""]
    missed = [w for w in warm_starts if w.get("target") is not None and w.get("pass_rate", 1.0) < w["target"]]
    lines += [
        f"**Warning: the warm start missed its target** ({w['pass_rate']:.3f} < {w['target']:g} on its validation "
        "rows): the arms start lower than the recipe intended."
        for w in missed
    ] + ([""] if missed else [])
    lines += report.settings_section(groups)
    lines += report.warm_start_section(warm_starts, groups)
    if cfg.compare.sweep.values and groups:
        text, headline = sweep_section(
            [g for g in groups if g.sweep_value is not None], out, knob=cfg.compare.sweep.knob,
            baseline=cfg.compare.baseline, plots=plots,
        )  # fmt: skip
        summary["headline"] = headline
        summary["plots"] += ["headline.png"] if plots else []
        lines += text
    for g in groups:
        lines += report.group_section(g, summary)
    lines += report.contrast_section(groups, summary)
    lines += report.uncertainty_section(groups, summary)
    if len(groups) > 1 and all(g.warm_start is not None for g in groups):
        lines += report.regime_section(groups, summary)
    if variance:
        text, verdict = markdown_section(variance, out, plots=plots)
        summary["variance"] = verdict
        summary["sentences"].append({"kind": "variance", **verdict})
        summary["plots"] += ["variance_vs_length.png"] if plots else []
        lines += text
    if not runs:
        lines += ["_No runs found yet._", ""]
    lines += conclusion_lines(summary, knob=report.knob) + report.files_section(runs, variance)
    (out / "report.md").write_text("\n".join(lines))
    with open(out / "evals.jsonl", "w") as f:
        for r in runs:
            tags = {"variant": r.name, "arm": r.arm, "seed": r.seed, "feedback": r.feedback, "group": r.group,
                    "sweep_value": r.sweep_value, "warm_start": r.warm_start}  # fmt: skip
            for e in r.evals:
                f.write(json.dumps(jsonable({**tags, **e})) + "\n")
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Sections


class _Report:
    """The settings every section of one report shares, and the sections."""

    def __init__(self, out: Path, cfg: ExperimentConfig, plots: bool, eval_sets: dict[str, Any]) -> None:
        self.out, self.cfg, self.plots, self.eval_sets = out, cfg, plots, eval_sets
        self.axis = cfg.budget.axis
        self.knob = cfg.compare.sweep.knob

    def table(self, name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
        return write_table(self.out / "tables", name, headers, rows, align=align)

    def analyse(self, runs: Sequence[RunRecord]) -> list[GroupResult]:
        by_group: dict[str, list[RunRecord]] = {}
        for r in runs:
            by_group.setdefault(r.group or "single", []).append(r)
        c = self.cfg.compare
        return [
            analyse_group(
                key,
                rs,
                baseline=c.baseline,
                axis=self.axis,
                threshold=c.pass_threshold,
                threshold_gain=c.threshold_gain,
            )
            for key, rs in by_group.items()
        ]

    def intro(self, groups: Sequence[GroupResult]) -> str:
        c = self.cfg.compare
        threshold = (
            f"the start's pass@1 + {c.threshold_gain:g}"
            if c.threshold_gain is not None
            else f"{c.pass_threshold:g}"
        )
        feedbacks = sorted({v.feedback for g in groups for v in g.infos})
        return (
            f"Every run trains from one warm-started checkpoint until it has spent {budget_sentence(self.cfg, groups)}. "
            "**Feedback** (`task.feedback`, stated on every row below): "
            + ", ".join(f"`{f}`" for f in feedbacks or ["outcome"])
            + " — `outcome`: every arm sees only the verifier's score of a finished completion; `steps`: arms may "
            "also use per-step checks. **Evaluation**: greedy pass@1 on held-out test rows no arm trains on (the "
            "rows of each table are named with it); pass@k from k samples. **Statistics**: 95% intervals over "
            "seeds x items (crossed random effects, Satterthwaite t); differences are paired by seed and item; "
            f'contrasts form one family with Holm-adjusted p-values. "Budget to threshold" is the spend at the '
            f"first evaluation after the start with pass@1 ≥ {threshold}; a start that already meets it says so."
        )

    def limit_of(self, g: GroupResult) -> float:
        """The budget limit of ``g``'s runs (`llm_rl.grid.sweep_budget`: scaled by the sweep value or not)."""
        return sweep_budget(self.cfg, g.sweep_value).limit

    def eval_set_text(self, key: str, g: GroupResult | None = None) -> str:
        e = self.eval_sets.get(key)
        if not e:
            n = g.start.get("n") if g is not None else None
            return f"test rows (n = {n})" if n else "test rows"
        text = f"{e['split']} split, n = {e['rows']} (seed {e['seed']}, digest {e['digest']})"
        if e.get("overlap_with_validation") is not None:
            text += f"; {e['overlap_with_validation']} of them also among the warm start's validation rows"
        return text

    def settings_section(self, groups: Sequence[GroupResult]) -> list[str]:
        rows, notes = [], []
        names: dict[str, list[RunRecord]] = {}
        for g in groups:
            for name, rs in g.runs.items():
                names.setdefault(name, []).extend(rs)
        for name, rs in names.items():
            r = rs[0]
            finished = [x for x in rs if x.finished]
            calls = {
                a: _mean([x.spend(a) for x in finished])
                for a in ("outcome_verifier_calls", "step_verifier_calls")
            }
            rows.append([name, r.arm, r.feedback, ", ".join(f"{k}={v}" for k, v in r.overrides.items()) or "–",
                         f"{len(finished)}/{len(rs)}", fmt_budget(calls["outcome_verifier_calls"], "calls"),
                         fmt_budget(calls["step_verifier_calls"], "calls")])  # fmt: skip
            if r.feedback == "outcome" and calls["step_verifier_calls"] > 0:
                notes.append(
                    f"- **Note**: `{name}` is labelled `outcome` but called the verifier's step checks "
                    f"{fmt_budget(calls['step_verifier_calls'], 'calls')} times per run: its arm does not honour "
                    "`task.feedback` (the harness's metered verifier refuses step checks under `outcome`: a run "
                    "made before that rule, or an arm around it), so its numbers mix in per-step supervision."
                )
        headers = [
            "variant",
            "arm",
            "feedback",
            "overrides",
            "runs done",
            "outcome checks / run",
            "step checks / run",
        ]
        if not rows:
            return []
        return [
            "## Settings",
            "",
            "Which `task.feedback` produced each variant's numbers, and the verifier calls each run made on average "
            "(counted by the harness's metered verifier, which refuses step checks under `outcome`). Each group's "
            "spend on every budget axis, and every variant's pass@1 at the cheapest match on each axis, are under "
            "its results.",
            "",
            self.table("settings", headers, rows, "llllrrr"),
            "",
            *notes,
            *([""] if notes else []),
        ]

    def warm_start_section(
        self, warm_starts: Sequence[Mapping[str, Any]], groups: Sequence[GroupResult]
    ) -> list[str]:
        if not warm_starts:
            return []
        rows = []
        for w in warm_starts:
            target = "–" if w.get("target") is None else f"{float(w['target']):g}"
            val = f"{float(w.get('pass_rate', math.nan)):.3f} (n = {w.get('held_out_rows', '?')})"
            starts = [g for g in groups if g.warm_start == w.get("target") or g.warm_start is None]
            test = (
                "; ".join(
                    f"{_group_title(g, self.knob)}: {fmt_estimate(g.start.get('estimate'))}" for g in starts
                )
                or "–"
            )
            rows.append([target, val, test, w.get("steps", "–"), json.dumps(w.get("difficulty", {}))])
        headers = ["target pass@1", "validation pass@1 (stopping rule)", "start on the test rows (used everywhere)",
                   "SFT steps", "difficulty"]  # fmt: skip
        return [
            "## Warm start",
            "",
            "The stopping rule reads the warm start's own validation rows; every start figure in this report is the "
            "warm start scored on the test rows of its table (one figure per row set, identical across runs).",
            "",
            self.table("warm_start", headers, rows, "rrlrl"),
            "",
        ]

    def group_section(self, g: GroupResult, summary: dict[str, Any]) -> list[str]:
        """One group: start, results, spend, equal-spend tables, curves."""
        title = _group_title(g, self.knob)
        lines = [f"## Results: {title}" if g.key != "single" else "## Results", ""]
        start = g.start
        same = (
            "identical for all"
            if start.get("identical")
            else f"{start.get('distinct')} different values over"
        )
        lines += [
            f"Evaluation rows: {self.eval_set_text(g.key, g)}. Start (the warm start on these rows): "
            f"{fmt_estimate(start.get('estimate'))}, {same} {start.get('runs', 0)} runs. Threshold: {g.threshold:.3f}.",
            "",
            self.results_table(g),
            "",
            self.spend_table(g),
            "",
        ]
        equal = self.equal_table(g)
        if equal:
            lines += [
                f"At the cheapest match on every other budget axis (the runs stopped on {self.axis.replace('_', ' ')}): "
                "every variant's pass@1 (and its paired difference to its baseline) at the smallest final spend any "
                "run of this group reached on that axis, linearly interpolated between evaluations — so an equal "
                "budget on one axis cannot hide a large difference on another.",
                "",
                equal,
                "",
            ]
        notes = self.overshoot_notes(g)
        below = [{"variant": name, **e} for name, es in g.below_start.items() for e in es]
        if below:
            notes.append(f"Note: {below_start_text(below)}")
            where = f" at {_group_title(g, self.knob)}" if g.key != "single" else ""
            summary.setdefault("below_start", []).extend({**e, "group": g.key, "where": where} for e in below)
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        names = self.curve_plots(g)
        lines += [f"![{n}]({n})" for n in names] + ([""] if names else [])
        summary["plots"] += names
        summary["groups"][g.key] = self.group_summary(g)
        return lines

    def results_table(self, g: GroupResult) -> str:
        base_label = label(self.cfg.compare.baseline)
        k = next((s.get("k") for s in g.stats.values() if s.get("k")), None)
        headers = ["variant", "feedback", "seeds (done)", "final pass@1", f"final pass@{k or 'k'}", "gain over start",
                   f"− {base_label} (paired)", f"budget to {g.threshold:.3f}"]  # fmt: skip
        rows = []
        for name, s in g.stats.items():
            fb = g.info(name).feedback
            rows.append([label(name), fb, f"{len(s['seeds'])} ({s['finished']})" + ("" if s["per_item"] else "*"),
                         fmt_estimate(s.get("final")), fmt_estimate(s.get("final_pass@k")),
                         fmt_estimate(s.get("gain"), signed=True), fmt_estimate(g.vs_baseline.get(name), signed=True),
                         btt_text(s["budget_to_threshold"], lambda v: fmt_budget(v, self.axis))])  # fmt: skip
        text = self.table(f"results_{g.key}", headers, rows, "llrrrrrr")
        if any(not s["per_item"] for s in g.stats.values() if s["finished"]):
            text += "\n\n\\* per-seed values only (runs without per-item results, or on different rows)"
        return text

    def spend_table(self, g: GroupResult) -> str:
        headers = ["variant", "feedback", *SPEND_COLUMNS.values()]
        rows = [
            [label(name), g.info(name).feedback, *[fmt_budget(s["spend"][a].mean, a) for a in SPEND_COLUMNS]]
            for name, s in g.stats.items()
        ]
        return "Spend (mean per run):\n\n" + self.table(
            f"spend_{g.key}", headers, rows, "ll" + "r" * len(SPEND_COLUMNS)
        )

    def equal_table(self, g: GroupResult) -> str:
        """One row per (axis, variant): pass@1 at the axis's cheapest match and the paired difference there (long
        form: seven axes side by side would not fit a page)."""
        rows = []
        for a in (a for a in EQUAL_SPEND_AXES if a in g.equal):
            at = f"{fmt_budget(g.equal[a]['at'], a)}{' s' if a == 'wall_time' else ''} {a.replace('_', ' ')}"
            for name in g.stats:
                e = g.equal[a]["variants"].get(name, {})
                rows.append([at, label(name), g.info(name).feedback, fmt_estimate(e.get("pass@1")),
                             fmt_estimate(e.get("vs_baseline"), signed=True)])  # fmt: skip
        if not rows:
            return ""
        headers = ["matched at", "variant", "feedback", "pass@1 there", "− baseline (paired)"]
        return self.table(f"equal_spend_{g.key}", headers, rows, "lllrr")

    def overshoot_notes(self, g: GroupResult) -> list[str]:
        """Variants whose final spend on the budget axis passed the limit by more than 10 %."""
        notes, limit = [], self.limit_of(g)
        for name, s in g.stats.items():
            spent = s["spend"].get(self.axis)
            if spent is None or math.isnan(spent.mean) or spent.mean <= 1.1 * limit:
                continue
            pct = 100.0 * (spent.mean / limit - 1.0)
            notes.append(
                f"Note: {label(name)} spent {fmt_budget(spent.mean, self.axis)} {self.axis.replace('_', ' ')} on "
                f"average, {pct:.0f}% over the limit of {fmt_budget(limit, self.axis)} (its last step finished "
                "past the limit): read its curve at equal spend, or raise budget.limit so one step is a small part."
            )
        return notes

    def curve_plots(self, g: GroupResult) -> list[str]:
        names = []
        suffix = "" if g.key == "single" else f"_{g.key}"
        for key, xlabel, stem in CURVE_AXES if self.plots else ():
            curves = {
                f"{label(n)} ({g.info(n).feedback})": [r.curve(key) for r in rs] for n, rs in g.runs.items()
            }
            if not any(xs for runs_ in curves.values() for xs, _ in runs_):
                continue
            name = f"{stem}{suffix}.png"
            plot_mean_ci(self.out / name, curves, xlabel=xlabel, ylabel="held-out pass@1 (greedy)",
                         title=f"pass@1 vs {xlabel}" + ("" if g.key == "single" else f" ({_group_title(g, self.knob)})"),
                         hline=g.threshold, hline_label=f"threshold {g.threshold:.3f}", clip=(0.0, 1.0))  # fmt: skip
            names.append(name)
        return names

    def group_summary(self, g: GroupResult) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, s in g.stats.items():
            b = s["budget_to_threshold"]
            out[name] = {
                "arm": g.info(name).arm,
                "feedback": g.info(name).feedback,
                "overrides": dict(g.runs[name][0].overrides),
                "seeds": s["seeds"],
                "finished": s["finished"],
                "per_item": s["per_item"],
                "final_pass@1": _est(s.get("final")),
                "final_pass@k": _est(s.get("final_pass@k")),
                "gain_pass@1": _est(s.get("gain")),
                "vs_baseline": _est(g.vs_baseline.get(name)),
                "baseline": g.baseline_of.get(name),
                "budget_to_threshold": {
                    **b,
                    "spend": _ci(b["spend"]),
                    "text": btt_text(b, lambda v: f"{v:g}"),
                },
                "spend": {a: _ci(c) for a, c in s["spend"].items()},
                "equal_spend": {
                    a: {
                        "at": g.equal[a]["at"],
                        **{k: _est(v) for k, v in g.equal[a]["variants"].get(name, {}).items()},
                    }
                    for a in g.equal
                },
            }
        return {"start": {k: (_est(v) if isinstance(v, CrossedEstimate) else v) for k, v in g.start.items()
                          if k != "items"}, "threshold": g.threshold, "sweep_value": g.sweep_value,
                "warm_start": g.warm_start, "variants": out}  # fmt: skip

    def contrast_section(self, groups: Sequence[GroupResult], summary: dict[str, Any]) -> list[str]:
        """Every derived contrast of every group as one family (`llm_rl.analysis.family`): the table and the
        sentences."""
        c = self.cfg.compare
        found = contrast_family(
            groups, baseline=c.baseline, declared=c.contrasts, title=lambda g: _group_title(g, self.knob)
        )
        if not found:
            return []
        by_key = {g.key: g for g in groups}
        rows, records = [], []
        for r in found:
            e = r.pop("estimate")
            rows.append([_group_title(by_key[r["group"]], self.knob), r["kind"], f"{label(r['a'])} − {label(r['b'])}",
                         r["what"], fmt_estimate(e, signed=True), _p(e.p_value if e else math.nan),
                         _p(r.get("p_adjusted", math.nan)), "–" if e is None else f"{e.mde:.3f}",
                         "–" if e is None else _share(e.seed_share), r["verdict"]])  # fmt: skip
            records.append(r)
        family = max((r.get("family_size", 0) for r in records), default=0)
        summary["contrasts"] = records
        summary["sentences"] += records
        headers = ["group", "kind", "contrast", "isolates", "difference [95% CI]", "p", "p (Holm)", "MDE",
                   "seed share", "verdict"]  # fmt: skip
        return [
            "## Contrasts",
            "",
            f"One family of {family} paired differences (seeds x items), Holm-adjusted; a difference is claimed only "
            "when its adjusted p < 0.05. MDE: the minimum detectable difference of the design (80% power, 5% "
            "two-sided). Seed share: the part of the difference's variance that comes from training (more seeds "
            "shrink it) rather than from the number of evaluation rows.",
            "",
            self.table("contrasts", headers, rows, "lllllrrrrl"),
            "",
            *(f"- {r['text']}" for r in records),
            "",
        ]

    def uncertainty_section(self, groups: Sequence[GroupResult], summary: dict[str, Any]) -> list[str]:
        """Seed vs item shares of each gain over the start and each paired difference to the baseline, and the
        seeds ±0.05 would need (the median share over the differences decides the sentence)."""
        rows, shares, needs = [], [], []
        for g in groups:
            for name, s in g.stats.items():
                pairs = [("gain", f"{label(name)} − start", s.get("gain"))]
                base = g.baseline_of.get(name)
                pairs.append(("vs baseline", f"{label(name)} − {label(base or '')}", g.vs_baseline.get(name)))
                for kind, text, e in pairs:
                    if e is None or math.isnan(e.se):
                        continue
                    need = e.seeds_for(TARGET_HALF_WIDTH)
                    if kind == "vs baseline":
                        shares.append(e.seed_share)
                        needs.append(need)
                    rows.append([_group_title(g, self.knob), text, f"{e.num_seeds} x {e.num_items}",
                                 f"{e.half_width:.3f}", _share(e.seed_share), _share(e.item_share),
                                 f"{e.var_seed:.2e}", f"{e.var_item:.2e}", f"{e.var_resid:.2e}",
                                 "–" if need is None else str(need)])  # fmt: skip
        if not rows:
            return []
        finite = [s for s in shares if not math.isnan(s)]
        median = statistics.median(finite) if finite else math.nan
        dominated = (
            "neither (no variation at all in these runs)"
            if math.isnan(median)
            else "training variance (seeds)"
            if median >= 0.5
            else "the size of the evaluation set (items)"
        )
        summary["uncertainty"] = {"median_seed_share": median, "dominated_by": dominated,
                                  "seeds_for_half_width": needs, "target_half_width": TARGET_HALF_WIDTH}  # fmt: skip
        headers = ["group", "difference", "seeds x items", "half-width", "seed share", "item share", "var seed",
                   "var item", "var residual", f"seeds for ±{TARGET_HALF_WIDTH}"]  # fmt: skip
        return [
            "## Where the uncertainty comes from",
            "",
            f"The intervals are dominated by {dominated}: median seed share {median:.2f} over the {len(shares)} "
            f"paired differences to the baseline (gains over the start are listed too). The last column is the fewest seeds that would bring each interval's half-width to "
            f"±{TARGET_HALF_WIDTH} at the same number of rows, if the variance components stay as measured "
            "(the seed x item interaction counts as training variance: it is what a new seed redraws).",
            "",
            self.table("uncertainty", headers, rows, "llrrrrrrrr"),
            "",
        ]

    def regime_section(self, groups: Sequence[GroupResult], summary: dict[str, Any]) -> list[str]:
        """The low-pass-rate regime: each variant's gain against the warm start's target pass rate."""
        rows, curves = [], {}
        for g in sorted(groups, key=lambda g: g.warm_start):
            for name, s in g.stats.items():
                rows.append([f"{g.warm_start:g}", label(name), g.info(name).feedback, fmt_estimate(g.start.get("estimate")),
                             fmt_estimate(s.get("gain"), signed=True)])  # fmt: skip
                for r in g.runs[name]:
                    if r.finished and r.evals:
                        xs, ys = curves.setdefault(label(name), {}).setdefault(r.seed, ([], []))
                        xs.append(float(g.warm_start))
                        ys.append(float(r.items(-1).mean() - r.items(0).mean()))
        text = ["## Low-pass-rate regime", "",
                self.table("regime", ["warm start", "variant", "feedback", "start pass@1", "gain"], rows, "rllrr"), ""]  # fmt: skip
        if self.plots:
            name = "gain_vs_warm_start.png"
            plot_mean_ci(self.out / name, {k: list(v.values()) for k, v in curves.items()},
                         xlabel="warm-start target pass@1", ylabel="pass@1 gained by training",
                         title="Learning from a low pass rate", markers=True)  # fmt: skip
            summary["plots"].append(name)
            text += [f"![{name}]({name})", ""]
        return text

    def files_section(self, runs: Sequence[RunRecord], variance: Mapping[str, Any] | None) -> list[str]:
        files = ["`summary.json` (every number above)", "`evals.jsonl` (every eval record, tagged, with per-item "
                 "results)", "`tables/` (every table as .md, .csv and .tex)"]  # fmt: skip
        if self.plots:
            files.append("every figure as .png and .pdf")
        if runs:
            files.append(
                "`runs/**/metrics.jsonl` (per-run logs: train and eval records with the budget counters)"
            )
        if variance:
            files.append("`variance.json` (the gradient-variance probe)")
        return ["## Files", "", "; ".join(files) + ".", ""]


def _mean(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


def _p(p: float) -> str:
    return "–" if p is None or math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _share(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.2f}"
