"""What every experiment command shares: validate a recipe, prepare the base model and warm start, run one arm.

Used by `llm-rl train`, `llm-rl compare` and `llm-rl probe-variance`:

* :func:`validate_experiment` — everything that can be checked before a model is loaded: the arms resolve and
  accept their sections (GRPO's TRL dict passes `trl.GRPOConfig`), the verifier resolves, its difficulty knobs
  exist, the trackers are installed, the probe's lengths are producible;
* :func:`prepare_experiment` — the base model (``tiny`` is built once into ``OUTPUT_DIR/base_model``) and the
  warm start(s) (TRL SFT, cached under ``OUTPUT_DIR/warm_start``), computed once and shared by every arm and seed;
* :func:`run_arm` — one (arm, seed) run in ``OUTPUT_DIR/runs/<arm>-seed<k>`` (a `RunDir`): skipped when it has
  ``final_metrics.json``, otherwise trained by the harness (`llm_rl.harness.run.train_arm`), which resumes from
  the run's checkpoints.

`train` uses the very layout `compare` uses, so a run trained alone is picked up (not retrained) by a later
`compare` of the same recipe, and vice versa.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers

import verifiers
from llm_rl.analysis.variance_probe import examples_for_length
from llm_rl.arms import ARM_NAMES, Arm, arm_class
from llm_rl.config import ExperimentConfig
from llm_rl.grid import (
    LENGTH_KNOB,
    Cell,
    Variant,
    probe_lengths,
    sweep_difficulty,
    validate_variants,
    variant_config,
    variants,
    warm_difficulty,
    warm_length_range,
)
from llm_rl.grid import child_config as grid_child_config
from llm_rl.grid import run_dir_for as grid_run_dir_for
from llm_rl.harness.data import DATA_SEED, check_task
from llm_rl.harness.distributed import barrier, is_main, process_state
from llm_rl.harness.evaluation import evaluate
from llm_rl.harness.run import train_arm
from llm_rl.harness.tracking import check_trackers
from llm_rl.harness.user_data import task_verifier
from llm_rl.model import load_policy, lora_config, resolve_model_path
from llm_rl.warm_start import warm_start
from relabel_rl.config import ConfigError
from relabel_rl.rundir import RunDir, check_same_config, seed_everything

__all__ = [
    "FINAL_METRICS",
    "WARM_START_SEED",
    "check_resumable",
    "child_config",
    "configure_threads",
    "evaluate_checkpoint",
    "prepare_experiment",
    "quiet_libraries",
    "run_arm",
    "run_dir_for",
    "validate_experiment",
]

# The base model and the warm start are built once per recipe with this seed; the RL seeds vary the arms only,
# so every arm and seed starts from the very same checkpoint.
WARM_START_SEED = 0
FINAL_METRICS = "final_metrics.json"


def quiet_libraries() -> None:
    """Keep a command's output to its own progress bars and results: no per-file "Loading weights" / "Writing
    model shards" / dataset-map bars and no library deprecation warnings (errors still print)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|peft|accelerate)\b")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def configure_threads(cfg: ExperimentConfig) -> None:
    """One intra-op thread for the tiny preset on CPU, unless ``OMP_NUM_THREADS`` says otherwise.

    Why: a 64-wide model has nothing to split across threads, and on a 2-core machine torch's second thread only
    adds synchronisation. Measured on this project's 2-core box, one SFT step (batch 32 x 60 tokens) of the tiny
    preset: 0.04 s with one thread, 0.8 s with two (the CPU time grows as much: it is spinning, not working).
    """
    if (
        cfg.model.name_or_path == "tiny"
        and "OMP_NUM_THREADS" not in os.environ
        and not torch.cuda.is_available()
    ):
        torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# Validation (cheap; before any model is loaded)


def sharded_launch() -> str | None:
    """``"FSDP"`` or ``"DeepSpeed"`` when ``accelerate launch`` started this process with sharded parameters."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return "DeepSpeed"
    return None


def validate_experiment(cfg: ExperimentConfig, *, arms: Sequence[str], probe: bool = False) -> None:
    """Check what `load_config`'s types cannot: names resolve, knobs exist, arm configs are accepted upstream, the
    grid (variants, sweep) is well formed and every row set it needs can be generated.

    Raises:
      ConfigError: naming the recipe key at fault.
    """
    if not arms:
        raise ConfigError("'compare.arms' is empty: name at least one of " + ", ".join(ARM_NAMES))
    classes = {}
    for arm in arms:
        try:
            classes[arm] = arm_class(arm)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if len(set(arms)) != len(arms):
        raise ConfigError(f"'compare.arms' repeats an arm: {list(arms)}")
    _check_sharding(classes)
    _check_compare(cfg)
    if cfg.budget.eval_every > cfg.budget.limit:
        raise ConfigError(
            f"'budget.eval_every' ({cfg.budget.eval_every:g}) exceeds 'budget.limit' ({cfg.budget.limit:g}): "
            "the learning curve would have no point between the start and the end"
        )
    if cfg.eval.pass_k < 0 or cfg.eval.num_examples < 1:
        raise ConfigError("'eval.pass_k' must be >= 0 (0: greedy pass@1 only) and 'eval.num_examples' >= 1")
    if cfg.eval.split == "test" and cfg.eval.num_examples > cfg.task.test_size:
        raise ConfigError(
            f"'eval.num_examples' ({cfg.eval.num_examples}) exceeds 'task.test_size' ({cfg.task.test_size}): "
            "evaluation would silently use fewer rows; raise task.test_size or lower eval.num_examples"
        )
    verifier = task_verifier(cfg)  # ConfigError naming task.verifier or task.data.*
    _check_rows(cfg, verifier)
    check_task(cfg, verifier)  # task.feedback: steps needs step checks; the eval split holds the rows
    for cls in classes.values():
        cls.validate(cfg)
    for v in variants(cfg):  # each variant's own config passes its arm's checks too
        if v.overrides:
            own = variant_config(cfg, v)
            check_task(own, verifier)  # e.g. a variant under task.feedback: steps needs step checks
            arm_class(v.arm).validate(own)
    check_trackers(list(cfg.logging.report_to))
    if cfg.model.lora.enabled:
        lora_config(cfg.model.lora)  # PEFT validates the whole LoraConfig now, not at the first model load
    if probe:
        _check_probe(cfg, verifier)


def _check_sharding(classes: Mapping[str, Any]) -> None:
    sharded = sharded_launch()
    hand_written = [a for a, cls in classes.items() if issubclass(cls, Arm)]
    if sharded and hand_written:
        raise ConfigError(
            f"{' and '.join(hand_written)} cannot run under {sharded}: the hand-written arms run their forward "
            "passes on the unwrapped model and sum gradients themselves (llm_rl/harness/distributed.py), which is right "
            "for DDP, not for sharded parameters. Launch them with recipes/accelerate/ddp.yaml (add "
            "--model.lora.enabled true when the model does not fit), or keep this config for --arm grpo"
        )


def _check_compare(cfg: ExperimentConfig) -> None:
    """Seeds, thresholds, the low-pass-rate regime, variants, baseline, contrasts and the sweep's shape."""
    c = cfg.compare
    seeds = list(c.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"'compare.seeds' must be a non-empty list of distinct seeds, got {seeds}")
    if not 0.0 <= c.pass_threshold <= 1.0:
        raise ConfigError(f"'compare.pass_threshold' must be in [0, 1], got {c.pass_threshold}")
    if c.threshold_gain is not None and not 0.0 < c.threshold_gain <= 1.0:
        raise ConfigError(f"'compare.threshold_gain' must be in (0, 1] or null, got {c.threshold_gain}")
    for i, r in enumerate(c.warm_start_pass_rates):
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"'compare.warm_start_pass_rates[{i}]' must be in [0, 1], got {r}")
    if c.warm_start_pass_rates and not cfg.warm_start.enabled:
        raise ConfigError("'compare.warm_start_pass_rates' needs 'warm_start.enabled: true'")
    target = cfg.warm_start.target_pass_rate
    if target is not None and not 0.0 <= target <= 1.0:
        raise ConfigError(f"'warm_start.target_pass_rate' must be in [0, 1] or null, got {target}")
    validate_variants(cfg)
    names = [v.name for v in variants(cfg)]
    if c.baseline not in names and c.baseline not in ARM_NAMES:
        raise ConfigError(
            f"'compare.baseline' {c.baseline!r} is neither an arm nor a variant of this comparison"
        )
    for i, pair in enumerate(c.contrasts):
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
            raise ConfigError(f"'compare.contrasts[{i}]' must be two different names of {names}, got {pair}")
    values = list(c.sweep.values)
    if len(set(values)) != len(values):
        raise ConfigError(f"'compare.sweep.values' repeats a value: {values}")
    if values and c.warm_start_pass_rates:
        raise ConfigError(
            "'compare.sweep' and 'compare.warm_start_pass_rates' cannot be combined: run one experiment per axis"
        )
    if c.sweep.knob == LENGTH_KNOB and any(int(v) != v or v < 1 for v in values):
        raise ConfigError(f"'compare.sweep.values' are lengths (whole numbers >= 1), got {values}")
    if c.sweep.scale_budget and (not values or any(v <= 0 for v in values)):
        raise ConfigError(
            "'compare.sweep.scale_budget' multiplies the budget by each sweep value: it needs "
            f"'compare.sweep.values' > 0, got {values}"
        )


def _check_rows(cfg: ExperimentConfig, verifier: Any) -> None:
    """Every row set the experiment draws can be drawn: the warm start's difficulty, and for each sweep value the
    task's train rows, ``task.test_size`` test rows, within ``task.max_steps`` steps."""
    try:
        verifier.generate(1, seed=0, split="train", **warm_difficulty(cfg))
    except (ValueError, TypeError, NotImplementedError) as e:
        key = "warm_start.difficulty" if cfg.warm_start.difficulty is not None else "task.difficulty"
        raise ConfigError(f"'{key}': {e}") from None
    span = warm_length_range(verifier, warm_difficulty(cfg))
    for value in list(cfg.compare.sweep.values) or [None]:
        key = (
            "'task.difficulty'"
            if value is None
            else f"'compare.sweep.values' ({cfg.compare.sweep.knob} {value:g})"
        )
        difficulty = sweep_difficulty(cfg, value)
        try:
            verifier.generate(1, seed=0, split="train", **difficulty)
            test = verifier.generate(cfg.task.test_size, seed=DATA_SEED, split="test", **difficulty)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise ConfigError(f"{key}: {e} (task.test_size = {cfg.task.test_size})") from None
        steps = test["num_steps"] if "num_steps" in test.column_names else []  # a user's rows may lack it
        longest = max((int(n) for n in steps), default=0)
        if longest > cfg.task.max_steps:
            raise ConfigError(
                f"'task.max_steps' ({cfg.task.max_steps}) is below the {longest} steps of a test row at {key} "
                "(answer line included): the step-wise arms could never finish one; raise it"
            )
        is_length = value is not None and cfg.compare.sweep.knob == LENGTH_KNOB
        if is_length and span is not None and not span[0] <= value <= span[1]:
            raise ConfigError(
                f"'compare.sweep.values': length {value:g} is outside the warm start's lengths {span[0]}-"
                f"{span[1]} ('warm_start.difficulty'): one warm start must cover every length"
            )


def _check_probe(cfg: ExperimentConfig, verifier: Any) -> None:
    if cfg.probe.repeats < 2:
        raise ConfigError(f"'probe.repeats' must be >= 2 to estimate a variance, got {cfg.probe.repeats}")
    if cfg.probe.prompts_per_length < 1:
        raise ConfigError("'probe.prompts_per_length' must be >= 1")
    for arm in cfg.probe.arms:
        if arm not in ARM_NAMES and ":" not in arm:
            raise ConfigError(f"'probe.arms': unknown arm {arm!r}; choose from {', '.join(ARM_NAMES)}")
    span = warm_length_range(verifier, warm_difficulty(cfg))
    lengths = probe_lengths(cfg, verifier)
    if not lengths:
        raise ConfigError("'probe.lengths' is empty and the task has no length knobs to derive it from")
    for i, length in enumerate(lengths):
        if span is not None and not span[0] <= length <= span[1]:
            raise ConfigError(
                f"'probe.lengths[{i}]' = {length} is outside the warm start's lengths {span[0]}-{span[1]}: the "
                "probe measures the arms at the warm start, on tasks it was trained for"
            )
        try:
            examples_for_length(verifier, warm_difficulty(cfg), length, 1, seed=0)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"'probe.lengths[{i}]' = {length}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Base model and warm start


def _warm_targets(cfg: ExperimentConfig) -> list[float | None]:
    return list(cfg.compare.warm_start_pass_rates) or [cfg.warm_start.target_pass_rate]


def prepare_experiment(
    cfg: ExperimentConfig, output_dir: Path, *, regime: bool = False
) -> list[dict[str, Any]]:
    """Build (or reuse) the base model and the warm start(s); return one ``{"target", "path", "pass_rate",
    "steps"}`` per warm start — all of ``compare.warm_start_pass_rates`` when ``regime``, else the recipe's one."""
    configure_threads(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Under `accelerate launch` the main process builds the tiny preset; the others then find it on disk.
    with process_state().main_process_first():
        base = resolve_model_path(cfg.model, output_dir, seed=WARM_START_SEED)
    if not cfg.warm_start.enabled:
        return [{"target": None, "path": base, "pass_rate": math.nan, "steps": 0}]
    targets = _warm_targets(cfg) if regime else [cfg.warm_start.target_pass_rate]
    out = []
    for target in targets:
        sub = cfg if target == cfg.warm_start.target_pass_rate else _with_target(cfg, target)
        folder = (
            output_dir / "warm_start"
            if not (regime and cfg.compare.warm_start_pass_rates)
            else (output_dir / "warm_start" / f"ws{target:g}")
        )
        res = warm_start(sub, base, folder, seed=WARM_START_SEED)
        out.append({"target": target, "path": str(res.path), "pass_rate": res.pass_rate, "steps": res.steps})
    return out


def _with_target(cfg: ExperimentConfig, target: float | None) -> ExperimentConfig:
    return dataclasses.replace(cfg, warm_start=dataclasses.replace(cfg.warm_start, target_pass_rate=target))


# ---------------------------------------------------------------------------------------------------------------
# One run


def run_dir_for(output_dir: Path, arm: str, seed: int, warm_target: float | None = None) -> Path:
    """``OUTPUT_DIR/runs/<arm>-seed<k>`` (or ``runs/ws<rate>/<arm>-seed<k>`` in the low-pass-rate regime) of a
    plain arm; `llm_rl.grid.run_dir_for` for any cell."""
    return grid_run_dir_for(output_dir, arm, seed, None if warm_target is None else f"ws{warm_target:g}")


def child_config(
    cfg: ExperimentConfig, arm: str, seed: int, run_path: Path, warm_target: float | None = None
) -> ExperimentConfig:
    """The resolved config of a plain arm's run (`llm_rl.grid.child_config` for any cell): the recipe with
    ``arm``, ``seed``, its own output dir, and ``compare`` narrowed to itself (so adding a seed to the recipe does
    not invalidate the runs already done)."""
    return grid_child_config(cfg, Cell(Variant(arm, arm, {}), seed, warm_target), run_path)


def run_arm(
    cfg: ExperimentConfig,
    run_path: Path,
    *,
    init_model: str,
    warm_start: Mapping[str, Any] | None = None,
    cell: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], bool]:
    """Train ``cfg.arm`` with ``cfg.seed`` into ``run_path`` unless it already finished.

    Returns ``(final_metrics, trained_now)``. The arm resumes an interrupted run from its own checkpoints
    (budget counters included); ``final_metrics.json`` is written last, so its presence means "finished".
    ``cell`` (`llm_rl.grid.cell_meta`: variant, overrides, sweep value) goes into ``meta.json`` for the report.
    """
    final_file = run_path / FINAL_METRICS
    if final_file.exists():
        return json.loads(final_file.read_text()), False
    if is_main():  # under accelerate launch, only the main process writes the run's files
        RunDir.create(
            run_path,
            config=cfg,
            seeds={"seed": cfg.seed, "warm_start_seed": WARM_START_SEED},
            extra_meta={
                "init_model": init_model,
                "warm_start": dict(warm_start or {}),
                "cell": dict(cell or {"variant": cfg.arm, "arm": cfg.arm, "overrides": {}}),
            },
        )
    barrier()
    run = RunDir(run_path)
    seed_everything(cfg.seed)
    final = train_arm(cfg, run, init_model=init_model, progress=progress)
    if is_main():
        run.write_json(FINAL_METRICS, dict(final or {}))
    barrier()
    return dict(final or {}), True


def check_resumable(run_path: Path, cfg: ExperimentConfig) -> None:
    """Fail early (before the warm start) when ``run_path`` holds a run of a different config."""
    cfg_file = run_path / "config.yaml"
    if cfg_file.exists():  # the error names every key that differs, with both values
        check_same_config(cfg_file, cfg, what=f"{run_path} holds a run")


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: Path, *, split: str = "test") -> dict[str, Any]:
    """Held-out pass@1 / pass@k of the policy in ``checkpoint`` (never counted in any training budget)."""
    configure_threads(cfg)
    policy = load_policy(checkpoint, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden)
    policy.eval()
    timeout = cfg.task.verifier_timeout if cfg.task.verifier_timeout is not None else "auto"
    contained = verifiers.ContainedVerifier(task_verifier(cfg), timeout=timeout)
    # the rows and sampling seed the training loop evaluates with (llm_rl.harness), so a run's final pass@1 reproduces
    data = contained.generate(cfg.eval.num_examples, seed=DATA_SEED, split=split, **cfg.task.difficulty)
    result = evaluate(
        policy,
        contained,
        data,
        k=cfg.eval.pass_k,
        temperature=cfg.eval.temperature,
        max_new_tokens=cfg.task.max_completion_tokens,
        batch_size=max(1, min(len(data), 64)),
        progress=False,
    )
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        **{k: v for k, v in dict(result).items() if not isinstance(v, list)},
    }
