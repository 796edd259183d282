"""A 2-process LLM run killed with ``kill -9`` and relaunched ends where an uninterrupted run ends.

The user's own command, ``accelerate launch --multi_gpu --num_processes 2 -m llm_rl.train --config R.yaml`` on
CPU (gloo), for each hand-written arm that has no other kill -9 test (the MC-value arm, tree GRPO and RFT) on the
tiny preset: killed (launcher and both workers) once a checkpoint exists, then launched again. Its train and eval records and its final weights must match one uninterrupted process with
the same global batch (``optim.prompt_chunks: 2``): the checkpoint restores the weights, the optimiser, the
budget counters (global, summed over processes) and every RNG, and records the killed session wrote after the
checkpoint are dropped and logged again. Tolerance 1e-5 (float summation order differs across processes);
budget counters must be identical.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from _procs import (
    assert_same_records,
    kill_at_first_checkpoint,
    launch,
)  # tests/ is on sys.path  # tests/ is on sys.path (pytest's default import mode)

TOL = 1e-5
TIMING_KEYS = {"wall_time", "grad_norm", "expand_tokens_per_s", "gen_tokens_per_s"}
STEPS = 6


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    from llm_rl.model import build_tiny_model

    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=2, num_heads=2)
    )


# each arm's section: small, and with something to learn from a dense reward on an untrained model
ARM_SECTIONS = {
    "mc_value": {"num_samples": 2, "num_rollouts": 1},
    "tree_grpo": {"branching_factor": 2, "depth": 2},
    "rft": {"num_samples": 2, "threshold": 0.1},
}


def _recipe(tmp_path: Path, model: str, name: str, arm: str) -> Path:
    data = {
        "output_dir": str(tmp_path / name),
        "arm": arm,
        "model": {"name_or_path": model},
        "task": {
            "verifier": "test_multiprocess:DigitChain",  # a dense reward, so every step has a gradient
            "train_size": 32,
            "test_size": 4,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_steps": 3,
            "max_step_tokens": 8,
            "max_completion_tokens": 24,
        },
        "warm_start": {"enabled": False},
        "budget": {"axis": "optimizer_steps", "limit": STEPS, "eval_every": 3},
        "eval": {"num_examples": 2, "pass_k": 2},
        "optim": {"learning_rate": 0.05, "prompts_per_step": 4, "prompt_chunks": 2, "checkpoint_every": 1},
        arm: ARM_SECTIONS[arm],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _launch(recipe: Path) -> subprocess.Popen:
    return launch(["-m", "llm_rl.train", "--config", str(recipe)])


def _records(run: Path, kinds: tuple[str, ...] = ("train", "eval")) -> list[dict]:
    from relabel_rl.rundir import read_metrics

    return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] in kinds]


@pytest.mark.parametrize("arm", list(ARM_SECTIONS))
def test_killed_two_process_run_resumes_to_the_uninterrupted_result(tiny_path, tmp_path, arm):
    from llm_rl.model import load_policy
    from llm_rl.train import cmd_train

    two = tmp_path / "two" / "runs" / f"{arm}-seed0"
    proc = _launch(_recipe(tmp_path, tiny_path, "two", arm))
    kill_at_first_checkpoint(proc, two)
    killed_at = max((r["step"] for r in _records(two) if r["kind"] == "train"), default=0)
    assert killed_at < STEPS, "the run finished before the kill"

    torch.set_num_threads(1)
    assert (
        cmd_train([str(_recipe(tmp_path, tiny_path, "one", arm))]) == 0
    )  # the reference, while nothing else runs
    again = _launch(_recipe(tmp_path, tiny_path, "two", arm))
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output[-4000:]

    one = tmp_path / "one" / "runs" / f"{arm}-seed0"
    got, want = _records(two), _records(one)
    assert [r["step"] for r in want if r["kind"] == "train"] == list(range(1, STEPS + 1))
    assert_same_records(got, want, skip=TIMING_KEYS, tol=TOL)  # verifier statistics included: run-level
    assert [r["step"] for r in _records(two, ("resume",))] == [killed_at]  # it did resume, where it stopped
    a = dict(load_policy(two / "final").named_parameters())
    b = dict(load_policy(one / "final").named_parameters())
    for n in b:
        assert torch.allclose(a[n], b[n], atol=TOL, rtol=0), n
    base = dict(load_policy(tiny_path).named_parameters())  # and training moved the weights
    assert any(not torch.allclose(b[n], base[n]) for n in base if n.startswith("model."))
