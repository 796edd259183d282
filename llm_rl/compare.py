"""`llm-rl compare RECIPE`: every arm x every seed (x every warm start) at equal budget, then the report; and
`llm-rl probe-variance RECIPE`, the gradient-variance probe on its own.

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
5. the report (`llm_rl.analysis.report.write_report`): ``report.md``, ``summary.json``, ``evals.jsonl``, PNGs.

``--report-only`` re-renders the report from whatever runs exist (finished or not) without training. Under
``accelerate launch`` every process runs the grid together and only the main process prints and writes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llm_rl.analysis.report import write_report
from llm_rl.analysis.variance_probe import run_probe
from llm_rl.analysis.verdicts import variance_sentence
from llm_rl.commands import CommandError, module_main, parse_command, run_command
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import (
    FINAL_METRICS,
    check_resumable,
    child_config,
    configure_threads,
    prepare_experiment,
    quiet_libraries,
    run_arm,
    run_dir_for,
    validate_experiment,
)
from llm_rl.harness.distributed import barrier, broadcast, is_main, main_print
from relabel_rl.rundir import RunDir

__all__ = ["cmd_compare", "cmd_probe_variance", "run_compare"]

Grid = list[tuple[float | None, str, int]]


def _grid(cfg: ExperimentConfig) -> Grid:
    targets: list[float | None] = list(cfg.compare.warm_start_pass_rates) or [None]
    return [(t, arm, seed) for t in targets for arm in cfg.compare.arms for seed in cfg.compare.seeds]


def run_compare(cfg: ExperimentConfig, *, report_only: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole comparison described by ``cfg`` and write its report; return the summary."""
    arms = list(cfg.compare.arms)
    validate_experiment(cfg, arms=arms, probe=cfg.compare.probe_variance)
    configure_threads(cfg)
    out = Path(cfg.output_dir)
    grid = _grid(cfg)
    regime = bool(cfg.compare.warm_start_pass_rates)
    for target, arm, seed in grid:  # refuse a mismatched directory before the warm start
        path = run_dir_for(out, arm, seed, target)
        check_resumable(path, child_config(cfg, arm, seed, path, target))
    if is_main():  # under accelerate launch, only the main process writes the run's files
        RunDir.create(out, config=cfg, seeds={"seeds": cfg.compare.seeds}, extra_meta={"command": "compare"})
    barrier()
    warm_file = out / "warm_starts.json"
    if report_only:
        warm = json.loads(warm_file.read_text()) if warm_file.exists() else []
    else:
        warm = _warm_starts(cfg, out, regime)
        _run_grid(cfg, out, grid, warm, regime, progress)
    variance = _variance(cfg, out, warm, arms, run=not report_only, progress=progress)
    summary = None
    if is_main():  # the main process writes the report; the others wait for its summary
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
    return broadcast(summary)


def _warm_starts(cfg: ExperimentConfig, out: Path, regime: bool) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    _say(f"warm start(s) from {cfg.model.name_or_path} on {cfg.task.verifier} ...")
    warm = prepare_experiment(cfg, out, regime=regime)
    if is_main():
        (out / "warm_starts.json").write_text(json.dumps(warm, indent=2, default=str))
    for w in warm:
        _say(
            f"  warm start target {w['target']}: reached pass@1 {w['pass_rate']:.3f} after {w['steps']} steps"
        )
    _say(f"  warm start(s) ready in {time.perf_counter() - t0:.0f}s (cached ones are reused)")
    return warm


def _run_grid(
    cfg: ExperimentConfig, out: Path, grid: Grid, warm: list[dict], regime: bool, progress: bool
) -> None:
    """Every (warm start, arm, seed) run, finished ones skipped, the interrupted one resumed."""
    by_target = {w["target"]: w for w in warm}
    bar = tqdm(
        grid,
        desc="compare runs",
        unit="run",
        disable=not (progress and is_main()),
        file=sys.stderr,
        position=0,
    )
    for target, arm, seed in bar:
        ws = by_target[target] if regime else warm[0]
        path = run_dir_for(out, arm, seed, target if regime else None)
        child = child_config(cfg, arm, seed, path, target if regime else None)
        bar.set_postfix_str(f"{arm} seed {seed}" + (f" ws {target:g}" if regime else ""))
        done_before = (path / FINAL_METRICS).exists()
        t_run = time.perf_counter()
        final, _ = run_arm(child, path, init_model=ws["path"], warm_start=ws)
        state = "done earlier" if done_before else f"{time.perf_counter() - t_run:.0f}s"
        if is_main():
            bar.write(
                f"  {arm:<8} seed {seed}{'' if not regime else f' ws {target:g}'}: pass@1 "
                f"{_num(final.get('pass@1'))} pass@k {_num(final.get('pass@k'))} ({state})",
                file=sys.stderr,
            )
    bar.close()


def _variance(
    cfg: ExperimentConfig, out: Path, warm: list[dict], arms: list[str], *, run: bool, progress: bool
) -> dict[str, Any] | None:
    """The variance probe's result: run at the (highest-target) warm start unless already on disk."""
    if not cfg.compare.probe_variance:
        return None
    var_file = out / "variance.json"
    if run and not var_file.exists() and warm:
        probe_at = max(warm, key=lambda w: -1.0 if w["target"] is None else float(w["target"]))
        if is_main():  # under accelerate launch, one process probes; the others wait
            _say(f"gradient-variance probe at {probe_at['path']} ...")
            run_probe(cfg, probe_at["path"], out, arms=arms, progress=progress)
        barrier()
    return json.loads(var_file.read_text()) if var_file.exists() else None


def _num(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3f}"


def _say(msg: str) -> None:
    main_print(f"[llm-rl compare] {msg}", file=sys.stderr, flush=True)


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
        quiet_libraries()
        t0 = time.perf_counter()
        summary = run_compare(
            cfg, report_only=bool(own.get("report_only")), progress=not own.get("no_progress")
        )
        out = Path(cfg.output_dir)
        for s in summary.get("sentences", []):
            main_print(f"- {s['text']}")
        main_print(f"\nreport: {out / 'report.md'}  ({time.perf_counter() - t0:.0f}s)")
        main_print(f"plots:  {', '.join(str(out / p) for p in summary.get('plots', []))}")
        return 0

    return run_command(body)


def cmd_probe_variance(argv: Sequence[str]) -> int:
    """``llm-rl probe-variance RECIPE [--checkpoint PATH] [--out DIR] [--arms a,b] [--section.key value ...]``.

    Without ``--checkpoint`` the recipe's warm start is built (or reused) under ``output_dir`` and probed there.
    """

    def body() -> int:
        _, own, cfg = parse_command(
            argv,
            prog="llm-rl probe-variance",
            flags={"checkpoint": True, "out": True, "arms": True},
            usage=cmd_probe_variance.__doc__ or "",
        )
        quiet_libraries()
        arms = own["arms"].split(",") if own.get("arms") else list(cfg.compare.arms)
        validate_experiment(cfg, arms=arms, probe=True)
        configure_threads(cfg)
        out_dir = Path(own.get("out") or Path(cfg.output_dir) / "probe")
        checkpoint = own.get("checkpoint")
        if checkpoint is None:
            checkpoint = prepare_experiment(cfg, Path(cfg.output_dir))[0]["path"]
        elif not Path(checkpoint).exists():
            raise CommandError(f"checkpoint not found: {checkpoint}")
        result = run_probe(cfg, checkpoint, out_dir, arms=arms)
        print(variance_sentence(result)[0])
        print(
            f"variance probe written to {out_dir / 'variance.json'} and {out_dir / 'variance_vs_length.png'}"
        )
        return 0

    return run_command(body)


# `python -m llm_rl.compare --config RECIPE`: the form `accelerate launch -m` needs.
if __name__ == "__main__":
    raise SystemExit(module_main(cmd_compare))
