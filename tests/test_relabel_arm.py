"""The relabeller end to end on the tiny preset: records, final model, determinism, kill-and-resume, gradient_sample."""

from __future__ import annotations

import pytest
import torch

import llm_rl.arms.relabel as relabel
import verifiers
from llm_rl.config import ExperimentConfig
from llm_rl.generation import HFBackend
from llm_rl.harness.metering import MeteredVerifier, StepContext
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model, load_policy
from relabel_rl import RunDir, load_config

RECIPE = {
    "arm": "relabel",
    "seed": 1,
    "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
    "task": {
        "train_size": 8,
        "test_size": 4,
        "max_steps": 3,
        "max_step_tokens": 8,
        "max_completion_tokens": 24,
        "difficulty": {"min_steps": 1, "max_steps": 2},
    },
    "budget": {"axis": "generated_tokens", "limit": 700, "eval_every": 300},
    "eval": {"num_examples": 2, "pass_k": 2},
    "optim": {"learning_rate": 0.01, "prompts_per_step": 2, "checkpoint_every": 1},
    "relabel": {
        "puct": {"num_simulations": 2},
        "gumbel": {"num_simulations": 2, "max_num_considered_actions": 2},
        "num_candidates": 2,
    },
}


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=1, num_heads=2)
    )


def _train(base: str, path, overrides=()):
    cfg = load_config(ExperimentConfig, data=RECIPE, overrides=list(overrides))
    run = RunDir.create(path, config=cfg)
    final = train_arm(cfg, run, init_model=base, progress=False)
    return final, run


def _strip(records, drop=("wall_time", "expand_tokens_per_s")):
    return [{k: v for k, v in r.items() if k not in drop} for r in records if r["kind"] in ("train", "eval")]


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    return _train(base, tmp_path_factory.mktemp("ref") / "run")


def test_train_writes_eval_and_train_records_and_a_final_model(reference) -> None:
    final, run = reference
    records = run.metrics()
    evals = [r for r in records if r["kind"] == "eval"]
    trains = [r for r in records if r["kind"] == "train"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == trains[-1]["step"] == final["step"]
    assert len(trains) >= 2 and [r["step"] for r in trains] == list(range(1, len(trains) + 1))
    for key in ("loss", "policy_loss", "value_loss", "train_outcome", "decisions", "expand_tokens_per_s"):
        assert key in trains[0]
    assert trains[-1]["generated_tokens"] >= 700 > trains[-2]["generated_tokens"]
    assert all(r["verifier_calls"] > 0 and r["prefill_tokens"] > 0 for r in trains)
    assert {"pass@1", "pass@k", "mean_score"} <= set(final)
    policy = load_policy(run.path / "final")  # saved with its value head
    assert policy.text_values(["Start 1. Add 2.\n"]).shape == (1,)


def test_same_seed_gives_identical_metrics(base, reference, tmp_path) -> None:
    _, again = _train(base, tmp_path / "again")
    assert _strip(again.metrics()) == _strip(reference[1].metrics())


def test_resume_after_a_kill_continues_the_counters(base, reference, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    original = relabel.relabel_episodes

    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(relabel, "relabel_episodes", dies_on_third_batch)
    with pytest.raises(Killed):
        _train(base, tmp_path / "run")
    monkeypatch.setattr(relabel, "relabel_episodes", original)
    _, resumed = _train(base, tmp_path / "run")
    records = resumed.metrics()
    assert [r["step"] for r in records if r["kind"] == "resume"] == [2]
    # (the verifier statistics are the run's, carried across the resume: they match too)
    assert _strip(records) == _strip(reference[1].metrics())


def test_gumbel_root_and_mixed_value_target_train(base, tmp_path) -> None:
    overrides = [
        "--relabel.root",
        "gumbel",
        "--relabel.value_target",
        "mix",
        "--budget.axis",
        "optimizer_steps",
    ]
    overrides += ["--budget.limit", "1", "--budget.eval_every", "1"]
    final, run = _train(base, tmp_path / "gumbel", overrides)
    (train,) = [r for r in run.metrics() if r["kind"] == "train"]
    assert train["optimizer_steps"] == 1 and train["decisions"] >= 2
    assert final["step"] == 1


def test_gradient_sample_is_one_seeded_estimate_with_grad(base) -> None:
    cfg = load_config(ExperimentConfig, data=RECIPE)
    torch.manual_seed(0)
    policy = load_policy(base)
    verifier = verifiers.ContainedVerifier(verifiers.load("chain_arithmetic"))
    (example,) = [dict(r) for r in verifier.generate(1, seed=5, min_steps=2, max_steps=2)]
    losses = []
    arm = relabel.RelabelArm(cfg)
    for seed in (7, 7, 8):
        ctx = StepContext(
            policy=policy,
            sampler=HFBackend(policy),
            verifier=MeteredVerifier(verifier, None),
            generator=torch.Generator().manual_seed(seed),
        )
        loss = arm.gradient_sample(example, ctx)
        assert loss.ndim == 0 and loss.requires_grad
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1] != losses[2]
