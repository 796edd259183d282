"""`llm-rl tune RECIPE`: per-arm hyper-parameters picked on the validation split, then handed to `compare`.

Why a command of its own rather than a `compare` option: tuning is a different experiment with a different
output — it scores on the *validation* split, its seeds must not be the report's seeds, and its product is a
recipe, not a report — and keeping it apart means a report can only ever come from a recipe whose values were
fixed before its test rows were looked at. The two share everything else (the warm start, the run directories,
`llm_rl.experiment.run_arm`, resume).

What it does, for the ``tune:`` section (`llm_rl.config.TuneConfig`)::

    tune:
      grid:
        grpo: {grpo.trl.learning_rate: [1.0e-5, 5.0e-5, 1.0e-4]}
        relabel: {optim.learning_rate: [1.0e-4, 3.0e-4]}
      seeds: [100, 101]
      budget: {limit: 20000}

1. validate everything before any work: the grid keys (the arm's own section and ``optim.*`` only — the task,
   budget, evaluation, warm start and model define the comparison and are the same for every arm), every grid
   point's recipe (GRPO's through TRL), seeds disjoint from ``compare.seeds`` (a value picked on a seed's own
   training run would favour that seed's reported result);
2. the warm start of the recipe (`llm_rl.experiment.prepare_experiment`, cached in ``OUTPUT_DIR/warm_start``: the
   one `compare` then starts from);
3. every (arm, grid point, seed) run into ``OUTPUT_DIR/tune/runs/<arm>/<point>-seed<k>/`` with ``eval.split:
   validation`` — ``task.validation_size`` test-split rows that are disjoint from the test rows and from every
   training row by construction (`llm_rl.harness.data`) — and the ``tune.budget`` overrides. Finished runs are
   skipped and an interrupted one resumes, as in `compare`; a grid grown later reuses the runs already done;
4. per arm, the point with the best mean final validation pass@1 over the seeds (ties: the higher mean validation
   score, then the first in grid order) — written to ``OUTPUT_DIR/tune/tune.json`` (every point, every seed) and
   ``OUTPUT_DIR/tune/tuned.yaml``: the resolved recipe with ``tune.chosen`` set. ``llm-rl compare
   OUTPUT_DIR/tune/tuned.yaml`` then runs each arm with its own chosen values (`llm_rl.config.arm_config`), and
   each run's ``config.yaml`` records them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llm_rl.commands import COMMAND_FLAGS, module_main, parse_command, run_command
from llm_rl.config import ExperimentConfig, TuneConfig, with_overrides
from llm_rl.experiment import (
    FINAL_METRICS,
    check_resumable,
    configure_threads,
    prepare_experiment,
    quiet_libraries,
    run_arm,
    validate_experiment,
)
from llm_rl.harness.distributed import barrier, broadcast, is_main, main_print
from llm_rl.workers import Job, resolve_workers, run_jobs
from relabel_rl.config import ConfigError, to_yaml
from relabel_rl.rundir import jsonable

__all__ = ["FIXED_SECTIONS", "cmd_tune", "grid_points", "run_tune", "tune_child_config"]

# Recipe sections a grid may not vary per arm: they define the comparison itself.
FIXED_SECTIONS = (
    "output_dir", "arm", "seed", "model", "task", "warm_start", "budget", "eval", "logging", "compare", "probe",
    "tune",
)  # fmt: skip


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of one arm's grid values, in grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A run-directory name for a grid point: ``learning_rate=0.0001,num_candidates=8`` (each key's last part,
    or the whole dotted key when two keys share their last part)."""
    last = [k.rsplit(".", 1)[-1] for k in point]
    names = last if len(set(last)) == len(last) else list(point)
    text = ",".join(f"{n}={v}" for n, v in zip(names, point.values()))
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)


def tune_child_config(
    cfg: ExperimentConfig, arm: str, point: dict[str, Any], seed: int, run_path: Path
) -> ExperimentConfig:
    """The resolved config of one tuning run: the recipe with the arm's values chosen so far
    (``tune.chosen[arm]``), the grid point, the ``tune.budget`` overrides, evaluation on the validation split,
    and ``compare``/``tune`` narrowed to the run (so growing the grid or the seeds reuses it)."""
    overrides = {
        **cfg.tune.chosen.get(arm, {}),
        **point,
        **{f"budget.{k}": v for k, v in cfg.tune.budget.items()},
        "eval.split": "validation",
    }
    child = with_overrides(cfg, overrides, what=f"'tune.grid.{arm}' point {point}")
    return dataclasses.replace(
        child,
        arm=arm,
        seed=seed,
        output_dir=str(run_path),
        compare=dataclasses.replace(cfg.compare, arms=[arm], seeds=[seed], warm_start_pass_rates=[]),
        tune=TuneConfig(),
    )


Plan = list[tuple[str, dict[str, Any], int, Path, ExperimentConfig]]


def _plan(cfg: ExperimentConfig, out: Path) -> Plan:
    """Every (arm, point, seed, run dir, config) of the grid, validated (module docstring, step 1)."""
    tune = cfg.tune
    if not tune.grid:
        raise ConfigError("'tune.grid' is empty: give at least one arm with {dotted.key: [values, ...]}")
    if not tune.seeds or len(set(tune.seeds)) != len(tune.seeds):
        raise ConfigError(f"'tune.seeds' must be a non-empty list of distinct seeds, got {tune.seeds}")
    shared = sorted(set(tune.seeds) & set(cfg.compare.seeds))
    if shared:
        raise ConfigError(
            f"'tune.seeds' and 'compare.seeds' share {shared}: a value picked on a seed's own training run would "
            "favour that seed's reported result; tune with other seeds"
        )
    plan: Plan = []
    for arm, grid in tune.grid.items():
        if not grid:
            raise ConfigError(f"'tune.grid.{arm}' is empty: give {{dotted.key: [values, ...]}}")
        for key, values in grid.items():
            if key.split(".", 1)[0] in FIXED_SECTIONS:
                raise ConfigError(
                    f"'tune.grid.{arm}.{key}': the grid tunes an arm's own section and optim.*; "
                    f"'{key.split('.', 1)[0]}' defines the comparison and is the same for every arm"
                )
            if not values:
                raise ConfigError(f"'tune.grid.{arm}.{key}' has no values to try")
        for point in grid_points(grid):
            for seed in tune.seeds:
                path = (
                    out
                    / "tune"
                    / "runs"
                    / re.sub(r"[^A-Za-z0-9_]", "_", arm)
                    / f"{point_name(point)}-seed{seed}"
                )
                child = tune_child_config(cfg, arm, point, seed, path)
                plan.append((arm, point, seed, path, child))
    validate_experiment(cfg, arms=list(tune.grid))
    checked: set[tuple[str, str]] = set()
    for arm, point, _, path, child in plan:
        if (arm, point_name(point)) not in checked:  # every point once: the arm's own checks (GRPO: TRL's)
            validate_experiment(child, arms=[arm])
            checked.add((arm, point_name(point)))
        check_resumable(path, child)
    return plan


def _pick(plan: Plan) -> dict[str, Any]:
    """Per arm, every point's validation results and the chosen one (module docstring, step 4)."""
    arms: dict[str, Any] = {}
    for arm, point, seed, path, _ in plan:
        entry = arms.setdefault(arm, {"points": {}, "chosen": None})
        name = point_name(point)
        p = entry["points"].setdefault(name, {"values": point, "seeds": [], "pass@1": [], "mean_score": []})
        final = json.loads((path / FINAL_METRICS).read_text())
        p["seeds"].append(seed)
        p["pass@1"].append(float(final["pass@1"]))
        p["mean_score"].append(float(final["mean_score"]))
    for entry in arms.values():
        points = list(entry["points"].values())
        for p in points:
            p["mean_pass@1"] = sum(p["pass@1"]) / len(p["pass@1"])
            p["mean_mean_score"] = sum(p["mean_score"]) / len(p["mean_score"])
        best = max(
            points, key=lambda p: (p["mean_pass@1"], p["mean_mean_score"])
        )  # max keeps the first of ties
        entry["chosen"] = dict(best["values"])
        entry["points"] = points
    return arms


def run_tune(cfg: ExperimentConfig, *, workers: int | str | None = 1) -> dict[str, Any]:
    """Run (or resume) the tuning grid of ``cfg`` and write ``tune.json`` and ``tuned.yaml``; return the summary.

    ``workers`` > 1 (or ``"auto"``) runs that many tuning runs at once in separate processes (`llm_rl.workers`)."""
    configure_threads(cfg)
    n_workers = resolve_workers(workers, single_threaded=torch.get_num_threads() == 1)
    out = Path(cfg.output_dir)
    plan = _plan(cfg, out)
    _say(
        f"{len(plan)} tuning runs on the validation split ({cfg.task.validation_size} rows disjoint from test)"
    )
    warm = prepare_experiment(cfg, out)[0]
    jobs = []
    for arm, point, seed, path, child in plan:
        where = f"{arm} {point_name(point)} seed {seed}"
        if (path / FINAL_METRICS).exists():
            final = json.loads((path / FINAL_METRICS).read_text())
            _say(f"  {where}: validation pass@1 {float(final['pass@1']):.3f} (done earlier)")
        else:
            jobs.append(Job(where, _tune_job, (child, str(path), warm), {"progress": n_workers == 1}))
    results = run_jobs(jobs, workers=n_workers, initializer=quiet_libraries)
    for i, (job, final, seconds) in enumerate(results, 1):
        _say(
            f"  [{i}/{len(jobs)}] {job.name}: validation pass@1 {float(final['pass@1']):.3f} ({seconds:.0f}s)"
        )
    summary = None
    if is_main():
        arms = _pick(plan)
        chosen = {
            **cfg.tune.chosen,
            **{arm: {**cfg.tune.chosen.get(arm, {}), **e["chosen"]} for arm, e in arms.items()},
        }
        tuned = dataclasses.replace(cfg, tune=dataclasses.replace(cfg.tune, chosen=chosen))
        summary = {
            "split": "validation",
            "validation_rows": cfg.task.validation_size,
            "eval_examples": cfg.eval.num_examples,
            "seeds": list(cfg.tune.seeds),
            "budget": {**dataclasses.asdict(cfg.budget), **cfg.tune.budget},
            "metric": "mean final validation pass@1 over seeds (ties: mean validation score, then grid order)",
            "warm_start": warm,
            "arms": arms,
            "chosen": chosen,
        }
        folder = out / "tune"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tune.json").write_text(json.dumps(jsonable(summary), indent=2))
        header = (
            f"# Written by `llm-rl tune` ({time.strftime('%Y-%m-%d %H:%M')}): the recipe with tune.chosen set to\n"
            "# the values picked per arm on the validation split (see tune.json beside this file).\n"
            f"# Run the comparison with:  llm-rl compare {folder / 'tuned.yaml'}\n"
        )
        (folder / "tuned.yaml").write_text(header + to_yaml(tuned))
    barrier()
    return broadcast(summary)


def _tune_job(child: ExperimentConfig, path: str, warm: dict[str, Any], *, progress: bool) -> dict[str, Any]:
    """One tuning run (in this process or a worker)."""
    configure_threads(child)
    final, _ = run_arm(child, Path(path), init_model=warm["path"], warm_start=warm, progress=progress)
    return final


def _say(msg: str) -> None:
    main_print(f"[llm-rl tune] {msg}", file=sys.stderr, flush=True)


def cmd_tune(argv: Sequence[str]) -> int:
    """``llm-rl tune RECIPE [--workers N|auto] [--section.key value ...]``.

    Runs the recipe's ``tune.grid`` (per arm, every combination of values) x ``tune.seeds`` on the validation
    split into ``OUTPUT_DIR/tune/`` and writes ``tune.json`` and ``tuned.yaml`` (the recipe with each arm's chosen
    values in ``tune.chosen``; run ``llm-rl compare OUTPUT_DIR/tune/tuned.yaml``). Rerunning resumes.
    ``--workers N`` runs N tuning runs at once (default ``auto``: one per usable core when runs are
    single-threaded, as in ``llm-rl compare``).
    """

    def body() -> int:
        _, own, cfg = parse_command(
            argv, prog="llm-rl tune", flags=COMMAND_FLAGS["tune"], usage=cmd_tune.__doc__ or ""
        )
        quiet_libraries()
        summary = run_tune(cfg, workers=own.get("workers", "auto"))
        for arm, entry in summary["arms"].items():
            for p in entry["points"]:
                mark = "*" if p["values"] == entry["chosen"] else " "
                main_print(f"{mark} {arm:<10} {point_name(p['values']):<40} validation pass@1 "
                           f"{p['mean_pass@1']:.3f}  mean score {p['mean_mean_score']:.3f}  (seeds {p['seeds']})")  # fmt: skip
        folder = Path(cfg.output_dir) / "tune"
        main_print(f"\nchosen: {json.dumps(summary['chosen'])}")
        main_print(f"tuned recipe: {folder / 'tuned.yaml'}   (llm-rl compare {folder / 'tuned.yaml'})")
        return 0

    return run_command(body)


# `python -m llm_rl.tune --config RECIPE`: the form `accelerate launch -m` needs.
if __name__ == "__main__":
    raise SystemExit(module_main(cmd_tune))
