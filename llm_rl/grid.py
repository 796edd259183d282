"""The grid of a comparison: which runs `llm-rl compare` makes, where each one lives, and its resolved config.

A comparison is ``variants x seeds``, optionally ``x sweep values`` (a difficulty axis, e.g. task length) or ``x
warm-start pass rates`` (the low-pass-rate regime). A *variant* is an arm with recipe overrides that apply to its
runs only: every name in ``compare.arms`` is the plain variant of that arm (no overrides), and
``compare.variants`` adds named ones::

    compare:
      arms: [grpo, relabel]
      variants:
        relabel_noprune: {arm: relabel, overrides: {relabel.prune_rejected_steps: false}}
        grpo_steps:      {arm: grpo, overrides: {task.feedback: steps}}
      sweep: {knob: length, values: [2, 4, 6]}

Each (group, variant, seed) is one run directory ``OUTPUT_DIR/runs/[<group>/]<variant>-seed<k>`` whose
``config.yaml`` is the recipe with the variant's overrides applied, ``arm``/``seed``/``output_dir`` set, the task's
difficulty set to the sweep value, ``compare`` narrowed to the run itself and the report's settings (baseline,
thresholds, contrasts, the probe) at their defaults — so adding seeds, variants or sweep values to a finished
experiment, or changing how it is reported, leaves every existing run's config (and so its resumability)
untouched, while changing a variant's overrides is refused for the runs it already made. ``meta.json`` records the cell (variant
name, arm, overrides, sweep value), which the report reads back.

Overrides may touch the arm sections, ``optim`` and ``task.feedback`` only: the model, warm start, budget,
evaluation and the task's rows are what every run of a comparison shares (the report pairs runs item by item on
the same evaluation rows, from the same warm start, at the same budget).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm_rl import arm_configs
from llm_rl.arms import arm_class
from llm_rl.config import BudgetConfig, CompareConfig, ExperimentConfig, ProbeConfig, SweepConfig, arm_config
from relabel_rl.config import ConfigError, config_to_dict, load_config
from relabel_rl.rundir import config_differences

__all__ = [
    "EXTENSIBLE_KEYS",
    "LENGTH_KNOB",
    "Cell",
    "Variant",
    "check_same_experiment",
    "child_config",
    "grid",
    "group_name",
    "probe_lengths",
    "run_dir_for",
    "sweep_budget",
    "sweep_difficulty",
    "variant_config",
    "variants",
    "warm_difficulty",
    "warm_length_range",
]

LENGTH_KNOB = "length"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Top-level sections a variant may override (besides the arm sections) and the single task key.
_OVERRIDABLE_SECTIONS = ("optim",)
_OVERRIDABLE_KEYS = ("task.feedback",)
# What may change between invocations of one experiment: keys that only extend its grid or change how the report
# reads it. Everything else must match the recorded top-level config (each run checks its own config too).
EXTENSIBLE_KEYS = (
    "compare.arms",
    "compare.variants",
    "compare.seeds",
    "compare.sweep.values",
    "compare.warm_start_pass_rates",
    "compare.contrasts",
    "compare.baseline",
    "compare.pass_threshold",
    "compare.threshold_gain",
    "compare.probe_variance",
    "probe",
    "tune.grid",  # what `llm-rl tune` tries; the values it chose (tune.chosen) are part of every arm's runs
    "tune.seeds",
    "tune.budget",
)


# ---------------------------------------------------------------------------------------------------------------
# Variants


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: ``name`` (its run directories' prefix), the ``arm`` it runs and its
    ``overrides`` (flattened dotted keys; empty for a plain arm)."""

    name: str
    arm: str
    overrides: Mapping[str, Any]

    @property
    def ablation(self) -> dict[str, Any]:
        """The overrides other than ``task.feedback``: what makes this variant differ from its plain arm."""
        return {k: v for k, v in self.overrides.items() if k != "task.feedback"}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"relabel": {"puct": {"c": 1}}, "optim.epochs": 2}`` -> ``{"relabel.puct.c": 1, "optim.epochs": 2}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not _is_dict_field(dotted):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _is_dict_field(dotted: str) -> bool:
    """Whether ``dotted`` names a mapping-valued field (e.g. ``grpo.trl``), whose value is one override."""
    node: Any = ExperimentConfig()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return isinstance(node, dict)


def variants(cfg: ExperimentConfig) -> list[Variant]:
    """``compare.arms`` as plain variants, then ``compare.variants`` in recipe order (not validated here)."""
    out = [Variant(arm, arm, {}) for arm in cfg.compare.arms]
    out += [Variant(name, v.arm, flatten(v.overrides)) for name, v in cfg.compare.variants.items()]
    return out


def _arm_sections() -> set[str]:
    """The recipe sections that are an arm's own config (``grpo``, ``relabel``, ... and arms added later)."""
    hints = typing.get_type_hints(ExperimentConfig)
    return {name for name, tp in hints.items() if getattr(tp, "__module__", "") == arm_configs.__name__}


def validate_variants(cfg: ExperimentConfig) -> None:
    """Names are identifiers and unique, arms resolve, overrides are allowed keys of valid type.

    Raises:
      ConfigError: naming ``compare.variants.<name>...``.
    """
    seen: set[str] = set()
    sections = _arm_sections() | set(_OVERRIDABLE_SECTIONS)
    for v in variants(cfg):
        plain = not v.overrides and v.name in cfg.compare.arms
        where = "'compare.arms'" if plain else f"'compare.variants.{v.name}'"
        if v.name in seen:
            raise ConfigError(f"'compare' names {v.name!r} twice (arms and variants share one namespace)")
        seen.add(v.name)
        if not plain and not _NAME.match(v.name):
            raise ConfigError(f"{where}: a variant name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        try:
            arm_class(v.arm)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        for key in v.overrides:
            if key in _OVERRIDABLE_KEYS or key.split(".", 1)[0] in sections:
                continue
            raise ConfigError(
                f"'compare.variants.{v.name}.overrides': '{key}' cannot differ between the runs of one comparison (they share the "
                "model, warm start, budget, evaluation rows and task); a variant may override the "
                f"{', '.join(sorted(sections))} sections and {', '.join(_OVERRIDABLE_KEYS)}"
            )
        variant_config(cfg, v)


def variant_config(cfg: ExperimentConfig, v: Variant) -> ExperimentConfig:
    """The recipe with ``v``'s overrides applied and ``arm = v.arm`` (validated like a recipe)."""
    if not v.overrides:
        return dataclasses.replace(cfg, arm=v.arm)
    tree = config_to_dict(cfg)
    tree["arm"] = v.arm
    try:
        return load_config(ExperimentConfig, data=tree, overrides=dict(v.overrides))
    except ConfigError as e:
        raise ConfigError(
            problems=[f"'compare.variants.{v.name}.overrides': {p}" for p in e.problems]
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Sweep and warm-start difficulty


def sweep_budget(cfg: ExperimentConfig, value: float | None) -> BudgetConfig:
    """``budget`` at sweep value ``value``: ``value`` x the recipe's limit and evaluation interval under
    ``compare.sweep.scale_budget`` (`SweepConfig`), else the recipe's own."""
    if value is None or not cfg.compare.sweep.scale_budget:
        return cfg.budget
    return dataclasses.replace(
        cfg.budget, limit=cfg.budget.limit * value, eval_every=cfg.budget.eval_every * value
    )


def sweep_difficulty(cfg: ExperimentConfig, value: float | None) -> dict[str, Any]:
    """``task.difficulty`` at sweep value ``value`` (the recipe's own when None)."""
    difficulty = dict(cfg.task.difficulty)
    if value is None:
        return difficulty
    if cfg.compare.sweep.knob == LENGTH_KNOB:
        return {**difficulty, "min_steps": int(value), "max_steps": int(value)}
    return {**difficulty, cfg.compare.sweep.knob: value}


def warm_difficulty(cfg: ExperimentConfig) -> dict[str, Any]:
    """The difficulty the warm start trains on: ``warm_start.difficulty`` when given; else, for a sweep over
    lengths, ``task.difficulty`` with the sweep's whole range of lengths (one warm start covers every value);
    else ``task.difficulty``."""
    if cfg.warm_start.difficulty is not None:
        return dict(cfg.warm_start.difficulty)
    values = cfg.compare.sweep.values
    if values and cfg.compare.sweep.knob == LENGTH_KNOB:
        return {**dict(cfg.task.difficulty), "min_steps": int(min(values)), "max_steps": int(max(values))}
    return dict(cfg.task.difficulty)


def warm_length_range(verifier: Any, difficulty: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(min_steps, max_steps)`` of ``difficulty`` (the generator's defaults for a knob not given); None when
    the task has no length knobs."""
    try:
        params = inspect.signature(verifier.make_example).parameters
    except (AttributeError, TypeError, ValueError):
        return None
    defaults = {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if not {"min_steps", "max_steps"} <= set(defaults):
        return None
    low = difficulty.get("min_steps", defaults["min_steps"])
    high = difficulty.get("max_steps", defaults["max_steps"])
    return int(low), int(high)


def probe_lengths(cfg: ExperimentConfig, verifier: Any) -> list[int]:
    """``probe.lengths``, or every length of the warm start's range when it is empty."""
    if cfg.probe.lengths:
        return list(cfg.probe.lengths)
    span = warm_length_range(verifier, warm_difficulty(cfg))
    return [] if span is None else list(range(span[0], span[1] + 1))


# ---------------------------------------------------------------------------------------------------------------
# Cells, directories, child configs


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a variant and a seed, in a group (a sweep value or a warm-start target, or neither)."""

    variant: Variant
    seed: int
    warm_target: float | None = None
    sweep_value: float | None = None


def group_name(cfg: ExperimentConfig, cell: Cell) -> str | None:
    """The run's group folder: ``ws<rate>`` (low-pass-rate regime), ``<knob><value>`` (sweep), or None."""
    if cell.warm_target is not None:
        return f"ws{cell.warm_target:g}"
    if cell.sweep_value is not None:
        return f"{cfg.compare.sweep.knob}{cell.sweep_value:g}"
    return None


def run_dir_for(output_dir: Path, name: str, seed: int, group: str | None = None) -> Path:
    """``OUTPUT_DIR/runs/[<group>/]<name>-seed<k>`` (a plugin arm's ``module:Class`` made a file name)."""
    base = output_dir / "runs"
    if group is not None:
        base = base / group
    return base / f"{re.sub(r'[^A-Za-z0-9_]', '_', name)}-seed{seed}"


def grid(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell, group by group, variant by variant, seed by seed."""
    targets: list[float | None] = list(cfg.compare.warm_start_pass_rates) or [None]
    values: list[float | None] = list(cfg.compare.sweep.values) or [None]
    return [
        Cell(v, seed, target, value)
        for target in targets
        for value in values
        for v in variants(cfg)
        for seed in cfg.compare.seeds
    ]


def child_config(cfg: ExperimentConfig, cell: Cell, run_path: Path) -> ExperimentConfig:
    """The resolved config of one run (module docstring)."""
    # the arm's tuned values (`llm-rl tune`'s tune.chosen[arm], tune narrowed to them), then the variant's overrides
    sub = variant_config(arm_config(cfg, cell.variant.arm), cell.variant)
    task = dataclasses.replace(sub.task, difficulty=sweep_difficulty(cfg, cell.sweep_value))
    warm = dataclasses.replace(sub.warm_start, difficulty=warm_difficulty(cfg))
    if cell.warm_target is not None:
        warm = dataclasses.replace(warm, target_pass_rate=cell.warm_target)
    # the run's own cell; the report's settings (baseline, thresholds, contrasts, probe) keep their defaults, so
    # changing them re-renders the report without invalidating any run
    compare = CompareConfig(
        arms=[cell.variant.arm],
        seeds=[cell.seed],
        sweep=SweepConfig(
            knob=cfg.compare.sweep.knob,
            values=[cell.sweep_value] if cell.sweep_value is not None else [],
        ),
        warm_start_pass_rates=[cell.warm_target] if cell.warm_target is not None else [],
    )
    return dataclasses.replace(
        sub,
        arm=cell.variant.arm,
        seed=cell.seed,
        output_dir=str(run_path),
        task=task,
        budget=sweep_budget(cfg, cell.sweep_value),
        warm_start=warm,
        compare=compare,
        probe=ProbeConfig(),
    )


def cell_meta(cfg: ExperimentConfig, cell: Cell) -> dict[str, Any]:
    """What ``meta.json`` records about the cell (read back by the report)."""
    return {
        "variant": cell.variant.name,
        "arm": cell.variant.arm,
        "overrides": dict(cell.variant.overrides),
        "warm_target": cell.warm_target,
        "sweep": None
        if cell.sweep_value is None
        else {"knob": cfg.compare.sweep.knob, "value": cell.sweep_value},
    }


# ---------------------------------------------------------------------------------------------------------------
# The top-level record of an experiment


def _without(tree: dict[str, Any], dotted: str) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def experiment_key(config: Any) -> dict[str, Any]:
    """The config without `EXTENSIBLE_KEYS`: what must not change between invocations of one experiment."""
    tree = config_to_dict(config)
    for key in EXTENSIBLE_KEYS:
        _without(tree, key)
    return tree


def check_same_experiment(out: Path, cfg: ExperimentConfig) -> None:
    """Refuse an output directory whose recorded experiment differs from ``cfg`` in more than its grid (seeds,
    arms, variants, sweep values) or report settings; name every differing key.

    Raises:
      ConfigError
    """
    cfg_file = out / "config.yaml"
    if not cfg_file.exists():
        return
    recorded = yaml.safe_load(cfg_file.read_text()) or {}
    differences = config_differences(experiment_key(recorded), experiment_key(cfg))
    if differences:
        shown = "; ".join(differences[:8]) + (
            f"; and {len(differences) - 8} more" if len(differences) > 8 else ""
        )
        raise ConfigError(
            f"{out} holds a different experiment ({len(differences)} key(s) differ: {shown}); seeds, arms, "
            "variants and sweep values may be added to a finished experiment, anything else needs a new "
            "'output_dir'"
        )
