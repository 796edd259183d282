"""`llm-rl compare RECIPE`: every arm and variant x every seed (x every sweep value, or x every warm start) at equal
budget, then the report; and `llm-rl probe-variance RECIPE`, the gradient-variance probe on its own.

Order of work, cheapest and most fallible first:

1. load the recipe with overrides and validate everything — every arm's config and every variant's overrides
   included (GRPO's TRL dict goes through `trl.GRPOConfig`), the sweep's row sets, ``eval.num_examples <=
   task.test_size`` — and refuse an output directory holding a different experiment (seeds, arms, variants and
   sweep values may be *added* to a finished one: `llm_rl.grid.check_same_experiment`). All of this takes
   seconds, so a typo never costs a warm start;
2. the base model and the warm start(s), built once and cached in ``OUTPUT_DIR`` (one per
   ``compare.warm_start_pass_rates`` entry in the low-pass-rate regime; one on ``warm_start.difficulty`` for a
   sweep);
3. the grid (`llm_rl.grid`): for each cell a `RunDir` ``OUTPUT_DIR/runs/[<group>/]<variant>-seed<k>``. A run with
   ``final_metrics.json`` is finished and skipped; an interrupted one resumes from its checkpoints, counters
   included, so killing `compare` and running it again loses at most the work since each run's last checkpoint;
4. the gradient-variance probe (``compare.probe_variance``) at the warm-start checkpoint (the highest-target one
   in the regime), so every arm's estimator is measured at the same parameters; rerun when its settings change;
   with ``--workers N`` (`llm_rl.workers`) steps 3 and 4 share N processes: the probe's (arm, length) shards and
   the runs are jobs of one pool;
5. the report (`llm_rl.analysis.report.write_report`).

``--report-only`` re-renders the report from whatever runs exist (finished or not) without training or writing
anything but the report; it fails, naming the directory, when ``output_dir`` holds no experiment. Under
``accelerate launch`` every process runs the grid together and only the main process prints and writes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_rl.analysis.report import write_report
from llm_rl.analysis.variance_probe import (
    ProbeShard,
    compute_shard,
    pending_shards,
    probe_settings,
    run_probe,
)
from llm_rl.analysis.verdicts import variance_sentence
from llm_rl.commands import COMMAND_FLAGS, CommandError, module_main, parse_command, run_command
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import (
    FINAL_METRICS,
    check_resumable,
    configure_threads,
    prepare_experiment,
    quiet_libraries,
    run_arm,
    validate_experiment,
)
from llm_rl.grid import (
    Cell,
    cell_meta,
    check_same_experiment,
    child_config,
    grid,
    group_name,
    run_dir_for,
    variants,
)
from llm_rl.harness.data import DATA_SEED, load_task
from llm_rl.harness.distributed import barrier, broadcast, is_main, main_print
from llm_rl.harness.evaluation import items_digest
from llm_rl.workers import Job, resolve_workers, run_jobs
from relabel_rl.config import ConfigError, to_yaml
from relabel_rl.rundir import RunDir, jsonable

__all__ = ["cmd_compare", "cmd_probe_variance", "run_compare"]


def _plain_arms(cfg: ExperimentConfig) -> list[str]:
    return list(cfg.compare.arms)


def _path(cfg: ExperimentConfig, cell: Cell) -> Path:
    return run_dir_for(Path(cfg.output_dir), cell.variant.name, cell.seed, group_name(cfg, cell))


def check_report_only(out: Path) -> None:
    """``--report-only`` needs an experiment to report on: refuse a missing or empty directory, naming it."""
    if not out.is_dir():
        raise ConfigError(
            f"--report-only: {out} does not exist; check 'output_dir' (or run the comparison without --report-only)"
        )
    if not (out / "config.yaml").exists() and not (out / "runs").is_dir():
        raise ConfigError(
            f"--report-only: {out} holds no comparison (no config.yaml, no runs/); check 'output_dir'"
        )


def run_compare(
    cfg: ExperimentConfig,
    *,
    report_only: bool = False,
    progress: bool = True,
    workers: int | str | None = 1,
) -> dict[str, Any]:
    """Run (or resume) the whole comparison described by ``cfg`` and write its report; return the summary.

    ``workers`` > 1 (or ``"auto"``, `llm_rl.workers.resolve_workers`) runs the runs and the probe's shards in that
    many processes at once; the metrics are the same as with one.
    """
    out = Path(cfg.output_dir)
    if report_only:
        check_report_only(out)
    validate_experiment(cfg, arms=_plain_arms(cfg), probe=cfg.compare.probe_variance)
    configure_threads(cfg)
    n_workers = resolve_workers(workers, single_threaded=torch.get_num_threads() == 1)
    cells = grid(cfg)
    check_same_experiment(out, cfg)  # before the warm start: a different experiment is refused
    for cell in cells:
        path = _path(cfg, cell)
        check_resumable(path, child_config(cfg, cell, path))
    if is_main() and not report_only:  # under accelerate launch, only the main process writes the run's files
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))  # the grid may have grown: record the current one
        RunDir.create(
            out,
            config=cfg,
            seeds={"seeds": cfg.compare.seeds},
            extra_meta={"command": "compare", "workers": n_workers},
        )
    barrier()
    warm_file = out / "warm_starts.json"
    if report_only:
        warm = json.loads(warm_file.read_text()) if warm_file.exists() else []
    else:
        warm = _warm_starts(cfg, out)
        _run_grid(cfg, out, cells, warm, progress=progress, workers=n_workers)
    variance = _variance(cfg, out, warm, run=not report_only, progress=progress)
    summary = None
    if is_main():  # the main process writes the report; the others wait for its summary
        summary = write_report(out, cfg, variance=variance, warm_starts=warm, eval_sets=eval_sets(cfg, warm))
    return broadcast(summary)


def _regime(cfg: ExperimentConfig) -> bool:
    return bool(cfg.compare.warm_start_pass_rates)


def _warm_starts(cfg: ExperimentConfig, out: Path) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    _say(f"warm start(s) from {cfg.model.name_or_path} on {cfg.task.verifier} ...")
    warm = prepare_experiment(cfg, out, regime=_regime(cfg))
    for w in warm:  # what the report states about each warm start: its validation rows and difficulty
        record = Path(w["path"]).parent / "warm_start.json"
        if record.exists():
            saved = json.loads(record.read_text())
            w.update({k: saved[k] for k in ("held_out_rows", "difficulty", "target_pass_rate") if k in saved})
    if is_main():
        (out / "warm_starts.json").write_text(json.dumps(jsonable(warm), indent=2))
    for w in warm:
        _say(
            f"  warm start target {w['target']}: reached pass@1 {w['pass_rate']:.3f} after {w['steps']} steps"
        )
    _say(f"  warm start(s) ready in {time.perf_counter() - t0:.0f}s (cached ones are reused)")
    return warm


def _run_grid(
    cfg: ExperimentConfig, out: Path, cells: list[Cell], warm: list[dict], *, progress: bool, workers: int
) -> None:
    """Every cell's run, finished ones skipped, interrupted ones resumed; with several workers the variance
    probe's unfinished shards run beside them (started first, longest lengths first), otherwise the probe runs
    after."""
    by_target = {w["target"]: w for w in warm}
    jobs: list[Job] = []
    if workers > 1 and (plan := _probe_plan(cfg, out, warm)) is not None:
        checkpoint, arms = plan
        jobs += [
            Job(s.name, _probe_job, (cfg, checkpoint, str(out), s, arms))
            for s in pending_shards(cfg, checkpoint, out, arms)
        ]
    done: list[str] = []
    for cell in cells:
        ws = by_target[cell.warm_target] if cell.warm_target is not None else warm[0]
        where = f"{cell.variant.name} seed {cell.seed}" + (
            f" {group_name(cfg, cell)}" if group_name(cfg, cell) else ""
        )
        final_file = _path(cfg, cell) / FINAL_METRICS
        if final_file.exists():
            done.append(f"  {where}: {_scores(json.loads(final_file.read_text()))} (done earlier)")
        else:
            jobs.append(Job(where, _cell_job, (cfg, cell, ws), {"progress": progress and workers == 1}))
    show = progress and is_main()
    bar = tqdm(
        total=len(jobs), desc="compare runs" if workers == 1 else f"compare jobs ({workers} workers)",
        unit="job", disable=not show, file=sys.stderr, position=0,
    )  # fmt: skip
    for line in done:
        main_print(line, file=sys.stderr)
    for job, result, seconds in run_jobs(jobs, workers=workers, initializer=quiet_libraries):
        bar.update(1)
        if is_main():
            line = f"  {job.name}: {_scores(result) if job.fn is _cell_job else result} ({seconds:.0f}s)"
            bar.write(line, file=sys.stderr)
    bar.close()


def _cell_job(cfg: ExperimentConfig, cell: Cell, ws: dict[str, Any], *, progress: bool) -> dict[str, Any]:
    """One run of the grid (in this process or a worker)."""
    configure_threads(cfg)
    path = _path(cfg, cell)
    child = child_config(cfg, cell, path)
    final, _ = run_arm(
        child, path, init_model=ws["path"], warm_start=ws, cell=cell_meta(cfg, cell), progress=progress
    )
    return final


def _probe_job(cfg: ExperimentConfig, checkpoint: str, out: str, shard: ProbeShard, arms: list[str]) -> str:
    """One shard of the variance probe (in a worker)."""
    configure_threads(cfg)
    part = compute_shard(cfg, checkpoint, out, shard, arms)
    return f"{len(part['records'])} prompts x {cfg.probe.repeats} gradient estimates"


def _scores(final: dict[str, Any]) -> str:
    return f"pass@1 {_num(final.get('pass@1'))} pass@k {_num(final.get('pass@k'))}"


def eval_sets(cfg: ExperimentConfig, warm: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group, the rows every run of it is evaluated on (exactly the harness's: `load_task`'s test rows, the
    first ``eval.num_examples``), and how many of them the warm start's validation rows share."""
    validation: set[str] = set()
    for w in warm:
        record = Path(w["path"]).parent / "warm_start.json"
        if record.exists():
            validation |= set((json.loads(record.read_text()).get("held_out") or {}).get("prompts", []))
    out = {}
    plain = variants(cfg)[0]
    for cell in [c for c in grid(cfg) if c.variant == plain and c.seed == cfg.compare.seeds[0]]:
        child = child_config(cfg, cell, _path(cfg, cell))
        rows = load_task(child).test[: cfg.eval.num_examples]
        prompts = [r["prompt"] for r in rows]
        out[group_name(cfg, cell) or "single"] = {
            "split": "test",
            "seed": DATA_SEED,
            "rows": len(rows),
            "difficulty": child.task.difficulty,
            "digest": items_digest(prompts),
            "overlap_with_validation": len(validation & set(prompts)) if validation else None,
        }
    return out


def _probe_plan(cfg: ExperimentConfig, out: Path, warm: list[dict]) -> tuple[str, list[str]] | None:
    """``(checkpoint, arms)`` when the variance probe has to (re)run, None when it is off or up to date."""
    if not cfg.compare.probe_variance or not warm:
        return None
    arms = list(cfg.probe.arms) or _plain_arms(cfg)
    # the (highest-target) warm start: every arm's estimator measured at the same parameters
    probe_at = max(warm, key=lambda w: -1.0 if w["target"] is None else float(w["target"]))
    var_file = out / "variance.json"
    old = json.loads(var_file.read_text()) if var_file.exists() else None
    if old is not None and old.get("settings") == jsonable(probe_settings(cfg, probe_at["path"], arms)):
        return None
    return str(probe_at["path"]), arms


def _variance(
    cfg: ExperimentConfig, out: Path, warm: list[dict], *, run: bool, progress: bool
) -> dict[str, Any] | None:
    """The variance probe's result: run (or finished from the shards the workers ran) unless already on disk
    with the same settings."""
    if not cfg.compare.probe_variance:
        return None
    var_file = out / "variance.json"
    plan = _probe_plan(cfg, out, warm) if run else None
    if plan is not None:
        checkpoint, arms = plan
        if is_main():  # under accelerate launch, one process probes; the others wait
            if pending_shards(cfg, checkpoint, out, arms):
                _say(f"gradient-variance probe at {checkpoint} ...")
            run_probe(cfg, checkpoint, out, arms=arms, progress=progress)  # merges the shards already probed
        barrier()
    return json.loads(var_file.read_text()) if var_file.exists() else None


def _num(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3f}"


def _say(msg: str) -> None:
    main_print(f"[llm-rl compare] {msg}", file=sys.stderr, flush=True)


def cmd_compare(argv: Sequence[str]) -> int:
    """``llm-rl compare RECIPE [--report-only] [--no-progress] [--workers N|auto] [--section.key value ...]``.

    Runs ``compare.arms`` and ``compare.variants`` x ``compare.seeds`` (x ``compare.sweep.values`` or x
    ``compare.warm_start_pass_rates``) at the recipe's budget into ``output_dir`` and writes ``report.md``,
    ``summary.json``, ``evals.jsonl``, ``tables/`` and figures there. Rerunning the same command resumes (and runs
    the seeds, variants or sweep values added since); ``--report-only`` only re-renders the report.
    ``--workers N`` runs N runs (and probe shards) at once in separate processes; the default, ``auto``, is one
    per usable core when each run is single-threaded (the tiny preset on CPU), else 1. Metrics do not depend on it.
    """

    def body() -> int:
        _, own, cfg = parse_command(
            argv,
            prog="llm-rl compare",
            flags=COMMAND_FLAGS["compare"],
            usage=cmd_compare.__doc__ or "",
        )
        quiet_libraries()
        t0 = time.perf_counter()
        summary = run_compare(
            cfg,
            report_only=bool(own.get("report_only")),
            progress=not own.get("no_progress"),
            workers=own.get("workers", "auto"),
        )
        out = Path(cfg.output_dir)
        for s in summary.get("sentences", []):
            main_print(f"- {s['text']}")
        main_print(f"\nreport: {out / 'report.md'}  ({time.perf_counter() - t0:.0f}s)")
        main_print(f"plots:  {', '.join(str(out / p) for p in summary.get('plots', []))}")
        return 0

    return run_command(body)


def cmd_probe_variance(argv: Sequence[str]) -> int:
    """``llm-rl probe-variance RECIPE [--checkpoint PATH] [--out DIR] [--arms a,b] [--workers N|auto]
    [--section.key value ...]``.

    Without ``--checkpoint`` the recipe's warm start is built (or reused) under ``output_dir`` and probed there.
    ``--workers`` probes that many (arm, length) shards at once (as in ``llm-rl compare``); rerunning resumes from
    the shards already probed.
    """

    def body() -> int:
        _, own, cfg = parse_command(
            argv,
            prog="llm-rl probe-variance",
            flags=COMMAND_FLAGS["probe-variance"],
            usage=cmd_probe_variance.__doc__ or "",
        )
        quiet_libraries()
        arms = own["arms"].split(",") if own.get("arms") else (list(cfg.probe.arms) or list(cfg.compare.arms))
        validate_experiment(cfg, arms=arms, probe=True)
        configure_threads(cfg)
        workers = resolve_workers(own.get("workers", "auto"), single_threaded=torch.get_num_threads() == 1)
        out_dir = Path(own.get("out") or Path(cfg.output_dir) / "probe")
        checkpoint = own.get("checkpoint")
        if checkpoint is None:
            checkpoint = prepare_experiment(cfg, Path(cfg.output_dir))[0]["path"]
        elif not Path(checkpoint).exists():
            raise CommandError(f"checkpoint not found: {checkpoint}")
        if workers > 1:  # the shards in parallel; run_probe below then only merges them
            shards = pending_shards(cfg, checkpoint, out_dir, arms)
            jobs = [Job(s.name, _probe_job, (cfg, str(checkpoint), str(out_dir), s, arms)) for s in shards]
            for job, text, seconds in run_jobs(jobs, workers=workers, initializer=quiet_libraries):
                print(f"  {job.name}: {text} ({seconds:.0f}s)", file=sys.stderr)
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
