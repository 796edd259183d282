"""Information parity (``task.feedback: outcome | steps``) and budgets on several axes, for every arm.

* Under ``outcome`` a spy verifier (the innermost verifier: it sees every call that reaches the task, whichever
  wrapper an arm went through) records ZERO ``check_step`` calls for every registered arm (``llm_rl.arms.ARMS``,
  so a new arm is covered when it is registered), and the metered verifier refuses a forgotten call.
* Under ``steps`` every step check is charged: the spy's count equals the run's ``step_verifier_calls``.
* ``budget.axis`` matches on ``prompts`` (the outcome runs) and on ``total_tokens`` (the steps runs) for every arm,
  and every record carries every counter.
* The pieces each arm uses under ``steps``, against hand-computed numbers: GRPO's process advantages (DeepSeekMath
  §4.1.3) and the trainer override that installs them, the MC arm's episodes that end at the first rejected step,
  the relabeller's pruning following the setting.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import pytest
import torch

import verifiers
from llm_rl.arms import ARMS, grpo, mc_value
from llm_rl.arms.relabel import prune_rejected_steps
from llm_rl.config import ExperimentConfig
from llm_rl.harness.budget import Budget
from llm_rl.harness.data import check_task
from llm_rl.harness.metering import MeteredVerifier, StepFeedbackError
from llm_rl.harness.run import train_arm
from relabel_rl.config import ConfigError, load_config
from relabel_rl.rundir import RunDir
from verifiers.base import Verifier
from verifiers.tasks.chain_arithmetic import ChainArithmetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTERS = (
    "generated_tokens", "prefill_tokens", "total_tokens", "outcome_verifier_calls", "step_verifier_calls",
    "verifier_calls", "optimizer_steps", "wall_time", "prompts",
)  # fmt: skip


class SpyChain(ChainArithmetic):
    """Chain arithmetic that records every ``check_step`` call reaching it (class-level, so the instance the
    harness builds from ``task.verifier: test_feedback:SpyChain`` is observed)."""

    name = "spy_chain"
    step_calls: ClassVar[list[str]] = []

    def check_step(self, previous_steps, step, example):
        SpyChain.step_calls.append(step)
        return super().check_step(previous_steps, step, example)


# --- the metered verifier enforces the setting ---------------------------------------------------------------


def test_metered_verifier_refuses_step_checks_under_outcome_and_charges_them_under_steps() -> None:
    SpyChain.step_calls = []
    example = {"prompt": "Start 2. Add 3.\n", "start": 2, "operations": "+3", "answer": "5"}
    budget = Budget()
    outcome = MeteredVerifier(verifiers.ContainedVerifier(SpyChain()), budget, feedback="outcome")
    assert outcome.has_step_checks is False  # an arm that asks first never calls
    with pytest.raises(StepFeedbackError, match=r"task\.feedback: outcome"):
        outcome.check_step([], "2 + 3 = 5", example)
    assert SpyChain.step_calls == [] and budget.step_verifier_calls == 0
    assert outcome.score("2 + 3 = 5\nAnswer: 5", example) == 1.0 and budget.outcome_verifier_calls == 1
    steps = MeteredVerifier(verifiers.ContainedVerifier(SpyChain()), budget, feedback="steps")
    assert steps.has_step_checks is True
    assert steps.check_step([], "2 + 3 = 5", example) is True
    assert steps.check_step([], "2 + 3 = 6", example) is False
    assert SpyChain.step_calls == ["2 + 3 = 5", "2 + 3 = 6"] and budget.step_verifier_calls == 2
    with pytest.raises(ValueError, match="feedback"):
        MeteredVerifier(verifiers.ContainedVerifier(SpyChain()), None, feedback="partial")


def test_recipe_checks_of_the_feedback_setting() -> None:
    class NoSteps(Verifier):
        name = "no_steps"

        def score(self, completion, example):
            return 0.0

    cfg = load_config(ExperimentConfig, data={"task": {"feedback": "steps"}})
    with pytest.raises(ConfigError, match=r"task\.feedback: steps.*needs a verifier with step checks"):
        check_task(cfg, NoSteps())
    check_task(cfg, ChainArithmetic())
    with pytest.raises(ConfigError, match=r"task\.feedback"):
        load_config(ExperimentConfig, data={"task": {"feedback": "dense"}})
    # the relabeller's pruning follows the setting; an explicit contradiction names both keys
    assert prune_rejected_steps(cfg) is True
    assert prune_rejected_steps(load_config(ExperimentConfig, data={})) is False
    for feedback, prune in (("outcome", True), ("steps", False)):
        bad = load_config(
            ExperimentConfig,
            data={"task": {"feedback": feedback}, "relabel": {"prune_rejected_steps": prune}},
        )
        with pytest.raises(ConfigError, match=r"relabel\.prune_rejected_steps.*task\.feedback"):
            prune_rejected_steps(bad)
    agreeing = {"task": {"feedback": "steps"}, "relabel": {"prune_rejected_steps": True}}
    assert prune_rejected_steps(load_config(ExperimentConfig, data=agreeing)) is True


# --- every arm, end to end: zero step checks under outcome; budgets on prompts and total tokens --------------

# Small knobs per registered arm, so a run is a few seconds; an arm not listed runs with its defaults.
SMALL = {
    "grpo": {
        "grpo": {"trl": {"num_generations": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3}}
    },
    "relabel": {"relabel": {"num_candidates": 2, "puct": {"num_simulations": 2}}},
    "mc_value": {"mc_value": {"num_samples": 2, "num_rollouts": 2}},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from llm_rl.model import build_tiny_model

    path = tmp_path_factory.mktemp("feedback_tiny") / "base"
    return str(build_tiny_model(path, hidden_size=32, num_layers=1, num_heads=2))


def _run(tmp_path, tiny, arm: str, feedback: str, budget: dict) -> tuple[dict, list[dict]]:
    data = {
        "arm": arm,
        "output_dir": str(tmp_path),
        "task": {
            "verifier": "test_feedback:SpyChain",
            "feedback": feedback,
            "train_size": 16,
            "test_size": 2,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_steps": 3,
            "max_step_tokens": 8,
            "max_completion_tokens": 24,
        },
        "budget": budget,
        "eval": {"num_examples": 2, "pass_k": 2},
        "optim": {"prompts_per_step": 2, "checkpoint_every": 100},
        **SMALL.get(arm, {}),
    }
    cfg = load_config(ExperimentConfig, data=data)
    ARMS[arm].validate(cfg)
    SpyChain.step_calls = []
    final = train_arm(cfg, RunDir.create(tmp_path, config=cfg), init_model=tiny, progress=False)
    return final, RunDir(tmp_path).metrics()


def _assert_every_counter(records: list[dict]) -> None:
    for r in records:
        if r["kind"] in ("train", "eval"):
            missing = [k for k in COUNTERS if k not in r]
            assert not missing, f"{r['kind']} record at step {r['step']} lacks {missing}"
            assert r["total_tokens"] == r["generated_tokens"] + r["prefill_tokens"]
            assert r["verifier_calls"] == r["outcome_verifier_calls"] + r["step_verifier_calls"]


@pytest.mark.parametrize("arm", list(ARMS))
def test_under_outcome_no_arm_checks_a_step_and_a_prompt_budget_stops_it(tmp_path, tiny, arm) -> None:
    final, records = _run(tmp_path, tiny, arm, "outcome", {"axis": "prompts", "limit": 3, "eval_every": 2})
    assert SpyChain.step_calls == []  # the verifier never saw a step check
    assert final["step_verifier_calls"] == 0 and final["outcome_verifier_calls"] > 0
    trains = [r for r in records if r["kind"] == "train"]
    assert final["prompts"] >= 3 and trains[-1]["prompts"] == final["prompts"]
    assert all(r["prompts"] < 3 for r in trains[:-1])  # stopped at the first update that reached the limit
    _assert_every_counter(records)


@pytest.mark.parametrize("arm", list(ARMS))
def test_under_steps_every_step_check_is_charged_and_a_total_token_budget_stops_it(
    tmp_path, tiny, arm
) -> None:
    limit = 1500
    final, records = _run(
        tmp_path, tiny, arm, "steps", {"axis": "total_tokens", "limit": limit, "eval_every": 700}
    )
    assert final["step_verifier_calls"] == len(SpyChain.step_calls)  # one unit per check, none unmetered
    if arm in ("grpo", "relabel", "mc_value"):  # each checks the steps of every sample it draws
        assert len(SpyChain.step_calls) > 0
    trains = [r for r in records if r["kind"] == "train"]
    if arm == "grpo":  # the process-supervised trainer ran (it logs the share of rejected steps)
        assert all(0.0 <= r["rejected_step_fraction"] <= 1.0 for r in trains)
    assert trains[-1]["total_tokens"] >= limit > trains[-2]["total_tokens"]
    _assert_every_counter(records)


# --- GRPO: DeepSeekMath's process supervision --------------------------------------------------------------


def test_process_advantages_match_hand_computed_numbers() -> None:
    # One group of two completions: steps (accepted, accepted, rejected) and (accepted, rejected).
    # R = {1, 1, 0, 1, 0}: mean 0.6, Bessel std sqrt(1.2 / 4) = 0.547723; r~(1) = 0.4 / (0.547723 + 1e-4) =
    # 0.730161, r~(0) = -0.6 / 0.547823 = -1.095241. Advantage of a step: the sum of r~ from it to the end.
    hi, lo = 0.4 / (0.3**0.5 + 1e-4), -0.6 / (0.3**0.5 + 1e-4)
    got = grpo.process_advantages([[1.0, 1.0, 0.0], [1.0, 0.0]], 2)
    assert got[0] == pytest.approx([hi + hi + lo, hi + lo, lo])
    assert got[1] == pytest.approx([hi + lo, lo])
    assert got[0] == pytest.approx([0.365081, -0.365081, -1.095241], abs=1e-5)
    # groups are normalised separately; a step that cannot be checked (None) adds nothing and is not counted;
    # a group whose step rewards are all equal has advantage 0 everywhere (as GRPO's equal-reward groups)
    got = grpo.process_advantages([[1.0, None], [0.0], [1.0], [1.0, 1.0]], 2)
    r = 0.5 / (0.5**0.5 + 1e-4)  # group 1: R = {1, 0}, mean 0.5, std sqrt(1/2)
    assert got[0] == pytest.approx([r, 0.0]) and got[1] == pytest.approx([-r])
    assert got[2:] == [[0.0], [0.0, 0.0]]
    none = grpo.process_advantages([[1.0, 0.0], [1.0]], 2, scale_rewards="none")  # r - mean, mean 2/3
    assert none[0] == pytest.approx([1 / 3 - 2 / 3, -2 / 3]) and none[1] == pytest.approx([1 / 3])
    with pytest.raises(ValueError, match="groups of 2"):
        grpo.process_advantages([[1.0]], 2)


class CharTok:
    """A character tokenizer: token id = ord(char), EOS = 2."""

    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 2)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


ONE_OP = {"prompt": "Start 2. Add 3.\n", "start": 2, "operations": "+3", "answer": "5"}


def test_token_advantages_give_each_token_its_step_sum() -> None:
    chain = ChainArithmetic()
    text = "2 + 3 = 5\nAnswer: 6"
    assert grpo.check_completion_steps(text, chain, ONE_OP) == [1.0, 0.0]
    ids = [ord(c) for c in text] + [2]
    row = grpo.token_advantages(ids, text, [0.25, -1.0], chain, CharTok(), eos_token_id=2)
    assert row == [0.25] * len("2 + 3 = 5\n") + [-1.0] * (len("Answer: 6") + 1)  # EOS with the last step
    # text after the last step's delimiter has no step: advantage 0; no steps at all: 0 everywhere
    text = "2 + 3 = 5\n\n"
    row = grpo.token_advantages([ord(c) for c in text], text, [0.5], chain, CharTok(), eos_token_id=2)
    assert row == [0.5] * len("2 + 3 = 5\n") + [0.0]
    assert grpo.token_advantages([ord("\n")], "\n", [], chain, CharTok(), eos_token_id=2) == [0.0]


def test_process_supervised_trainer_replaces_trls_advantages(monkeypatch) -> None:
    """The override on a fixed group: TRL's own generation and scoring are stubbed to return two completions with
    known step checks; the subclass's output carries the hand-computed ``[B, T]`` advantages, everything else of
    TRL's output unchanged, and its step checks went through the (metered) verifier."""
    from types import SimpleNamespace

    from trl import GRPOTrainer

    texts = ["2 + 3 = 5\nAnswer: 5", "2 + 3 = 6\nAnswer: 6"]  # steps (1, 1) and (0, 0)
    ids = [[ord(c) for c in t] + [2] for t in texts]
    width = max(map(len, ids))
    padded = torch.tensor([row + [2] * (width - len(row)) for row in ids])

    def fake_generate(self, prompts):
        return None, ids, None, texts, None, None, None, None

    def fake_score(self, inputs):
        self._generate([x["prompt"] for x in inputs])
        return {"completion_ids": padded, "advantages": torch.tensor([0.7, -0.7]), "other": "kept"}

    monkeypatch.setattr(GRPOTrainer, "_generate", fake_generate)
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", fake_score)
    cls = grpo.process_supervised_trainer()
    trainer = cls.__new__(cls)  # TRL's __init__ needs a model; the override needs only these attributes
    budget = Budget()
    trainer.verifier = MeteredVerifier(
        verifiers.ContainedVerifier(ChainArithmetic()), budget, feedback="steps"
    )
    trainer.processing_class = CharTok()
    trainer.num_generations, trainer.scale_rewards = 2, "group"
    trainer.accelerator = SimpleNamespace(num_processes=1, process_index=0)
    trainer.model = SimpleNamespace(training=True)
    trainer._metrics = {"train": {"rejected_step_fraction": []}}
    out = trainer._generate_and_score_completions([ONE_OP, ONE_OP])
    # R = {1, 1, 0, 0}: mean 0.5, std sqrt(1/3); r~ = +-0.5 / (0.57735 + 1e-4)
    r = 0.5 / (1 / 3**0.5 + 1e-4)
    first_step = len("2 + 3 = 5\n")
    want = torch.zeros(2, width)
    want[0, :first_step], want[0, first_step : len(ids[0])] = 2 * r, r
    want[1, :first_step], want[1, first_step : len(ids[1])] = -2 * r, -r
    assert torch.allclose(out["advantages"], want, atol=1e-6)
    assert out["other"] == "kept" and out["completion_ids"] is padded
    assert budget.step_verifier_calls == 4 and budget.outcome_verifier_calls == 0
    assert trainer._metrics["train"]["rejected_step_fraction"] == [0.5]
    trainer.model.training = False  # evaluation batches keep TRL's advantages
    assert torch.equal(
        trainer._generate_and_score_completions([ONE_OP, ONE_OP])["advantages"], torch.tensor([0.7, -0.7])
    )


def test_grpo_refuses_sequence_level_objectives_under_steps(tmp_path) -> None:
    base = {"arm": "grpo", "task": {"feedback": "steps"}}
    for trl, key in (
        ({"loss_type": "vespo"}, "loss_type"),
        ({"importance_sampling_level": "sequence"}, "importance_sampling_level"),
    ):
        cfg = load_config(ExperimentConfig, data={**base, "grpo": {"trl": trl}})
        with pytest.raises(ConfigError, match=rf"grpo\.trl\.{key}.*task\.feedback: steps"):
            grpo.grpo_config(cfg, tmp_path)


# --- the MC-value arm: an episode ends at its first rejected step -----------------------------------------------


class ScriptedBackend:
    """Returns, for each prefix, the scripted rollout texts (cycled to n); records the prefixes it rolled out."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.calls = script, []

    def sample(self, prefixes, *, n, max_new_tokens, temperature=1.0, stop=None, generator=None):
        from llm_rl.generation import Continuation

        self.calls.append(list(prefixes))
        return [
            [Continuation(text=t, token_ids=(1,), logprob=0.0, finished=True, stopped=False)
             for t in (self.script[p] * n)[:n]]
            for p in prefixes
        ]  # fmt: skip


def test_mc_episode_ends_at_the_first_rejected_step() -> None:
    from llm_rl.generation import Continuation

    two = {"prompt": "Start 2. Add 3, times 4.\n", "start": 2, "operations": "+3 *4", "answer": "20"}
    p = two["prompt"]
    rollouts = {
        p: ["2 + 3 = 5\n5 * 4 = 20\nAnswer: 20", "Answer: 1"],
        p + "2 + 3 = 5\n": ["5 * 4 = 20\nAnswer: 20"],
    }
    good, bad = "2 + 3 = 5\n5 * 4 = 20\nAnswer: 20", "2 + 3 = 5\n5 * 4 = 21\nAnswer: 21"
    samples = [[Continuation(text=t, token_ids=(*(ord(c) for c in t), 2), logprob=0.0, finished=True,
                             stopped=False) for t in (good, bad)]]  # fmt: skip
    for check, step_calls in ((False, 0), (True, 3 + 2)):
        rollouts[p + "2 + 3 = 5\n5 * 4 = 20\n"] = ["Answer: 20"]
        backend, budget = ScriptedBackend(rollouts), Budget()
        feedback = "steps" if check else "outcome"
        verifier = MeteredVerifier(verifiers.ContainedVerifier(ChainArithmetic()), budget, feedback=feedback)
        if not check:
            rollouts[p + "2 + 3 = 5\n5 * 4 = 21\n"] = ["Answer: 21"]
        (row,) = mc_value.estimate_step_advantages(
            [two], samples, backend, verifier, num_rollouts=2, max_new_tokens=16, temperature=1.0, max_steps=8,
            check_steps=check,
        )  # fmt: skip
        first, second = row
        assert first.values == pytest.approx((0.5, 1.0, 1.0, 1.0)) and first.rejected_step is None
        assert budget.step_verifier_calls == step_calls  # good: 3 steps checked; bad: up to its rejected 2nd
        if check:
            # the bad sample's episode ends at its 2nd step: V(s_2) = 0, no rollout from s_2, not scored
            assert second.rejected_step == 1 and second.values == pytest.approx((0.5, 1.0, 0.0))
            assert second.advantages == pytest.approx((0.5, -1.0))
            assert p + "2 + 3 = 5\n5 * 4 = 21\n" not in backend.calls[0]
            assert budget.outcome_verifier_calls == 1 + 3 * 2  # the good sample + 3 boundaries x 2 rollouts
            (r1, r2) = mc_value.build_rows(row, samples[0], CharTok(), eos_token_id=2)
            assert r2.token_ids == tuple(ord(c) for c in "2 + 3 = 5\n5 * 4 = 21\n")  # up to the rejected step
            assert r2.advantages == (0.5,) * 10 + (-1.0,) * 11 and len(r1.token_ids) == len(good) + 1
        else:
            assert second.rejected_step is None and len(second.advantages) == 3


class CoinSteps(ChainArithmetic):
    """Step checks that are a deterministic coin flip per step text (so a group's process rewards are mixed)."""

    name = "coin_steps"

    def check_step(self, previous_steps, step, example):
        return bool(hashlib.sha256(step.encode()).digest()[0] % 2)


def test_grpo_gradient_sample_under_steps_is_the_process_supervised_loss(tiny) -> None:
    """The variance probe's per-prompt GRPO loss under ``steps`` = DAPO's token mean of ``-A_t log p`` with the
    process advantages of the same samples (computed here from `process_advantages`/`token_advantages`)."""
    from llm_rl.generation import HFBackend
    from llm_rl.harness.metering import StepContext
    from llm_rl.model import load_policy

    policy = load_policy(tiny)
    cfg = load_config(
        ExperimentConfig,
        data={"arm": "grpo", "task": {"feedback": "steps", "max_completion_tokens": 24}, **SMALL["grpo"]},
    )
    example = {"prompt": "Start 3. Add 4.\n", "start": 3, "operations": "+4", "answer": "7"}
    budget = Budget()
    verifier = MeteredVerifier(verifiers.ContainedVerifier(CoinSteps()), budget, feedback="steps")
    ctx = StepContext(policy=policy, sampler=HFBackend(policy), verifier=verifier,
                      generator=torch.Generator().manual_seed(3))  # fmt: skip
    loss = grpo.GrpoArm(cfg).gradient_sample(example, ctx)
    loss.backward()
    got = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()
    assert budget.step_verifier_calls > 0 and budget.outcome_verifier_calls == 0

    (samples,) = HFBackend(policy).sample([example["prompt"]], n=2, max_new_tokens=24, temperature=1.0, stop=None,
                                          generator=torch.Generator().manual_seed(3))  # fmt: skip
    rewards = [grpo.check_completion_steps(s.text, CoinSteps(), example) for s in samples]
    per_step = grpo.process_advantages(rewards, 2)
    assert any(a != 0 for row in per_step for a in row), "the fixed seed gives mixed step rewards"
    scored = policy.token_logprobs([example["prompt"]] * 2, [list(s.token_ids) for s in samples])
    adv = torch.zeros_like(scored.logprobs)
    for i, s in enumerate(samples):
        row = grpo.token_advantages(s.token_ids, s.text, per_step[i], CoinSteps(), policy.tokenizer,
                                    eos_token_id=policy.eos_token_id)  # fmt: skip
        adv[i, : len(row)] = torch.tensor(row)
    expected = (-adv * scored.logprobs * scored.mask).sum() / scored.mask.sum()
    expected.backward()
    for g, p in zip(got, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
