"""`llm-rl tune`: the validation split (disjoint from test and train by construction), the grid's checks, and the
mechanics end to end on the tiny preset (tiny grid, tiny budget): runs on the validation rows, the pick, the tuned
recipe that `compare`/`train` apply per arm, resume, and a grown grid reusing the runs already done."""

from __future__ import annotations

import json
import re

import pytest
import yaml

import verifiers
from llm_rl.config import ExperimentConfig, arm_config
from llm_rl.experiment import child_config
from llm_rl.harness.data import check_task, eval_rows, load_task
from llm_rl.tune import cmd_tune, grid_points, point_name
from relabel_rl.config import ConfigError, load_config
from verifiers.base import split_of
from verifiers.tasks.chain_arithmetic import ChainArithmetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = {
    "train_size": 64,
    "test_size": 16,
    "validation_size": 24,
    "difficulty": {"min_steps": 2, "max_steps": 3},
}


# --- the validation split --------------------------------------------------------------------------------------


def test_validation_rows_are_disjoint_from_test_and_train_and_leave_test_unchanged() -> None:
    plain = load_task(load_config(ExperimentConfig, data={"task": TASK}))
    assert plain.validation == []  # drawn only when a run evaluates on it
    cfg = load_config(
        ExperimentConfig, data={"task": TASK, "eval": {"split": "validation", "num_examples": 8}}
    )
    task = load_task(cfg)
    prompts = {name: {r["prompt"] for r in task.split(name)} for name in ("train", "validation", "test")}
    assert len(prompts["validation"]) == 24 and len(prompts["test"]) == 16
    assert not prompts["validation"] & prompts["test"] and not prompts["validation"] & prompts["train"]
    assert task.test == plain.test and task.train == plain.train  # the report's rows do not move
    # every validation prompt hashes to the test split: no train row — the RL arms' or the warm start's SFT
    # rows, which are train-split draws with another seed — can ever be one
    assert {split_of(p) for p in prompts["validation"]} == {"test"}
    assert eval_rows(cfg) == task.validation[:8]


class ShuffledChain(ChainArithmetic):
    """A plugin generator that is NOT prefix-stable (its rows come in an order that depends on n): the validation
    rows must still avoid every test prompt."""

    name = "shuffled_chain"

    def generate(self, n, *, seed, split="train", **difficulty):
        rows = super().generate(n, seed=seed, split=split, **difficulty).to_list()
        return rows[::-1] if n % 2 else rows[1:] + rows[:1]


def test_validation_stays_disjoint_for_a_generator_that_is_not_prefix_stable(monkeypatch) -> None:
    monkeypatch.setattr(verifiers, "load", lambda name: ShuffledChain())
    for test_size, validation_size in ((16, 24), (15, 24), (16, 25)):
        task_cfg = {**TASK, "verifier": "x", "test_size": test_size, "validation_size": validation_size}
        cfg = load_config(ExperimentConfig, data={"task": task_cfg, "eval": {"split": "validation"}})
        task = load_task(cfg)
        assert len(task.validation) == validation_size
        assert not {r["prompt"] for r in task.validation} & {r["prompt"] for r in task.test}


def test_validation_split_checks() -> None:
    cfg = load_config(
        ExperimentConfig, data={"task": TASK, "eval": {"split": "validation", "num_examples": 25}}
    )
    with pytest.raises(ConfigError, match=r"eval\.num_examples.*task\.validation_size"):
        check_task(cfg, ChainArithmetic())
    # 42 prompts, 6 of them in the test split: 4 test rows fit, 4 + 24 do not
    small = {"train_size": 8, "test_size": 4, "validation_size": 24}
    small["difficulty"] = {"min_steps": 1, "max_steps": 1, "max_start": 5, "max_operand": 3}
    cfg = load_config(ExperimentConfig, data={"task": small, "eval": {"split": "validation"}})
    with pytest.raises(ConfigError, match=r"task\.validation_size"):
        load_task(cfg)


# --- the grid ------------------------------------------------------------------------------------------------


def test_grid_points_and_names() -> None:
    points = grid_points({"optim.learning_rate": [1e-3, 3e-4], "relabel.num_candidates": [4, 8]})
    assert points == [
        {"optim.learning_rate": 1e-3, "relabel.num_candidates": 4},
        {"optim.learning_rate": 1e-3, "relabel.num_candidates": 8},
        {"optim.learning_rate": 3e-4, "relabel.num_candidates": 4},
        {"optim.learning_rate": 3e-4, "relabel.num_candidates": 8},
    ]
    assert point_name(points[1]) == "learning_rate=0.001,num_candidates=8"
    assert point_name({"optim.learning_rate": 1, "grpo.trl.learning_rate": 2}) == (
        "optim.learning_rate=1,grpo.trl.learning_rate=2"
    )


@pytest.mark.parametrize(
    ("tune", "match"),
    [
        ({}, r"tune\.grid' is empty"),
        (
            {"grid": {"relabel": {"task.max_steps": [3, 4]}}},
            r"tune\.grid\.relabel\.task\.max_steps.*comparison",
        ),
        ({"grid": {"relabel": {"optim.learning_rate": []}}}, r"no values"),
        ({"grid": {"relabel": {"optim.learnig_rate": [1e-3]}}}, r"tune\.grid\.relabel.*optim\.learnig_rate"),
        ({"grid": {"grpo": {"grpo.trl.num_generatons": [2]}}}, r"grpo\.trl\.num_generatons"),
        ({"grid": {"relabel": {"optim.learning_rate": [1e-3]}}, "seeds": [0, 5]}, r"share \[0\]"),
    ],
)
def test_a_bad_grid_is_refused_before_any_work(tmp_path, capsys, tune, match) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "tune": tune}))
    assert cmd_tune([str(recipe)]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # nothing was built


def test_chosen_values_apply_to_their_arm_only() -> None:
    data = {"tune": {"chosen": {"mc_value": {"optim.learning_rate": 0.02}, "grpo": {"grpo.trl.beta": 0.1}}}}
    cfg = load_config(ExperimentConfig, data=data)
    mc, gr = arm_config(cfg, "mc_value"), arm_config(cfg, "grpo")
    assert mc.optim.learning_rate == 0.02 and mc.grpo.trl.get("beta", 0.0) == 0.0
    assert gr.optim.learning_rate == cfg.optim.learning_rate and gr.grpo.trl["beta"] == 0.1
    assert mc.tune.chosen == {"mc_value": {"optim.learning_rate": 0.02}} and mc.tune.grid == {}
    bad = load_config(ExperimentConfig, data={"tune": {"chosen": {"relabel": {"relabel.num_candiates": 2}}}})
    with pytest.raises(ConfigError, match=r"tune\.chosen\.relabel.*num_candiates"):
        arm_config(bad, "relabel")


# --- end to end on the tiny preset ---------------------------------------------------------------------------


def _recipe(tmp_path, grid) -> dict:
    return {
        "output_dir": str(tmp_path / "out"),
        "model": {"name_or_path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
        "task": {
            "verifier": "test_multiprocess:DigitChain",  # a dense score, so points differ in mean score
            "train_size": 16,
            "test_size": 4,
            "validation_size": 4,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_steps": 3,
            "max_completion_tokens": 16,
        },
        "warm_start": {"enabled": False},
        "budget": {"axis": "generated_tokens", "limit": 100000, "eval_every": 50000},
        "eval": {"num_examples": 4, "pass_k": 2},
        "optim": {"prompts_per_step": 2, "learning_rate": 1e-3},
        "mc_value": {"num_samples": 2, "num_rollouts": 1},
        "grpo": {"trl": {"num_generations": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3}},
        "compare": {"arms": ["grpo", "mc_value"], "seeds": [0]},
        "tune": {
            "grid": grid,
            "seeds": [7],
            "budget": {"axis": "optimizer_steps", "limit": 2, "eval_every": 1},
        },
    }


def test_tune_mechanics_on_the_tiny_preset(tmp_path) -> None:
    from llm_rl.harness.evaluation import evaluate
    from llm_rl.model import load_policy

    grid = {"mc_value": {"optim.learning_rate": [1e-3, 0.05]}, "grpo": {"grpo.trl.learning_rate": [1e-3]}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path, grid)))
    assert cmd_tune([str(recipe)]) == 0
    folder = tmp_path / "out" / "tune"
    runs = sorted(p.relative_to(folder / "runs").as_posix() for p in (folder / "runs").glob("*/*"))
    assert runs == [
        "grpo/learning_rate=0.001-seed7",
        "mc_value/learning_rate=0.001-seed7",
        "mc_value/learning_rate=0.05-seed7",
    ]

    # each run trained with its point, on the tune budget, and was evaluated on the validation rows
    finals = {}
    for name in runs:
        run = folder / "runs" / name
        child = load_config(ExperimentConfig, data=yaml.safe_load((run / "config.yaml").read_text()))
        assert child.eval.split == "validation" and child.seed == 7 and child.budget.axis == "optimizer_steps"
        finals[name] = json.loads((run / "final_metrics.json").read_text())
        assert finals[name]["optimizer_steps"] == 2
    run = folder / "runs" / runs[2]
    child = load_config(ExperimentConfig, data=yaml.safe_load((run / "config.yaml").read_text()))
    assert child.optim.learning_rate == 0.05
    policy = load_policy(run / "final")
    again = evaluate(
        policy, load_task(child).verifier, eval_rows(child), k=2, max_new_tokens=16, progress=False
    )
    assert again["mean_score"] == finals[runs[2]]["mean_score"]  # scored on exactly the validation rows

    # the pick: best mean validation pass@1, ties by mean validation score
    summary = json.loads((folder / "tune.json").read_text())
    key = {r: (finals[r]["pass@1"], finals[r]["mean_score"]) for r in runs[1:]}
    best = max(runs[1:], key=lambda r: key[r])
    want = {"optim.learning_rate": 1e-3 if best.endswith("0.001-seed7") else 0.05}
    assert summary["chosen"]["mc_value"] == want and summary["chosen"]["grpo"] == {
        "grpo.trl.learning_rate": 1e-3
    }
    assert summary["split"] == "validation"

    # the tuned recipe: compare/train give each arm its own values
    tuned = load_config(ExperimentConfig, str(folder / "tuned.yaml"))
    assert tuned.tune.chosen == summary["chosen"]
    mc = child_config(tuned, "mc_value", 0, tmp_path / "x")
    gr = child_config(tuned, "grpo", 0, tmp_path / "y")
    assert mc.optim.learning_rate == want["optim.learning_rate"] and gr.optim.learning_rate == 1e-3
    assert mc.tune.chosen == {"mc_value": want} and gr.tune.chosen == {
        "grpo": {"grpo.trl.learning_rate": 1e-3}
    }

    # a rerun trains nothing; a grown grid trains only its new point
    stamps = {r: (folder / "runs" / r / "final_metrics.json").stat().st_mtime_ns for r in runs}
    assert cmd_tune([str(recipe)]) == 0
    grid["mc_value"]["optim.learning_rate"].append(0.01)
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path, grid)))
    assert cmd_tune([str(recipe)]) == 0
    assert all(
        (folder / "runs" / r / "final_metrics.json").stat().st_mtime_ns == t for r, t in stamps.items()
    )
    assert (folder / "runs" / "mc_value" / "learning_rate=0.01-seed7" / "final_metrics.json").exists()
    assert len(json.loads((folder / "tune.json").read_text())["arms"]["mc_value"]["points"]) == 3
