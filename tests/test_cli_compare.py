"""`llm-rl train / eval / compare / probe-variance` command lines: bad input reaches the user before heavy work."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llm_rl.commands import CommandError, parse_command
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import child_config, run_dir_for, validate_experiment
from relabel_rl.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def _cli(*args, timeout=60):
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "llm_rl.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return p, time.perf_counter() - t0


def test_quickstart_recipe_loads():
    cfg = load_config(ExperimentConfig, QUICKSTART)
    assert cfg.compare.arms == ["grpo", "relabel", "mc_value"] and len(cfg.compare.seeds) == 5
    assert cfg.model.name_or_path == "tiny"


# the CPU recipes (others, e.g. hub-data GPU recipes, cannot be validated offline)
CPU_RECIPES = [
    QUICKSTART,
    ROOT / "recipes" / "llm" / "low_pass_rate.yaml",
    ROOT / "recipes" / "llm" / "variance_probe.yaml",
]


@pytest.mark.parametrize("recipe", CPU_RECIPES, ids=lambda p: p.name)
def test_shipped_llm_recipes_validate(recipe):
    cfg = load_config(ExperimentConfig, recipe)
    validate_experiment(cfg, arms=cfg.compare.arms, probe=True)


def test_compare_bad_key_fails_fast_naming_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load(QUICKSTART.read_text())
    data["relabel"] = {"puct": {"num_simulation": 8}}
    data["output_dir"] = str(tmp_path / "out")
    recipe.write_text(yaml.safe_dump(data))
    p, seconds = _cli("compare", recipe)
    assert p.returncode == 2
    assert (
        "relabel.puct.num_simulation" in p.stderr
        and "did you mean 'relabel.puct.num_simulations'" in p.stderr
    )
    # "fast" = about as fast as the CLI can start at all on this machine (its imports, under whatever load the
    # machine has), not a fixed number of seconds: a warm start or a model load would take many times longer
    _, startup = _cli("compare", "--help")
    assert seconds < max(5.0, 2.5 * startup), (seconds, startup)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_compare_bad_override_and_missing_recipe():
    p, _ = _cli("compare", QUICKSTART, "--budget.limit", "lots")
    assert p.returncode == 2 and "'budget.limit' must be a number" in p.stderr
    p, _ = _cli("compare")
    assert p.returncode == 2 and "missing RECIPE" in p.stderr
    p, _ = _cli("compare", ROOT / "no_such.yaml")
    assert p.returncode == 2 and "recipe not found" in p.stderr
    p, _ = _cli("train", "--help")
    assert p.returncode == 0 and "llm-rl train RECIPE" in p.stdout


@pytest.mark.parametrize("command", ["compare", "tune", "probe-variance"])
def test_workers_is_a_flag_of_the_commands_that_run_several_jobs(command, tmp_path, capsys):
    """`--workers` reaches the command (through the CLI's early recipe check) and a bad value is refused, naming
    the flag, before any model is loaded or anything written."""
    from llm_rl.cli import main

    recipe = tmp_path / "r.yaml"
    data = yaml.safe_load(QUICKSTART.read_text())
    data["output_dir"] = str(tmp_path / "out")
    data["tune"] = {"grid": {"grpo": {"grpo.trl.learning_rate": [1e-5]}}, "seeds": [100]}
    recipe.write_text(yaml.safe_dump(data))
    assert main([command, str(recipe), "--workers", "none"]) == 2
    err = capsys.readouterr().err
    assert "--workers must be a positive integer or 'auto', got 'none'" in err, err
    assert not (tmp_path / "out").exists()


def test_parse_command_splits_own_flags_from_overrides():
    recipe, own, cfg = parse_command(
        [
            str(QUICKSTART),
            "--report-only",
            "--seed",
            "3",
            "--relabel.puct.num_simulations=4",
            "--checkpoint",
            "x",
        ],
        prog="t",
        flags={"report_only": False, "checkpoint": True},
        usage="",
    )
    assert recipe == str(QUICKSTART) and own == {"report_only": True, "checkpoint": "x"}
    assert cfg.seed == 3 and cfg.relabel.puct.num_simulations == 4
    with pytest.raises(CommandError, match="needs a value"):
        parse_command([str(QUICKSTART), "--checkpoint"], prog="t", flags={"checkpoint": True}, usage="")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["--task.verifier", "no_such_task"], r"'task\.verifier'"),
        (["--task.difficulty", "{max_stepz: 3}"], r"'task\.difficulty'.*max_stepz"),
        (["--compare.seeds", "[0, 0]"], r"compare\.seeds"),
        (["--compare.pass_threshold", "1.5"], r"compare\.pass_threshold"),
        (["--budget.eval_every", "1000000000"], r"budget\.eval_every"),
        (["--probe.repeats", "1"], r"probe\.repeats"),
        (["--probe.lengths", "[0]"], r"probe\.lengths\[0\]"),
        (["--compare.warm_start_pass_rates", "[0.1, 2.0]"], r"warm_start_pass_rates\[1\]"),
    ],
)
def test_validate_experiment_names_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):  # at load (declared ranges) or in validate_experiment
        cfg = load_config(ExperimentConfig, QUICKSTART, overrides)
        validate_experiment(cfg, arms=["relabel"], probe=True)


def test_grpo_trl_dict_is_validated_before_heavy_work(tmp_path):
    from llm_rl.compare import run_compare

    out = tmp_path / "out"
    cfg = load_config(
        ExperimentConfig, QUICKSTART, ["--output_dir", str(out), "--grpo.trl", "{num_generation: 4}"]
    )
    with pytest.raises(ConfigError, match=r"grpo\.trl\.num_generation"):
        run_compare(cfg, progress=False)
    assert not out.exists()


def test_run_layout_and_child_config():
    cfg = load_config(ExperimentConfig, QUICKSTART, ["--output_dir", "out"])
    path = run_dir_for(Path("out"), "grpo", 2)
    assert path == Path("out/runs/grpo-seed2")
    assert run_dir_for(Path("out"), "grpo", 2, 0.05) == Path("out/runs/ws0.05/grpo-seed2")
    child = child_config(cfg, "grpo", 2, path)
    assert (child.arm, child.seed, child.output_dir) == ("grpo", 2, str(path))
    assert child.compare.seeds == [2] and child.compare.arms == ["grpo"]
    # adding a seed to the recipe leaves the resolved config of an existing run unchanged
    more = load_config(
        ExperimentConfig, QUICKSTART, ["--output_dir", "out", "--compare.seeds", "[0, 1, 2, 3]"]
    )
    assert child_config(more, "grpo", 2, path) == child
    ws = child_config(cfg, "relabel", 0, path, 0.05)
    assert ws.warm_start.target_pass_rate == 0.05 and ws.compare.warm_start_pass_rates == [0.05]


def test_compare_refuses_a_directory_of_another_experiment(tmp_path):
    from llm_rl.compare import run_compare
    from relabel_rl.config import config_to_dict

    out = tmp_path / "out"
    cfg = load_config(ExperimentConfig, QUICKSTART, ["--output_dir", str(out), "--compare.arms", "[relabel]"])
    path = run_dir_for(out, "relabel", 0)
    path.mkdir(parents=True)
    other = child_config(load_config(ExperimentConfig, QUICKSTART, ["--seed", "1"]), "relabel", 0, path)
    (path / "config.yaml").write_text(yaml.safe_dump(config_to_dict(dataclasses_replace_budget(other))))
    with pytest.raises(ConfigError, match="different config"):
        run_compare(cfg, progress=False)
    assert not (out / "warm_start").exists() and not (out / "base_model").exists()


def dataclasses_replace_budget(cfg):
    import dataclasses

    return dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, limit=cfg.budget.limit + 1))


def test_tasks_does_not_load_the_model_stack():
    code = "import sys; from llm_rl.cli import main; main(['tasks']); print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "False", p.stderr[-2000:]
