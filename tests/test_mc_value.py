"""The per-step Monte-Carlo value arm: step cutting, boundary values and advantages against hand-computed numbers
(scripted backend and verifier), token-exact rows, the loss, budget counting, and short end-to-end runs."""

from __future__ import annotations

import hashlib

import pytest
import torch

import verifiers
from llm_rl.arms import mc_value
from llm_rl.arms.mc_value import McValueArm
from llm_rl.generation import Continuation, HFBackend
from llm_rl.harness.budget import Budget
from llm_rl.harness.metering import MeteredVerifier, PromptBatch, StepContext
from verifiers.base import Verifier


class AnswerIs7(Verifier):
    """Scores 1 when the first answer line says 7."""

    name = "answer_is_7"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        for line in completion.splitlines():
            if line.startswith("Answer:"):
                return float(line.split(":", 1)[1].strip() == "7")
        return 0.0


def cont(text: str, *, finished: bool = True) -> Continuation:
    ids = tuple(ord(c) for c in text) + ((2,) if finished else ())
    return Continuation(text=text, token_ids=ids, logprob=0.0, finished=finished, stopped=False)


class ScriptedBackend:
    """Returns, for each prefix, the scripted rollout texts (cycled to n); records its calls."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], int]] = []
        self.budget = None

    def sample(self, prefixes, *, n, max_new_tokens, temperature=1.0, stop="\n", generator=None):
        self.calls.append((list(prefixes), n))
        assert stop is None
        return [[cont(self.script[p][j % len(self.script[p])]) for j in range(n)] for p in prefixes]


def test_step_segments_concatenate_to_the_completion() -> None:
    v = AnswerIs7()
    assert mc_value.step_segments("a\nb\nAnswer: 7", v, max_steps=8) == ["a\n", "b\n", "Answer: 7"]
    # blank lines go with the next step; a trailing newline stays with the last step
    assert mc_value.step_segments("a\n\nb\nAnswer: 7\n", v, max_steps=8) == ["a\n", "\nb\n", "Answer: 7\n"]
    # more steps than max_steps: the rest is one last segment
    assert mc_value.step_segments("a\nb\nc\nd", v, max_steps=2) == ["a\n", "b\nc\nd"]
    assert mc_value.step_segments("", v, max_steps=4) == [""]
    for text in ["x\ny", "\n\n", "Answer: 7", "a\nb\nc\nd\n"]:
        assert "".join(mc_value.step_segments(text, v, max_steps=3)) == text


def test_mc_advantages_match_hand_computed_numbers() -> None:
    prompt = "Q\n"
    rollouts = {
        "Q\n": ["Answer: 7", "Answer: 1", "Answer: 2", "Answer: 3"],  # V(s0) = 1/4
        "Q\nx=1\n": ["Answer: 7", "Answer: 7", "Answer: 7", "Answer: 0"],  # 3/4
        "Q\nx=1\nx=2\n": ["Answer: 7", "Answer: 7", "Answer: 0", "Answer: 0"],  # 2/4
        "Q\nx=1\nx=9\n": ["Answer: 0"],  # 0
    }
    backend = ScriptedBackend(rollouts)
    budget = Budget()
    verifier = MeteredVerifier(verifiers.ContainedVerifier(AnswerIs7()), budget)
    completions = [[cont("x=1\nx=2\nAnswer: 7"), cont("x=1\nx=9\nAnswer: 3")]]
    (out,) = mc_value.estimate_step_advantages(
        [{"prompt": prompt}], completions, backend, verifier, num_rollouts=4, max_new_tokens=16,
        temperature=1.0, max_steps=8,
    )  # fmt: skip
    first, second = out
    assert first.segments == ("x=1\n", "x=2\n", "Answer: 7")
    assert first.values == pytest.approx((0.25, 0.75, 0.5, 1.0))
    assert first.advantages == pytest.approx((0.5, -0.25, 0.5))
    assert second.values == pytest.approx((0.25, 0.75, 0.0, 0.0))
    assert second.advantages == pytest.approx((0.5, -0.75, 0.0))
    # ONE batched rollout call over the 4 distinct boundaries (shared prefixes rolled out once), n = K
    assert backend.calls == [(list(rollouts), 4)]
    # verifier calls: 2 samples + 4 boundaries x 4 rollouts
    assert budget.verifier_calls == 2 + 16


def test_rows_split_the_sampled_tokens_exactly() -> None:
    class CharTok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids if i != 2)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    sample = mc_value.SampledSteps("Q\n", ("x=1\n", "Answer: 7"), True, (0.5, 0.25, 1.0), (-0.25, 0.75))
    c = cont("x=1\nAnswer: 7")
    (row,) = mc_value.build_rows([sample], [c], CharTok(), eos_token_id=2)
    assert row.prompt == "Q\n" and row.token_ids == c.token_ids  # exactly the sampled tokens, EOS included
    # "x=1\n" (4 tokens) carries A_0; "Answer: 7" + EOS (10 tokens) carries A_1: EOS trains with the last step
    assert row.advantages == (-0.25,) * 4 + (0.75,) * 10
    parts = mc_value.segment_token_ids(c.token_ids, sample.segments, CharTok(), eos_token_id=2)
    assert parts == [[ord(ch) for ch in "x=1\n"], [*(ord(ch) for ch in "Answer: 7"), 2]]


# --- end to end on the tiny preset ---------------------------------------------------------------------------


def small_cfg(**optim):
    from llm_rl.config import BudgetConfig, EvalConfig, ExperimentConfig, OptimConfig, TaskConfig

    return ExperimentConfig(
        arm="mc_value",
        seed=0,
        task=TaskConfig(train_size=16, test_size=4, max_completion_tokens=20, max_steps=4),
        budget=BudgetConfig(axis="generated_tokens", limit=1200, eval_every=500),
        eval=EvalConfig(num_examples=4, pass_k=2),
        optim=OptimConfig(**{"prompts_per_step": 2, "checkpoint_every": 1, "learning_rate": 1e-3, **optim}),
        mc_value=mc_value.McValueArmConfig(num_samples=2, num_rollouts=2),
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from llm_rl.model import build_tiny_model

    path = tmp_path_factory.mktemp("mc_tiny") / "base"
    return str(build_tiny_model(path, hidden_size=32, num_layers=1, num_heads=2))


def unmetered(policy, verifier, generator=None, **kw):
    """An arm context that charges nothing (as the variance probe's)."""
    contained = verifiers.ContainedVerifier(verifier)
    return StepContext(policy=policy, sampler=HFBackend(policy), verifier=MeteredVerifier(contained, None),
                       generator=generator, **kw)  # fmt: skip


class CountingBackend:
    """Wraps the loop's backend and adds up what it actually returned (tokens sampled, continuations)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokens = 0
        self.continuations = 0

    @property
    def budget(self):
        return self.inner.budget

    @budget.setter
    def budget(self, value) -> None:
        self.inner.budget = value

    def sample(self, prefixes, **kwargs):
        out = self.inner.sample(prefixes, **kwargs)
        if self.inner.budget is not None:  # evaluation shares the backend with its budget detached
            self.tokens += sum(len(c.token_ids) for group in out for c in group)
            self.continuations += sum(len(group) for group in out)
        return out

    def greedy(self, prefixes, **kwargs):
        return self.inner.greedy(prefixes, **kwargs)


def _comparable(records):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records if r["kind"] != "resume"]


def _train(cfg, run, tiny_model):
    from llm_rl.harness.run import train_arm

    return train_arm(cfg, run, init_model=tiny_model)


def test_mc_value_end_to_end_counts_exactly_and_is_deterministic(tmp_path, tiny_model, monkeypatch) -> None:
    import llm_rl.harness.loop
    from relabel_rl.rundir import RunDir

    cfg = small_cfg()
    made = []
    real_make = llm_rl.harness.loop.make_backend

    def spy_make(kind, policy, budget):
        made.append(CountingBackend(real_make(kind, policy, budget)))
        return made[-1]

    monkeypatch.setattr(llm_rl.harness.loop, "make_backend", spy_make)
    run = RunDir.create(tmp_path / "a", config=cfg)
    final = _train(cfg, run, tiny_model)
    records = run.metrics()
    evals = [r for r in records if r["kind"] == "eval"]
    trains = [r for r in records if r["kind"] == "train"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == final["step"] == trains[-1]["step"]
    assert len(evals) >= 3
    assert all({"loss", "reward", "mean_abs_advantage", "num_rows"} <= set(r) for r in trains)
    assert trains[-1]["generated_tokens"] >= cfg.budget.limit > trains[-2]["generated_tokens"]
    # the batch that crosses the limit is collected prompt by prompt: overshoot <= one prompt's samples + rollouts
    mc, task = cfg.mc_value, cfg.task
    one_prompt = mc.num_samples * task.max_completion_tokens * (1 + task.max_steps * mc.num_rollouts)
    assert final["generated_tokens"] - cfg.budget.limit < one_prompt
    assert (run.path / "final" / "config.json").exists()
    # the budget holds exactly the tokens the backend returned; one verifier call per sample and per rollout
    (backend,) = made
    assert final["generated_tokens"] == backend.tokens
    assert final["verifier_calls"] == final["outcome_verifier_calls"] == backend.continuations
    assert 0 < final["prompts"] <= cfg.optim.prompts_per_step * trains[-1]["step"]
    monkeypatch.undo()

    run_b = RunDir.create(tmp_path / "b", config=cfg)
    _train(cfg, run_b, tiny_model)
    assert _comparable(run_b.metrics()) == _comparable(records)

    # A killed run (dies in step 3's loss) resumes from its step-2 checkpoint and retraces the full run.
    calls = {"n": 0}
    real_loss = mc_value.pg_loss

    def dying_loss(rows, policy, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(rows, policy, **kw)

    monkeypatch.setattr(mc_value, "pg_loss", dying_loss)
    run_c = RunDir.create(tmp_path / "c", config=cfg)
    with pytest.raises(KeyboardInterrupt):
        _train(cfg, run_c, tiny_model)
    monkeypatch.undo()
    _train(cfg, run_c, tiny_model)
    resumed = run_c.metrics()
    assert any(r["kind"] == "resume" and r["step"] == 2 for r in resumed)
    # (the verifier statistics are the run's, carried across the resume: they match too)
    assert _comparable(resumed) == _comparable(records)


def test_loss_is_the_per_token_policy_gradient_with_step_advantages(tiny_model) -> None:
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    enc = policy.encode(["x=1\n", "Answer: 7"], add_special_tokens=False)
    n1, n2 = len(enc[0]), len(enc[1]) + 1
    row = mc_value.CompletionRow("Q\n", (*enc[0], *enc[1], policy.eos_token_id), (0.5,) * n1 + (-0.25,) * n2)
    loss, metrics = mc_value.pg_loss((row,), policy, clip_epsilon=0.2)
    # on-policy the ratio is exactly 1: loss = -sum_t A_t * |tokens_t| / total tokens
    assert float(loss) == pytest.approx(-(0.5 * n1 - 0.25 * n2) / (n1 + n2), abs=1e-6)
    assert metrics["num_tokens"] == n1 + n2 and metrics["clip_fraction"] == 0.0
    loss.backward()
    got = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()
    # the same two steps scored separately, each given its own prefix
    lp = policy.sequence_logprobs(["Q\n", "Q\nx=1\n"], [enc[0], [*enc[1], policy.eos_token_id]])
    (-(0.5 * lp[0] - 0.25 * lp[1]) / (n1 + n2)).backward()
    for g, p in zip(got, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)


class CoinFlip(AnswerIs7):
    """A deterministic pseudo-random 0/1 per completion text, so boundary values (and advantages) vary."""

    def score(self, completion: str, example: dict) -> float:
        return float(hashlib.sha256(completion.encode()).digest()[0] % 2)


def test_gradient_sample_gives_a_per_prompt_gradient(tiny_model) -> None:
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    example = {"prompt": "Q\n", "answer": "7"}
    arm = McValueArm(small_cfg())
    for seed in range(
        32
    ):  # the first seed whose advantages are not all zero (independent of sampler internals)
        batch = arm.collect([example], unmetered(policy, CoinFlip(), torch.Generator().manual_seed(seed)))
        if any(a != 0 for r in batch.items for a in r.advantages):
            break
    else:
        raise AssertionError("no seed gives a non-zero advantage")
    loss = arm.gradient_sample(example, unmetered(policy, CoinFlip(), torch.Generator().manual_seed(seed)))
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in policy.model.parameters() if p.grad is not None)
    again = arm.gradient_sample(example, unmetered(policy, CoinFlip(), torch.Generator().manual_seed(seed)))
    assert float(again) == float(loss)  # same generator seed, same estimate


def test_several_updates_per_batch_record_old_logprobs(tiny_model) -> None:
    import dataclasses

    from llm_rl.config import ExperimentConfig
    from llm_rl.model import load_policy
    from relabel_rl.config import ConfigError

    policy = load_policy(tiny_model)
    arm = McValueArm(small_cfg(epochs=2))
    g = torch.Generator().manual_seed(0)
    batch = arm.collect([{"prompt": "Q\n"}], unmetered(policy, AnswerIs7(), g, updates_per_batch=2))
    assert batch.items and all(
        r.old_logprobs is not None and len(r.old_logprobs) == len(r.token_ids) for r in batch.items
    )
    # Unchanged policy: the recorded old log-probs equal the current ones, so the loss equals the on-policy loss.
    off, _ = arm.loss(batch, policy)
    on_rows = tuple(mc_value.CompletionRow(r.prompt, r.token_ids, r.advantages) for r in batch.items)
    on, _ = mc_value.pg_loss(on_rows, policy)
    assert float(off) == pytest.approx(float(on), abs=1e-6)
    # one update per batch: on-policy rows, nothing recorded
    single = arm.collect([{"prompt": "Q\n"}], unmetered(policy, AnswerIs7(), g))
    assert all(r.old_logprobs is None for r in single.items)

    bad = dataclasses.replace(ExperimentConfig(), mc_value=mc_value.McValueArmConfig(temperature=0.0))
    with pytest.raises(ConfigError, match=r"mc_value\.temperature"):
        McValueArm.validate(bad)


def test_the_batch_crossing_the_budget_stops_after_the_prompt_that_spent_it(tiny_model) -> None:
    import dataclasses

    from llm_rl.config import BudgetConfig
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    cfg = dataclasses.replace(
        small_cfg(), budget=BudgetConfig(axis="generated_tokens", limit=10, eval_every=5)
    )
    budget = Budget()
    ctx = unmetered(
        policy, AnswerIs7(), torch.Generator().manual_seed(0), budget=budget, budget_cfg=cfg.budget
    )
    ctx.sampler.budget = budget
    examples = PromptBatch([{"prompt": p} for p in ("A\n", "B\n", "C\n")], budget)
    assert ctx.batch_may_cross_limit()  # the first batch is always collected prompt by prompt
    batch = McValueArm(cfg).collect(examples, ctx)
    assert batch.stats["num_prompts"] == 1 and {r.prompt for r in batch.items} == {"A\n"}
    assert budget.generated_tokens >= 10
    assert budget.prompts == 1  # only the prompt it read is charged
    # far from the limit, whole batches are collected at once
    budget2 = Budget(generated_tokens=100, optimizer_steps=1)
    far = dataclasses.replace(
        ctx, budget=budget2, budget_cfg=BudgetConfig(axis="generated_tokens", limit=1000, eval_every=500)
    )
    assert not far.batch_may_cross_limit()
    budget2.generated_tokens = 850  # 150 left < 2 x the average batch (850)
    assert far.batch_may_cross_limit()
