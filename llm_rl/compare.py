"""`llm-rl compare RECIPE`: every arm x every seed (x every warm start) at equal budget, then the report.

Order of work, cheapest and most fallible first:

1. load the recipe with overrides and validate everything — every arm's config included (GRPO's TRL dict goes
   through `trl.GRPOConfig`) — and refuse an output directory holding a different experiment. All of this takes
   seconds, so a typo never costs a warm start;
2. the base model and the warm start(s), built once and cached in ``OUTPUT_DIR`` (one per
   ``compare.warm_start_pass_rates`` entry in the low-pass-rate regime);
3. the grid: for each (warm start, arm, seed) a `RunDir` ``OUTPUT_DIR/runs/[ws<rate>/]<arm>-seed<k>``. A run with
   ``final_metrics.json`` is finished and skipped; an interrupted one resumes from its checkpoints, counters
   included, so killing `compare` and running it again loses at most the work since each run's last checkpoint;
4. the gradient-variance probe (``compare.probe_variance``) at the warm-start checkpoint (the highest-target one
   in the regime), so every arm's estimator is measured at the same parameters;
5. the report (`llm_rl.report.write_report`): ``report.md``, ``summary.json``, ``evals.jsonl``, PNGs.

``--report-only`` re-renders the report from whatever runs exist (finished or not) without training.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_rl.commands import (
    FINAL_METRICS,
    _check_resumable,
    child_config,
    configure_threads,
    parse_command,
    prepare_experiment,
    run_arm,
    run_command,
    run_dir_for,
    validate_experiment,
)
from llm_rl.config import ExperimentConfig
from relabel_rl.rundir import RunDir

__all__ = ["cmd_compare", "run_compare"]


def _grid(cfg: ExperimentConfig) -> list[tuple[float | None, str, int]]:
    targets: list[float | None] = list(cfg.compare.warm_start_pass_rates) or [None]
    return [(t, arm, seed) for t in targets for arm in cfg.compare.arms for seed in cfg.compare.seeds]


def run_compare(cfg: ExperimentConfig, *, report_only: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole comparison described by ``cfg`` and write its report; return the summary."""
    from tqdm.auto import tqdm

    from llm_rl.report import write_report

    arms = list(cfg.compare.arms)
    validate_experiment(cfg, arms=arms, probe=cfg.compare.probe_variance)
    configure_threads(cfg)
    out = Path(cfg.output_dir)
    grid = _grid(cfg)
    regime = bool(cfg.compare.warm_start_pass_rates)
    for target, arm, seed in grid:  # refuse a mismatched directory before the warm start
        path = run_dir_for(out, arm, seed, target)
        _check_resumable(path, child_config(cfg, arm, seed, path, target))
    if _layout().is_main:  # under accelerate launch, only the main process writes the run's files
        RunDir.create(out, config=cfg, seeds={"seeds": cfg.compare.seeds}, extra_meta={"command": "compare"})
    _layout().barrier()
    warm_file = out / "warm_starts.json"
    if report_only:
        warm = json.loads(warm_file.read_text()) if warm_file.exists() else []
    else:
        t0 = time.perf_counter()
        _say(f"warm start(s) from {cfg.model.name_or_path} on {cfg.task.verifier} ...")
        warm = prepare_experiment(cfg, out, regime=regime)
        warm_file.write_text(json.dumps(warm, indent=2, default=str))
        for w in warm:
            _say(
                f"  warm start target {w['target']}: reached pass@1 {w['pass_rate']:.3f} after {w['steps']} steps"
            )
        _say(f"  warm start(s) ready in {time.perf_counter() - t0:.0f}s (cached ones are reused)")
        by_target = {w["target"]: w for w in warm}
        bar = tqdm(grid, desc="compare runs", unit="run", disable=not progress, file=sys.stderr, position=0)
        for target, arm, seed in bar:
            ws = by_target[target] if regime else warm[0]
            path = run_dir_for(out, arm, seed, target if regime else None)
            child = child_config(cfg, arm, seed, path, target if regime else None)
            bar.set_postfix_str(f"{arm} seed {seed}" + (f" ws {target:g}" if regime else ""))
            done_before = (path / FINAL_METRICS).exists()
            t_run = time.perf_counter()
            final, _ = run_arm(child, path, init_model=ws["path"], warm_start=ws)
            state = "done earlier" if done_before else f"{time.perf_counter() - t_run:.0f}s"
            bar.write(
                f"  {arm:<8} seed {seed}{'' if not regime else f' ws {target:g}'}: pass@1 "
                f"{_num(final.get('pass@1'))} pass@k {_num(final.get('pass@k'))} ({state})",
                file=sys.stderr,
            )
        bar.close()
    variance = None
    var_file = out / "variance.json"
    if cfg.compare.probe_variance:
        if not report_only and not var_file.exists() and warm:
            from llm_rl.variance_probe import run_probe

            probe_at = max(warm, key=lambda w: -1.0 if w["target"] is None else float(w["target"]))
            if _layout().is_main:  # under accelerate launch, one process probes; the others wait
                _say(f"gradient-variance probe at {probe_at['path']} ...")
                run_probe(cfg, probe_at["path"], out, arms=arms, progress=progress)
            _layout().barrier()
        if var_file.exists():
            variance = json.loads(var_file.read_text())
    if not _layout().is_main:  # the main process writes the report; the others wait for its summary
        return _broadcast(None)
    summary = write_report(
        out,
        axis=cfg.budget.axis,
        limit=cfg.budget.limit,
        threshold=cfg.compare.pass_threshold,
        task=cfg.task.verifier,
        variance=variance,
        warm_starts=warm,
        title=f"relabel-rl comparison: {', '.join(arms)} on {cfg.task.verifier}",
    )
    return _broadcast(summary)


def _layout() -> Any:
    from llm_rl.distributed import Layout

    return Layout.current()


def _broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every process (itself in a single process)."""
    layout = _layout()
    if layout.world == 1:
        return obj
    import torch.distributed

    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _num(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3f}"


def _say(msg: str) -> None:
    print(f"[llm-rl compare] {msg}", file=sys.stderr, flush=True)


def cmd_compare(argv: Sequence[str]) -> int:
    """``llm-rl compare RECIPE [--report-only] [--no-progress] [--section.key value ...]``.

    Runs ``compare.arms`` x ``compare.seeds`` (x ``compare.warm_start_pass_rates``) at the recipe's budget into
    ``output_dir`` and writes ``report.md``, ``summary.json``, ``evals.jsonl`` and PNG plots there. Rerunning the
    same command resumes; ``--report-only`` only re-renders the report.
    """

    def body() -> int:
        _, own, cfg = parse_command(
            argv,
            prog="llm-rl compare",
            flags={"report_only": False, "no_progress": False},
            usage=cmd_compare.__doc__ or "",
        )
        t0 = time.perf_counter()
        summary = run_compare(
            cfg, report_only=bool(own.get("report_only")), progress=not own.get("no_progress")
        )
        out = Path(cfg.output_dir)
        for s in summary.get("sentences", []):
            print(f"- {s['text']}")
        print(f"\nreport: {out / 'report.md'}  ({time.perf_counter() - t0:.0f}s)")
        print(f"plots:  {', '.join(str(out / p) for p in summary.get('plots', []))}")
        return 0

    return run_command(body)


# `python -m llm_rl.compare --config RECIPE`: the form `accelerate launch -m` needs.
if __name__ == "__main__":
    from llm_rl.train import module_main

    raise SystemExit(module_main(cmd_compare))
