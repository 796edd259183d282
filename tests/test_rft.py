"""Rejection-sampling fine-tuning: the filter (threshold, dedupe, cap, step feedback) and the SFT loss against
hand-computed numbers, the per-prompt gradient estimate, and a short end-to-end run on the tiny preset."""

from __future__ import annotations

import pytest
import torch
from _scripted_arms import (
    AnswerIs7,
    ScriptedBackend,
    SpyVerifier,
    cont,
    same_records,
    train_recipe,
    train_with_cli,
)

from llm_rl.arms import rft
from relabel_rl.config import ConfigError

EXAMPLE = {"prompt": "Q\n"}
SAMPLES = [
    cont("Answer: 7", "eos"),  # passes
    cont("Answer: 3", "eos"),  # fails
    cont("Answer: 7", "eos"),  # a duplicate of the first
    cont("x\nAnswer: 7", "eos"),  # passes
    cont("bad\nAnswer: 7", "length"),  # passes the outcome check; its first step fails a step check
]


def kept_texts(kept) -> list[str]:
    return [bytes(t for t in k.token_ids if t > 2).decode() for k in kept]


def test_the_filter_keeps_verified_distinct_completions() -> None:
    verifier = SpyVerifier(AnswerIs7())
    kept, counts = rft.filter_completions(EXAMPLE, SAMPLES, verifier, rft.RftArmConfig())
    assert kept_texts(kept) == ["Answer: 7", "x\nAnswer: 7", "bad\nAnswer: 7"]
    assert [k.score for k in kept] == [1.0, 1.0, 1.0] and kept[0].token_ids[-1] == 2  # EOS is imitated too
    assert counts == {"passed": 4, "step_rejected": 0, "duplicates": 1, "capped": 0, "score_sum": 4.0}
    assert len(verifier.scored) == 5 and verifier.checked == []  # outcome feedback: no step checks
    # no dedupe: the duplicate is imitated twice; a cap keeps the first ones in sampling order
    kept, _ = rft.filter_completions(EXAMPLE, SAMPLES, AnswerIs7(), rft.RftArmConfig(dedupe=False))
    assert kept_texts(kept) == ["Answer: 7", "Answer: 7", "x\nAnswer: 7", "bad\nAnswer: 7"]
    kept, counts = rft.filter_completions(
        EXAMPLE, SAMPLES, AnswerIs7(), rft.RftArmConfig(max_kept_per_prompt=1)
    )
    assert kept_texts(kept) == ["Answer: 7"] and counts["capped"] == 2
    # threshold 0 keeps everything (distinct)
    kept, _ = rft.filter_completions(EXAMPLE, SAMPLES, AnswerIs7(), rft.RftArmConfig(threshold=0.0))
    assert len(kept) == 4


def test_step_feedback_also_drops_completions_with_a_rejected_step() -> None:
    verifier = SpyVerifier(AnswerIs7())
    kept, counts = rft.filter_completions(EXAMPLE, SAMPLES, verifier, rft.RftArmConfig(), feedback="steps")
    assert kept_texts(kept) == ["Answer: 7", "x\nAnswer: 7"] and counts["step_rejected"] == 1
    # only passing, distinct completions are step-checked, each up to its first rejected step
    assert verifier.checked == [((), "Answer: 7"), ((), "x"), (("x",), "Answer: 7"), ((), "bad")]
    with pytest.raises(ValueError, match="feedback"):
        rft.filter_completions(EXAMPLE, SAMPLES, verifier, rft.RftArmConfig(), feedback="dense")


def test_collect_samples_once_per_batch_and_reports_the_filter() -> None:
    backend = ScriptedBackend({"Q\n": SAMPLES, "R\n": [cont("Answer: 1", "eos")]})
    batch = rft.collect_kept(
        [EXAMPLE, {"prompt": "R\n"}],
        backend,
        AnswerIs7(),
        rft.RftArmConfig(num_samples=5),
        max_completion_tokens=32,
    )
    assert backend.calls == [{"prefixes": ["Q\n", "R\n"], "n": 5, "max_new_tokens": 32, "stop": None}]
    assert len(batch.kept) == 3
    s = batch.stats
    assert s["reward"] == pytest.approx(4 / 10) and s["pass_fraction"] == pytest.approx(4 / 10)
    assert (
        s["kept_fraction"] == pytest.approx(3 / 10) and s["prompts_with_kept"] == 0.5 and s["duplicates"] == 1
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from llm_rl.model import build_tiny_model

    path = tmp_path_factory.mktemp("rft_tiny") / "base"
    return str(build_tiny_model(path, hidden_size=32, num_layers=1, num_heads=2))


def test_loss_is_the_token_mean_nll_of_the_kept_completions(tiny_model) -> None:
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    a = (*policy.encode(["Answer: 7"], add_special_tokens=False)[0], policy.eos_token_id)
    b = tuple(policy.encode(["x\nAnswer: 7"], add_special_tokens=False)[0])
    kept = [rft.KeptCompletion("Q\n", a, 1.0), rft.KeptCompletion("R\n", b, 1.0)]
    loss, metrics = rft.sft_loss(kept, policy)
    assert metrics == {"loss": pytest.approx(loss.item()), "num_rows": 2, "num_tokens": len(a) + len(b)}
    loss.backward()
    got = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()
    lp = policy.sequence_logprobs(["Q\n", "R\n"], [list(a), list(b)])  # summed log-probs of each completion
    reference = -(lp[0] + lp[1]) / (len(a) + len(b))
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    for g, p in zip(got, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    empty, m = rft.sft_loss([], policy)
    assert not empty.requires_grad and m["num_rows"] == 0


def test_the_per_prompt_gradient_estimate_is_seeded_and_zero_when_nothing_is_kept(tiny_model) -> None:
    from llm_rl.generation import HFBackend
    from llm_rl.model import load_policy
    from verifiers.tasks.chain_arithmetic import ChainArithmetic

    policy = load_policy(tiny_model)
    verifier = ChainArithmetic()
    example = dict(verifier.generate(1, seed=0)[0])

    def gradient(cfg, seed):
        policy.zero_grad(set_to_none=True)
        batch = rft.collect_kept(
            [example], HFBackend(policy), verifier, cfg, max_completion_tokens=16,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        loss, _ = rft.sft_loss(batch.kept, policy)
        if loss.requires_grad:
            loss.backward()
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                for p in policy.model.parameters()
            ]
        )

    everything = rft.RftArmConfig(
        num_samples=3, threshold=0.0
    )  # the untrained model is never right: keep all
    g1, g2, g3 = gradient(everything, 0), gradient(everything, 0), gradient(everything, 1)
    assert torch.equal(g1, g2) and not torch.equal(g1, g3) and float(g1.norm()) > 0
    assert float(gradient(rft.RftArmConfig(num_samples=3), 0).norm()) == 0.0  # nothing verified: g = 0


def test_llm_rl_train_arm_rft_on_the_tiny_preset(tmp_path) -> None:
    rft_knobs = {"num_samples": 3, "threshold": 0.0}  # the untrained model is never right: keep every sample
    records = train_with_cli(tmp_path / "a", "rft", rft=rft_knobs)
    trains = [r for r in records if r["kind"] == "train"]
    assert len(trains) >= 2 and trains[-1]["generated_tokens"] >= 600 > trains[-2]["generated_tokens"]
    assert all(r["num_rows"] > 0 and r["grad_norm"] > 0 for r in trains)
    # one outcome verifier call per sample and no step check (outcome feedback); two prompts a step
    assert (
        trains[-1]["outcome_verifier_calls"] == 3 * 2 * len(trains) and trains[-1]["step_verifier_calls"] == 0
    )
    assert trains[-1]["prompts"] == 2 * len(trains)
    # SFT on its own samples lowers their NLL: the first step's loss is above the last's
    assert trains[0]["loss"] > trains[-1]["loss"]
    assert same_records(train_with_cli(tmp_path / "b", "rft", rft=rft_knobs), records)
    # with the default threshold nothing an untrained model writes is kept: no loss, no gradient
    trains = [r for r in train_with_cli(tmp_path / "c", "rft") if r["kind"] == "train"]
    assert all(r["kept"] == 0 and r["grad_norm"] == 0 and "num_rows" not in r for r in trains)


def test_compare_accepts_all_five_arms(tmp_path) -> None:
    from llm_rl.arms import ARM_NAMES
    from llm_rl.config import ExperimentConfig
    from llm_rl.experiment import validate_experiment
    from relabel_rl import load_config

    arms = ["grpo", "relabel", "mc_value", "tree_grpo", "rft"]
    assert set(arms) <= set(ARM_NAMES)
    cfg = load_config(
        ExperimentConfig, data=train_recipe(tmp_path, "rft"), overrides=["--compare.arms", str(arms)]
    )
    validate_experiment(cfg, arms=list(cfg.compare.arms))
    with pytest.raises(ConfigError, match=r"rft\.num_samples"):
        load_config(ExperimentConfig, data=train_recipe(tmp_path, "rft", rft={"num_samples": 0}))
