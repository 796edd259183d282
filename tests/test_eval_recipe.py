"""``llm-rl eval MODEL`` without ``--recipe`` (issue #16): inside a run directory it evaluates on the task the run
recorded; outside every run directory it says which task and how many rows it used."""

from __future__ import annotations

import json

import pytest
import yaml

from llm_rl import cli
from llm_rl.commands import recorded_recipe
from llm_rl.config import ExperimentConfig
from llm_rl.model import build_tiny_model
from relabel_rl.config import config_to_dict, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
    "task": {"difficulty": {"min_steps": 1, "max_steps": 1, "max_start": 5}, "max_completion_tokens": 8},
    "eval": {"num_examples": 2, "pass_k": 1},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as `llm-rl train` leaves it: config.yaml, final/, checkpoints/checkpoint-N/."""
    run = tmp_path_factory.mktemp("out") / "runs" / "relabel-seed0"
    cfg = load_config(ExperimentConfig, data={**SMALL, "output_dir": str(run)})
    build_tiny_model(run / "final", hidden_size=32, num_layers=1, num_heads=2)
    (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return run


def test_recorded_recipe_is_the_nearest_config_with_a_task(run_dir, tmp_path):
    assert recorded_recipe(run_dir) == run_dir / "config.yaml"
    assert recorded_recipe(run_dir / "final") == run_dir / "config.yaml"
    assert recorded_recipe(run_dir / "checkpoints" / "checkpoint-3") == run_dir / "config.yaml"
    warm = tmp_path / "out" / "warm_start"
    (warm / "model").mkdir(parents=True)
    (warm / "config.yaml").write_text(yaml.safe_dump({"task": {"verifier": "countdown"}, "seed": 0}))
    assert recorded_recipe(warm / "model") == warm / "config.yaml"
    (tmp_path / "elsewhere" / "model").mkdir(parents=True)
    (tmp_path / "elsewhere" / "config.yaml").write_text("name: not a recipe\n")  # no task section: ignored
    assert recorded_recipe(tmp_path / "elsewhere" / "model") is None


def test_eval_inside_a_run_directory_uses_its_task(run_dir, capsys):
    assert cli.main(["eval", str(run_dir / "final")]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["recipe"] == str(run_dir / "config.yaml") and result["task"] == "chain_arithmetic"
    assert (
        "from the run directory" in out.err
        and "'max_start': 5" in out.err
        and "the first 2 test rows" in out.err
    )


def test_eval_outside_any_run_directory_says_what_it_used(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "model", hidden_size=32, num_layers=1, num_heads=2)
    args = ["--eval.num_examples", "2", "--eval.pass_k", "1", "--task.max_completion_tokens", "8"]
    assert cli.main(["eval", str(model), *args]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["recipe"] is None
    assert "inside no run directory" in out.err and "built-in defaults" in out.err
    assert "task chain_arithmetic" in out.err and "the first 2 test rows" in out.err and "--recipe" in out.err
