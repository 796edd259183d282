"""The GRPO arm (TRL's GRPOTrainer): recipe validation, exact budget counting, records, determinism, resume, and the
per-prompt GRPO loss of ``gradient_sample``."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest
import torch

import llm_rl.harness.trl_bridge as bridge
import verifiers
from llm_rl.arms import grpo
from llm_rl.arms.grpo import GrpoArmConfig
from llm_rl.config import BudgetConfig, EvalConfig, ExperimentConfig, OptimConfig, TaskConfig
from llm_rl.generation import HFBackend
from llm_rl.harness.metering import MeteredVerifier, StepContext
from llm_rl.harness.run import train_arm
from relabel_rl.config import ConfigError, load_config
from relabel_rl.rundir import RunDir
from verifiers.base import Verifier

TRL_SMALL = dict(GrpoArmConfig().trl)  # the arm's defaults: 4 generations, 8 rows, lr 1e-3, beta 0, dapo


def small_cfg(**budget) -> ExperimentConfig:
    return ExperimentConfig(
        arm="grpo",
        seed=0,
        task=TaskConfig(train_size=16, test_size=4, max_completion_tokens=24),
        budget=BudgetConfig(**{"axis": "generated_tokens", "limit": 900, "eval_every": 400, **budget}),
        eval=EvalConfig(num_examples=4, pass_k=2),
        optim=OptimConfig(checkpoint_every=1),
        grpo=GrpoArmConfig(trl=dict(TRL_SMALL)),
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from llm_rl.model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("grpo_tiny") / "base", hidden_size=32, num_layers=1,
                                num_heads=2))  # fmt: skip


# --- validation ---------------------------------------------------------------------------------------------


def test_recipe_validation_names_the_bad_trl_key(tmp_path) -> None:
    def build(trl):
        cfg = load_config(ExperimentConfig, data={"arm": "grpo", "grpo": {"trl": trl}})
        return grpo.grpo_config(cfg, tmp_path)

    with pytest.raises(
        ConfigError, match=r"grpo\.trl\.num_generatons.*did you mean 'grpo\.trl\.num_generations'"
    ):
        build({"num_generatons": 4})
    with pytest.raises(ConfigError, match=r"'grpo\.trl\.seed' is set by the GRPO arm"):
        build({"seed": 3})
    with pytest.raises(ConfigError, match=r"'grpo\.trl\.max_completion_length'.*task\.max_completion_tokens"):
        build({"max_completion_length": 64})
    with pytest.raises(ConfigError, match=r"grpo\.trl: TRL rejected.*divisible by num_generations"):
        build({"num_generations": 3, "per_device_train_batch_size": 8})
    with pytest.raises(ConfigError, match=r"grpo\.trl\.loss_type"):
        build({"loss_type": "ppo"})
    args = build({"num_generations": 2, "loss_type": "grpo", "scale_rewards": False})
    assert (args.num_generations, args.loss_type, args.scale_rewards) == (2, "grpo", "none")
    assert args.report_to == [] and args.max_completion_length == 160 and args.bf16 is False


# --- end to end ---------------------------------------------------------------------------------------------


def _run(cfg, path, init_model, monkeypatch=None, seen=None):
    if monkeypatch is not None and seen is not None:
        real = bridge._reward_function

        def spy(verifier, _seen=None):
            inner = real(verifier, seen["completion_lengths"])

            def reward(prompts, completions, completion_ids=None, **columns):
                seen["prompts"].extend(prompts)
                return inner(prompts, completions, completion_ids=completion_ids, **columns)

            reward.__name__ = inner.__name__
            return reward

        monkeypatch.setattr(bridge, "_reward_function", spy)
    run = RunDir.create(path, config=cfg)
    final = train_arm(cfg, run, init_model=init_model)
    return run, final


def _comparable(records):
    drop = {"wall_time", "gen_tokens_per_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records if r["kind"] != "resume"]


def test_grpo_end_to_end_counts_exactly_and_is_deterministic(tmp_path, tiny_model, monkeypatch) -> None:
    from transformers import AutoTokenizer

    cfg = small_cfg()
    seen = {"completion_lengths": [], "prompts": []}
    run, final = _run(cfg, tmp_path / "a", tiny_model, monkeypatch, seen)
    records = run.metrics()
    evals = [r for r in records if r["kind"] == "eval"]
    trains = [r for r in records if r["kind"] == "train"]
    assert evals[0]["step"] == 0 and evals[0]["generated_tokens"] == 0
    assert evals[-1]["step"] == final["step"] == trains[-1]["step"]
    assert len(evals) >= 3  # step 0, at least one eval_every crossing, final
    for r in evals:
        assert set(r) >= {"pass@1", "pass@k", "k", "mean_score", "generated_tokens", "verifier_calls"}
    assert trains and all("loss" in r and "reward" in r for r in trains)
    assert [r["step"] for r in trains] == list(range(1, len(trains) + 1))
    assert trains[-1]["generated_tokens"] >= cfg.budget.limit  # stopped at the budget ...
    assert trains[-2]["generated_tokens"] < cfg.budget.limit  # ... and not before
    assert (run.path / "final" / "config.json").exists()
    # Exact counts: tokens TRL passed to the reward function, prompt tokens x times prefilled, one call per score.
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert final["generated_tokens"] == sum(seen["completion_lengths"])
    assert final["prefill_tokens"] == sum(len(tok(p)["input_ids"]) for p in seen["prompts"])
    assert final["verifier_calls"] == final["outcome_verifier_calls"] == len(seen["completion_lengths"])
    assert final["prompts"] == len(seen["prompts"]) // 4  # one prompt per group of num_generations
    assert final["optimizer_steps"] == trains[-1]["step"]
    assert len(seen["prompts"]) == 8 * len(trains)  # one generation batch per step
    assert all(r["gen_tokens_per_s"] > 0 for r in trains)

    # Same seed, new directory: identical records (wall time aside). TRL seeds torch/numpy/random from args.seed.
    monkeypatch.undo()
    run_b, _ = _run(cfg, tmp_path / "b", tiny_model)
    assert _comparable(run_b.metrics()) == _comparable(records)


def test_grpo_resume_continues_the_counters(tmp_path, tiny_model) -> None:
    cfg = small_cfg()
    cfg = dataclasses.replace(
        cfg, grpo=GrpoArmConfig(trl={**TRL_SMALL, "save_total_limit": None})
    )  # keep all
    run, final = _run(cfg, tmp_path / "full", tiny_model)
    full = _comparable(run.metrics())
    steps = final["step"]
    assert steps >= 3
    # Simulate a kill after step 2: keep checkpoint-2 and the records up to it, drop everything later.
    killed = tmp_path / "killed"
    shutil.copytree(run.path, killed)
    for ckpt in (killed / "checkpoints").glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) > 2:
            shutil.rmtree(ckpt)
    shutil.rmtree(killed / "final")
    # (the killed session's records after step 2 stay in metrics.jsonl: the resumed run must drop them)
    resumed_run, resumed_final = _run(cfg, killed, tiny_model)
    records = resumed_run.metrics()
    trains = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in trains] == list(range(1, steps + 1))
    assert (
        trains[2]["generated_tokens"] > trains[1]["generated_tokens"]
    )  # continued from checkpoint-2's counters
    assert resumed_final["optimizer_steps"] == steps
    # TRL restores the RNG state of checkpoint-2 and the sampler is seeded: the resumed run retraces the full one.
    assert _comparable(records) == full


# --- gradient_sample ----------------------------------------------------------------------------------------


def gradient_sample(cfg, policy, verifier, example, *, generator):
    """The GRPO arm's per-prompt loss estimate, with an unmetered context (as the variance probe gives it)."""
    contained = verifiers.ContainedVerifier(verifier)
    ctx = StepContext(
        policy=policy,
        sampler=HFBackend(policy),
        verifier=MeteredVerifier(contained, None),
        generator=generator,
    )
    return grpo.GrpoArm(cfg).gradient_sample(example, ctx)


class CoinFlip(Verifier):
    """A deterministic pseudo-random 0/1 per completion text, so that a group's advantages are not all zero."""

    name = "coin_flip"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        return float(hashlib.sha256(completion.encode()).digest()[0] % 2)


def mixed_group_seed(policy, verifier, example, *, temperature: float) -> int:
    """The first generator seed whose group of 4 samples has mixed rewards (independent of sampler internals)."""
    from llm_rl.generation import HFBackend

    for seed in range(64):
        (samples,) = HFBackend(policy).sample([example["prompt"]], n=4, max_new_tokens=24, temperature=temperature,
                                              stop=None, generator=torch.Generator().manual_seed(seed))  # fmt: skip
        if 0 < sum(verifier.score(s.text, example) for s in samples) < 4:
            return seed
    raise AssertionError("no seed in 0..63 gives a group with mixed rewards")


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
def test_gradient_sample_matches_the_grpo_loss_by_hand(tiny_model, loss_type) -> None:
    from llm_rl.generation import HFBackend
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    verifier = CoinFlip()
    example = {"prompt": "Start 3. Add 4.\n", "answer": "7"}
    cfg = dataclasses.replace(small_cfg(), grpo=GrpoArmConfig(trl={**TRL_SMALL, "loss_type": loss_type}))
    seed = mixed_group_seed(policy, verifier, example, temperature=1.0)
    loss = gradient_sample(cfg, policy, verifier, example, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    got = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()

    # By hand, from the same samples: A = (r - mean) / (std + 1e-4); per-token -A * log p (ratio 1 on-policy).
    (samples,) = HFBackend(policy).sample([example["prompt"]], n=4, max_new_tokens=24, temperature=1.0, stop=None,
                                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
    rewards = torch.tensor([verifier.score(s.text, example) for s in samples])
    assert 0 < rewards.sum() < 4
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    scored = policy.token_logprobs([example["prompt"]] * 4, [list(s.token_ids) for s in samples])
    lp, mask = scored.logprobs, scored.mask
    per_token = -adv[:, None] * lp * mask
    expected = {
        "grpo": (per_token.sum(1) / mask.sum(1)).mean(),
        "dapo": per_token.sum() / mask.sum(),
        "bnpo": per_token.sum() / mask.sum(),
        "dr_grpo": per_token.sum() / (4 * 24),
    }[loss_type]
    expected.backward()
    for g, p in zip(got, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    # The surrogate's value: -A * ratio with ratio = 1 (the same normalisation).
    value = {"grpo": (-adv[:, None] * mask).sum(1) / mask.sum(1)}
    if loss_type == "grpo":
        assert float(loss) == pytest.approx(float(value["grpo"].mean()), abs=1e-5)
    policy.zero_grad()


def test_gradient_sample_rejects_settings_it_does_not_mirror(tiny_model) -> None:
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    for trl in ({"beta": 0.04}, {"loss_type": "sapo"}):
        cfg = dataclasses.replace(small_cfg(), grpo=GrpoArmConfig(trl={**TRL_SMALL, **trl}))
        with pytest.raises(ValueError, match="gradient_sample"):
            gradient_sample(cfg, policy, CoinFlip(), {"prompt": "x\n"}, generator=None)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_gradient_sample_equals_trl_compute_loss(tmp_path, tiny_model, loss_type) -> None:
    """TRL's own ``GRPOTrainer._compute_loss`` on the same completions and advantages gives the same loss and
    gradient as ``gradient_sample`` (temperature 0.7, so the logits scaling is checked too)."""
    import datasets
    from trl import GRPOTrainer

    from llm_rl.generation import HFBackend
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    verifier = CoinFlip()
    example = {"prompt": "Start 3. Add 4.\n", "answer": "7"}
    trl_knobs = {**TRL_SMALL, "loss_type": loss_type, "temperature": 0.7}
    cfg = dataclasses.replace(small_cfg(), grpo=GrpoArmConfig(trl=trl_knobs))
    seed = mixed_group_seed(policy, verifier, example, temperature=0.7)
    ours = gradient_sample(cfg, policy, verifier, example, generator=torch.Generator().manual_seed(seed))
    ours.backward()
    ours_grad = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()

    (samples,) = HFBackend(policy).sample([example["prompt"]], n=4, max_new_tokens=24, temperature=0.7, stop=None,
                                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
    rewards = torch.tensor([verifier.score(s.text, example) for s in samples])
    assert 0 < rewards.sum() < 4
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=lambda prompts, completions, **kw: [0.0] * len(prompts),
        args=grpo.grpo_config(cfg, tmp_path),
        train_dataset=datasets.Dataset.from_list([example] * 8),
        processing_class=policy.tokenizer,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    prompt = torch.tensor(policy.encode([example["prompt"]])[0]).repeat(4, 1)
    width = max(len(s.token_ids) for s in samples)
    completion = torch.full((4, width), policy.pad_token_id)
    mask = torch.zeros((4, width), dtype=torch.long)
    for i, s in enumerate(samples):
        completion[i, : len(s.token_ids)] = torch.tensor(s.token_ids)
        mask[i, : len(s.token_ids)] = 1
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": completion,
        "completion_mask": mask,
        "advantages": (rewards - rewards.mean()) / (rewards.std() + 1e-4),  # TRL's scale_rewards="group"
        "num_items_in_batch": mask.sum(),
    }
    theirs = trainer._compute_loss(trainer.model, inputs)
    theirs.backward()
    assert float(theirs) == pytest.approx(float(ours), abs=1e-6)
    for g, p in zip(ours_grad, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
