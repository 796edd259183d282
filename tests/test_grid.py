"""llm_rl.grid and the checks before work: variants (overrides apply to that variant only), the sweep and its one
warm start, extending a finished experiment, `eval.num_examples > task.test_size`, `--report-only` on a mistyped
directory. No model is built here."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import verifiers
from llm_rl.arms.relabel import prune_rejected_steps
from llm_rl.compare import run_compare
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import validate_experiment
from llm_rl.grid import (
    Cell,
    Variant,
    check_same_experiment,
    child_config,
    grid,
    group_name,
    probe_lengths,
    run_dir_for,
    variants,
    warm_difficulty,
)
from relabel_rl.config import ConfigError, load_config, to_yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
EXPERIMENT = ROOT / "recipes" / "experiment.yaml"

VARIANTS = {
    "relabel_novalue": {"arm": "relabel", "overrides": {"relabel.value_loss_coef": 0.0}},
    "relabel_steps": {"arm": "relabel", "overrides": {"task": {"feedback": "steps"}}},
    "grpo_lr": {"arm": "grpo", "overrides": {"grpo.trl": {"learning_rate": 1e-4, "num_generations": 4}}},
}


def _cfg(*overrides, **compare):
    over = ["--output_dir", "out"]
    for key, value in compare.items():
        over += [f"--compare.{key}", yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()]
    return load_config(ExperimentConfig, QUICKSTART, [*over, *overrides])


def _children(cfg):
    return {
        (c.variant.name, c.seed, c.sweep_value): child_config(
            cfg, c, run_dir_for(Path("out"), c.variant.name, c.seed)
        )
        for c in grid(cfg)
    }


def test_a_variants_overrides_apply_to_that_variant_only():
    cfg = _cfg(arms=["grpo", "relabel"], variants=VARIANTS, seeds=[0, 1])
    validate_experiment(cfg, arms=cfg.compare.arms)
    assert [v.name for v in variants(cfg)] == [
        "grpo",
        "relabel",
        "relabel_novalue",
        "relabel_steps",
        "grpo_lr",
    ]
    kids = _children(cfg)
    assert len(kids) == 5 * 2
    for seed in (0, 1):
        plain, noprune = kids[("relabel", seed, None)], kids[("relabel_novalue", seed, None)]
        steps, grpo, grpo_lr = (
            kids[("relabel_steps", seed, None)],
            kids[("grpo", seed, None)],
            kids[("grpo_lr", seed, None)],
        )
        assert plain.relabel.value_loss_coef == 0.5 and noprune.relabel.value_loss_coef == 0.0
        assert not prune_rejected_steps(plain) and not prune_rejected_steps(noprune)
        assert prune_rejected_steps(steps) and steps.task.feedback == "steps"  # pruning follows task.feedback
        assert {plain.task.feedback, noprune.task.feedback, grpo.task.feedback} == {"outcome"}
        assert grpo.grpo.trl["learning_rate"] == 5e-5 and grpo_lr.grpo.trl["learning_rate"] == 1e-4
        assert (noprune.arm, steps.arm, grpo_lr.arm) == ("relabel", "relabel", "grpo")
        # everything the runs share is untouched by any variant
        for other in (noprune, steps, grpo_lr):
            assert (other.budget, other.eval, other.model, other.warm_start) == (
                plain.budget, plain.eval, plain.model, plain.warm_start
            )  # fmt: skip
    # a child's compare section is narrowed to itself: adding seeds or variants leaves existing runs' configs alone
    more = _cfg(arms=["grpo", "relabel"], variants={**VARIANTS, "x": {"arm": "mc_value"}}, seeds=[0, 1, 2])
    assert _children(more)[("relabel_novalue", 1, None)] == kids[("relabel_novalue", 1, None)]
    # ... and so does changing how the experiment is reported
    reported = _cfg("--probe.repeats", "4", arms=["grpo", "relabel"], variants=VARIANTS, seeds=[0, 1],
                    probe_variance=False, pass_threshold=0.9, threshold_gain=0.1, contrasts=[["grpo", "relabel"]])  # fmt: skip
    assert _children(reported) == kids


def test_tuned_values_apply_per_arm_then_the_variants_overrides():
    """`llm-rl tune`'s tune.chosen reaches each arm's runs (its variants' too); a variant's own override wins."""
    chosen = "{relabel: {optim.learning_rate: 0.001}, grpo: {grpo.trl.learning_rate: 0.0002}}"
    variants_ = {
        "relabel_novalue": VARIANTS["relabel_novalue"],
        "relabel_lr": {"arm": "relabel", "overrides": {"optim.learning_rate": 0.01}},
    }
    cfg = _cfg("--tune.chosen", chosen, arms=["grpo", "relabel"], variants=variants_, seeds=[0])
    validate_experiment(cfg, arms=cfg.compare.arms)
    kids = {name: c for (name, _, _), c in _children(cfg).items()}
    assert kids["relabel"].optim.learning_rate == kids["relabel_novalue"].optim.learning_rate == 0.001
    assert kids["relabel_novalue"].relabel.value_loss_coef == 0.0
    assert kids["relabel_lr"].optim.learning_rate == 0.01
    assert kids["grpo"].grpo.trl["learning_rate"] == 0.0002
    assert kids["grpo"].optim.learning_rate == cfg.optim.learning_rate  # not relabel's tuned value
    # each run records only its own arm's tuned values
    assert kids["relabel"].tune.chosen == {"relabel": {"optim.learning_rate": 0.001}}
    assert kids["grpo"].tune.chosen == {"grpo": {"grpo.trl.learning_rate": 0.0002}}


@pytest.mark.parametrize(
    "variant, match",
    [
        (
            {"arm": "relabel", "overrides": {"budget.limit": 10}},
            r"compare\.variants\.v\.overrides.*budget\.limit",
        ),
        (
            {"arm": "relabel", "overrides": {"task.difficulty": {"min_steps": 4}}},
            r"task\.difficulty.*cannot differ",
        ),
        ({"arm": "relabel", "overrides": {"relabel.prune_rejected_step": False}}, r"prune_rejected_step"),
        (
            {"arm": "relabel", "overrides": {"task.feedback": "sometimes"}},
            r"compare\.variants\.v.*task\.feedback",
        ),
        ({"arm": "nope"}, r"compare\.variants\.v.*unknown arm"),
    ],
)
def test_bad_variants_are_refused_naming_the_key(variant, match):
    cfg = _cfg(variants={"v": variant})
    with pytest.raises(ConfigError, match=match):
        validate_experiment(cfg, arms=cfg.compare.arms)


def test_variant_names_are_one_namespace_with_arms():
    with pytest.raises(ConfigError, match="twice"):
        validate_experiment(c := _cfg(variants={"relabel": {"arm": "grpo"}}), arms=c.compare.arms)
    with pytest.raises(ConfigError, match="identifier"):
        validate_experiment(c := _cfg(variants={"my-variant": {"arm": "grpo"}}), arms=c.compare.arms)
    with pytest.raises(ConfigError, match="baseline"):
        validate_experiment(c := _cfg(baseline="gpro"), arms=c.compare.arms)
    with pytest.raises(ConfigError, match=r"contrasts\[0\]"):
        validate_experiment(c := _cfg(contrasts=[["relabel", "nope"]]), arms=c.compare.arms)


def test_the_sweep_has_one_warm_start_covering_every_length():
    cfg = _cfg("--task.max_steps", "7", "--task.max_completion_tokens", "120", "--warm_start.difficulty", "null",
               sweep={"knob": "length", "values": [2, 4, 6]}, seeds=[0])  # fmt: skip
    validate_experiment(cfg, arms=cfg.compare.arms)
    assert warm_difficulty(cfg) == {"min_steps": 2, "max_steps": 6}  # derived from the sweep
    cells = grid(cfg)
    assert len(cells) == 3 * 3 and {group_name(cfg, c) for c in cells} == {"length2", "length4", "length6"}
    for c in cells:
        child = child_config(cfg, c, Path("x"))
        assert child.task.difficulty == {"min_steps": c.sweep_value, "max_steps": c.sweep_value}
        assert child.warm_start.difficulty == {"min_steps": 2, "max_steps": 6}  # the same warm start for all
        assert child.compare.sweep.values == [c.sweep_value]
    other = _cfg("--task.max_steps", "5", sweep={"knob": "max_operand", "values": [5, 9]}, seeds=[0])
    validate_experiment(other, arms=other.compare.arms)
    assert child_config(other, grid(other)[0], Path("x")).task.difficulty["max_operand"] == 5


def test_a_scaled_budget_gives_each_length_its_multiple_and_nothing_else_changes():
    plain = _cfg("--task.max_steps", "5", sweep={"values": [2, 4]}, seeds=[0])
    scaled = _cfg("--task.max_steps", "5", sweep={"values": [2, 4], "scale_budget": True}, seeds=[0])
    validate_experiment(scaled, arms=scaled.compare.arms)
    limit, every = scaled.budget.limit, scaled.budget.eval_every
    for p, s in zip(grid(plain), grid(scaled)):
        a, b = child_config(plain, p, Path("x")), child_config(scaled, s, Path("x"))
        assert a.budget == plain.budget  # unscaled: the recipe's budget at every length
        assert (b.budget.limit, b.budget.eval_every) == (limit * s.sweep_value, every * s.sweep_value)
        assert b.budget.axis == a.budget.axis and dataclasses.replace(b, budget=a.budget) == a


@pytest.mark.parametrize(
    "overrides, compare, match",
    [
        (
            ["--task.max_steps", "7"],
            {"sweep": {"values": [2, 6]}},
            r"length 6 is outside the warm start's lengths 1-4",
        ),
        (
            ["--warm_start.difficulty", "null"],
            {"sweep": {"values": [2, 6]}},
            r"task\.max_steps.*below the 7 steps",
        ),
        ([], {"sweep": {"values": [2, 2]}}, "repeats"),
        ([], {"sweep": {"values": [2]}, "warm_start_pass_rates": [0.1]}, "cannot be combined"),
        ([], {"sweep": {"knob": "max_stepz", "values": [2]}}, "max_stepz"),
        (
            [],
            {"sweep": {"scale_budget": True}},
            r"scale_budget.*needs 'compare\.sweep\.values' > 0, got \[\]",
        ),
        (
            ["--probe.lengths", "[1, 5]"],
            {},
            r"probe\.lengths\[1\]' = 5 is outside the warm start's lengths 1-4",
        ),
        (["--task.test_size", "100"], {}, r"'eval\.num_examples' \(500\) exceeds 'task\.test_size' \(100\)"),
    ],
)
def test_grid_problems_are_refused_before_work(overrides, compare, match):
    cfg = _cfg(*overrides, **compare)
    with pytest.raises(ConfigError, match=match):
        validate_experiment(cfg, arms=cfg.compare.arms, probe=True)


def test_probe_lengths_default_to_the_warm_start_range():
    cfg = _cfg("--probe.lengths", "[]")
    assert probe_lengths(cfg, verifiers.load("chain_arithmetic")) == [1, 2, 3, 4]


def test_eval_above_test_size_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    cfg = load_config(ExperimentConfig, QUICKSTART, ["--output_dir", str(out), "--eval.num_examples", "600"])
    with pytest.raises(ConfigError, match=r"eval\.num_examples.*600.*task\.test_size.*500"):
        run_compare(cfg, progress=False)
    assert not out.exists()


def test_a_finished_experiment_takes_more_seeds_arms_and_values_but_nothing_else(tmp_path):
    cfg = load_config(ExperimentConfig, QUICKSTART, ["--output_dir", str(tmp_path)])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    grown = load_config(
        ExperimentConfig,
        QUICKSTART,
        ["--output_dir", str(tmp_path), "--compare.seeds", "[0, 1, 2, 3, 4]", "--compare.variants",
         "{v: {arm: relabel, overrides: {relabel.num_candidates: 2}}}", "--probe.repeats", "16"],
    )  # fmt: skip
    check_same_experiment(tmp_path, grown)  # not refused
    changed = load_config(
        ExperimentConfig, QUICKSTART, ["--output_dir", str(tmp_path), "--budget.limit", "90000"]
    )
    with pytest.raises(ConfigError, match=r"'budget\.limit': 50000\.0 recorded, 90000\.0 now"):
        check_same_experiment(tmp_path, changed)


def test_report_only_on_a_mistyped_directory_fails_naming_it(tmp_path):
    missing = tmp_path / "runs" / "quickstrat"
    p = subprocess.run(
        [sys.executable, "-m", "llm_rl.cli", "compare", str(QUICKSTART), "--report-only", "--output_dir", str(missing)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    assert str(missing) in p.stderr and "does not exist" in p.stderr
    assert not missing.exists() and not (tmp_path / "runs").exists()  # nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = load_config(ExperimentConfig, QUICKSTART, ["--output_dir", str(empty)])
    with pytest.raises(ConfigError, match="holds no comparison"):
        run_compare(cfg, report_only=True, progress=False)
    assert list(empty.iterdir()) == []


def test_shipped_experiment_recipe_is_a_sweep_of_five_seeds_and_three_lengths():
    cfg = load_config(ExperimentConfig, EXPERIMENT)
    validate_experiment(cfg, arms=cfg.compare.arms, probe=True)
    assert len(cfg.compare.seeds) >= 5 and len(cfg.compare.sweep.values) >= 3
    assert {v.name for v in variants(cfg)} >= {"grpo", "relabel"}
    feedbacks = {child_config(cfg, Cell(v, 0), Path("x")).task.feedback for v in variants(cfg)}
    assert feedbacks == {"outcome", "steps"}
    assert cfg.eval.num_examples >= 500


def test_variant_dataclass_ablation_excludes_feedback():
    v = Variant("x", "relabel", {"task.feedback": "steps", "relabel.num_candidates": 2})
    assert v.ablation == {"relabel.num_candidates": 2}


def test_one_warm_start_is_shared_by_every_sweep_value_and_feedback_setting():
    """The warm start's cache key follows its own difficulty, not the RL task's difficulty or feedback."""
    from llm_rl.warm_start import _fingerprint

    cfg = _cfg("--task.max_steps", "7", sweep={"knob": "length", "values": [2, 4]}, seeds=[0])
    keys = {_fingerprint(child_config(cfg, c, Path("x")), "base", 0) for c in grid(cfg)}
    steps = load_config(ExperimentConfig, QUICKSTART, ["--task.feedback", "steps"])
    assert len(keys) == 1
    assert _fingerprint(steps, "base", 0) == _fingerprint(
        load_config(ExperimentConfig, QUICKSTART), "base", 0
    )
    wider = load_config(
        ExperimentConfig, QUICKSTART, ["--warm_start.difficulty", "{min_steps: 1, max_steps: 6}"]
    )
    assert _fingerprint(wider, "base", 0) != _fingerprint(steps, "base", 0)
