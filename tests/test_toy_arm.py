"""A new arm gets the harness for free: `tests/reinforce_arm.py` (REINFORCE with a per-step constant baseline,
written against the public contract only, named in the recipe as ``reinforce_arm:Reinforce``) runs with the
budget stop, the evaluation schedule, several updates per batch, a prompt budget, and — under ``accelerate launch
--num_processes 2``, killed with ``kill -9`` and relaunched — the records and weights of one uninterrupted
process (tolerance 1e-5, counters exact)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from _procs import (
    assert_same_records,
    kill_at_first_checkpoint,
    kill_tree,
    launch,
)  # tests/ is on sys.path  # tests/ is on sys.path (pytest's default import mode)

from llm_rl.config import ExperimentConfig
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model, load_policy
from relabel_rl import RunDir, load_config

TOL = 1e-5
TIMING_KEYS = {"wall_time", "grad_norm"}


def recipe(out: Path, model: str, **sections) -> dict:
    data = {
        "output_dir": str(out),
        "arm": "reinforce_arm:Reinforce",
        "model": {"name_or_path": model},
        "task": {
            "verifier": "test_multiprocess:DigitChain",  # a dense reward: every batch has something to learn
            "train_size": 32,
            "test_size": 4,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_completion_tokens": 16,
        },
        "warm_start": {"enabled": False},
        "budget": {"axis": "generated_tokens", "limit": 400, "eval_every": 150},
        "eval": {"num_examples": 2, "pass_k": 2},
        "optim": {"learning_rate": 0.05, "prompts_per_step": 4, "checkpoint_every": 1},
    }
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=1, num_heads=2)
    )


def _train(tmp_path: Path, model: str, **sections) -> tuple[dict, list[dict]]:
    cfg = load_config(ExperimentConfig, data=recipe(tmp_path / "run", model, **sections))
    run = RunDir.create(tmp_path / "run", config=cfg)
    final = train_arm(cfg, run, init_model=model, progress=False)
    return final, run.metrics()


def test_budget_stop_and_evaluation_schedule(tmp_path, tiny):
    final, records = _train(tmp_path, tiny)
    trains = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert trains[-1]["generated_tokens"] >= 400 > trains[-2]["generated_tokens"]  # stopped at the budget
    assert evals[0]["step"] == 0 and evals[-1]["step"] == trains[-1]["step"] == final["step"]
    crossings = {int(r["generated_tokens"] // 150) for r in trains if r["generated_tokens"] < 400}
    assert len(evals) == 2 + len(crossings - {0})  # the start, each crossing before the end, the end
    assert (
        final["prompts"] == 4 * final["step"] and final["verifier_calls"] == final["prompts"]
    )  # one score each
    assert (tmp_path / "run" / "final" / "value_head.json").exists()


def test_epochs_and_minibatches_per_batch(tmp_path, tiny):
    budget = {"axis": "optimizer_steps", "limit": 8, "eval_every": 4}
    final, records = _train(tmp_path, tiny, budget=budget, optim={"epochs": 2, "minibatches": 2})
    trains = [r for r in records if r["kind"] == "train"]
    assert [(r["epoch"], r["minibatch"]) for r in trains] == [(1, 1), (1, 2), (2, 1), (2, 2)] * 2
    assert all(r["rows"] == 2 for r in trains)  # each update sees half of the batch's 4 completions
    tokens = [r["generated_tokens"] for r in trains]
    assert tokens[:4] == [tokens[0]] * 4 and tokens[4:] == [tokens[4]] * 4 and tokens[4] > tokens[0]
    assert [r["prompts"] for r in trains] == [4] * 4 + [8] * 4  # one batch of prompts per 4 updates
    assert final["optimizer_steps"] == 8


def test_a_prompt_budget_takes_exactly_the_prompts_left(tmp_path, tiny):
    final, records = _train(tmp_path, tiny, budget={"axis": "prompts", "limit": 6, "eval_every": 4})
    assert [r["prompts"] for r in records if r["kind"] == "train"] == [4, 6]
    assert final["prompts"] == 6


def test_killed_two_process_run_resumes_to_one_process(tmp_path, tiny):
    from llm_rl.train import cmd_train

    steps = 4
    sections = {"budget": {"axis": "optimizer_steps", "limit": steps, "eval_every": 2}}
    sections["optim"] = {"prompt_chunks": 2}
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe(tmp_path / name, tiny, **sections)))
    two = tmp_path / "two" / "runs" / "reinforce_arm_Reinforce-seed0"
    proc = launch(["-m", "llm_rl.train", "--config", str(tmp_path / "two.yaml")])
    kill_at_first_checkpoint(proc, two)
    torch.set_num_threads(1)
    assert cmd_train([str(tmp_path / "one.yaml")]) == 0  # the uninterrupted reference, in this process
    again = launch(["-m", "llm_rl.train", "--config", str(tmp_path / "two.yaml")])
    try:
        output, _ = again.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        kill_tree(again)
        raise
    assert again.returncode == 0, output[-4000:]

    one = tmp_path / "one" / "runs" / "reinforce_arm_Reinforce-seed0"
    got, want = (RunDir(p).metrics() for p in (two, one))
    assert [r["step"] for r in got if r["kind"] == "resume"], "the relaunched run resumed"
    got, want = ([r for r in rs if r["kind"] in ("train", "eval")] for rs in (got, want))
    assert [r["step"] for r in want if r["kind"] == "train"] == list(range(1, steps + 1))
    assert_same_records(got, want, skip=TIMING_KEYS, tol=TOL)
    a, b = (dict(load_policy(p / "final").named_parameters()) for p in (two, one))
    base = dict(load_policy(tiny).named_parameters())
    assert all(torch.allclose(a[n], b[n], atol=TOL, rtol=0) for n in b)
    assert any(not torch.allclose(b[n], base[n]) for n in base if n.startswith("model."))  # it learnt
