"""The relabeller's loss on hand-built decision points, against the same quantities computed one by one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from llm_rl.arms.relabel import DecisionPoint, Episode, RelabelArmConfig, relabel_loss
from llm_rl.model import build_tiny_model, load_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    torch.manual_seed(0)
    return load_policy(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=1))


def _decision(
    policy, prefix: str, steps: list[str], target: list[float], root_value: float, rejected=None
) -> DecisionPoint:
    ids = tuple(tuple(x) for x in policy.encode([s + "\n" for s in steps], add_special_tokens=False))
    a = len(steps)
    return DecisionPoint(
        prefix=prefix,
        candidates=tuple(steps),
        continuations=ids,
        target=np.asarray(target),
        rejected=np.zeros(a, dtype=bool) if rejected is None else np.asarray(rejected),
        visit_counts=np.zeros(a, dtype=np.int64),
        prior=np.full(a, 1.0 / a),
        root_value=root_value,
        selected_index=0,
    )


@pytest.mark.parametrize(
    ("value_target", "policy_loss"), [("outcome", "sampled"), ("search", "candidate"), ("mix", "sampled")]
)
def test_relabel_loss_matches_its_parts(policy, value_target: str, policy_loss: str) -> None:
    p0 = "Start 2. Add 3, times 4.\n"
    p1 = p0 + "2 + 3 = 5\n"
    d0 = _decision(policy, p0, ["2 + 3 = 5", "2 + 3 = 6", "Answer: 7"], [0.75, 0.0, 0.25], root_value=0.4)
    d1 = _decision(policy, p1, ["5 * 4 = 20"], [1.0], root_value=0.9)  # one candidate: no policy signal
    episodes = [Episode(0, (d0, d1), ("2 + 3 = 5", "5 * 4 = 20"), outcome=1.0)]
    cfg = RelabelArmConfig(value_target=value_target, value_loss_coef=0.5, policy_loss=policy_loss)
    loss, metrics = relabel_loss(episodes, policy, cfg)

    with torch.no_grad():
        lp = policy.sequence_logprobs([p0] * 3, ["2 + 3 = 5\n", "2 + 3 = 6\n", "Answer: 7\n"])
        if policy_loss == "candidate":  # renormalised over d0's candidates; d1 (one candidate) contributes 0
            log_p = torch.log_softmax(lp, 0)
            ce = -(0.75 * log_p[0] + 0.25 * log_p[2]) / 2
        else:  # Sampled MuZero: full sequence log-probs, every decision (d1 is maximum likelihood of its step)
            lp1 = policy.sequence_logprobs([p1], ["5 * 4 = 20\n"])[0]
            ce = (-(0.75 * lp[0] + 0.25 * lp[2]) - lp1) / 2
        v = policy.text_values([p0, p1])
        z = {"outcome": [1.0, 1.0], "search": [0.4, 0.9], "mix": [0.7, 0.95]}[value_target]
        mse = ((v - torch.tensor(z)) ** 2).mean()
    assert metrics["policy_loss"] == pytest.approx(float(ce), rel=1e-5)
    assert metrics["value_loss"] == pytest.approx(float(mse), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(ce + 0.5 * mse), rel=1e-5)
    assert metrics["decisions"] == 2 and metrics["informative_decisions"] == 1

    policy.zero_grad()
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    policy.zero_grad()


@pytest.mark.parametrize("policy_loss", ["advantage", "sampled", "candidate"])
def test_one_gradient_step_moves_mass_to_the_target(policy, policy_loss: str) -> None:
    prefix = "Start 2. Add 3.\n"
    d = _decision(policy, prefix, ["2 + 3 = 5", "2 + 3 = 6"], [1.0, 0.0], root_value=0.5)
    episodes = [Episode(0, (d,), ("2 + 3 = 5",), outcome=1.0)]
    params = [p for p in policy.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        before = policy.sequence_logprobs([prefix] * 2, ["2 + 3 = 5\n", "2 + 3 = 6\n"])
    loss, _ = relabel_loss(episodes, policy, RelabelArmConfig(value_loss_coef=0.0, policy_loss=policy_loss))
    optimizer = torch.optim.SGD(params, lr=0.05)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = policy.sequence_logprobs([prefix] * 2, ["2 + 3 = 5\n", "2 + 3 = 6\n"])
        for p, s in zip(params, saved):
            p.copy_(s)
    assert float(after[0]) > float(before[0])  # the target step gained probability
    assert float(after[0] - after[1]) > float(before[0] - before[1])  # and gained on the rejected one


def test_a_decision_with_every_candidate_rejected_trains_only_the_value_head(policy) -> None:
    prefix = "Start 2. Add 3.\n"
    bad = _decision(
        policy, prefix, ["2 + 3 = 6", "Answer: 7"], [0.0, 0.0], root_value=0.2, rejected=[True, True]
    )
    good = _decision(policy, prefix, ["2 + 3 = 5"], [1.0], root_value=0.6)
    episodes = [
        Episode(0, (bad,), ("Answer: 7",), outcome=0.0),
        Episode(1, (good,), ("2 + 3 = 5",), outcome=1.0),
    ]
    # the sampled form, so that the single-candidate decision contributes its (non-zero) likelihood term
    _, metrics = relabel_loss(episodes, policy, RelabelArmConfig(policy_loss="sampled"))
    with torch.no_grad():
        nll = -policy.sequence_logprobs([prefix], ["2 + 3 = 5\n"])[0]
    assert metrics["policy_decisions"] == 1 and metrics["all_rejected_decisions"] == 1
    assert metrics["policy_loss"] == pytest.approx(float(nll) / 2, rel=1e-5)  # mean over both decisions


def test_advantage_loss_subtracts_each_decisions_sampling_frequency(policy) -> None:
    p0 = "Start 2. Add 3, times 4.\n"
    d0 = _decision(policy, p0, ["2 + 3 = 5", "2 + 3 = 6"], [0.75, 0.25], root_value=0.4)
    d0 = dataclasses.replace(d0, frequency=np.array([0.25, 0.75]))  # the search moved mass to the rare step
    d1 = _decision(policy, p0 + "2 + 3 = 5\n", ["5 * 4 = 20"], [1.0], root_value=0.9)  # frequency = prior = 1
    episodes = [Episode(0, (d0, d1), ("2 + 3 = 5", "5 * 4 = 20"), outcome=1.0)]
    assert RelabelArmConfig().policy_loss == "advantage"  # the default
    loss, metrics = relabel_loss(episodes, policy, RelabelArmConfig(value_loss_coef=0.0))
    with torch.no_grad():
        lp = policy.sequence_logprobs([p0] * 2, ["2 + 3 = 5\n", "2 + 3 = 6\n"])
    # -(0.75 - 0.25) lp[0] - (0.25 - 0.75) lp[1], averaged over both decisions; d1 (target = frequency) adds 0
    assert metrics["policy_loss"] == pytest.approx(float(-(0.5 * lp[0] - 0.5 * lp[1]) / 2), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(metrics["policy_loss"], rel=1e-6)


def test_a_detached_value_head_sends_no_gradient_into_the_lm(policy) -> None:
    prefix = "Start 2. Add 3.\n"
    for detach in (False, True):
        policy.zero_grad()
        scored = policy.token_logprobs([prefix], ["2 + 3 = 5\n"], with_values=True, detach_values=detach)
        scored.values.sum().backward()
        lm = [p.grad for p in policy.model.parameters() if p.requires_grad]
        head = [p.grad for p in policy.value_head.parameters()]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in head)
        lm_moved = any(g is not None and float(g.abs().sum()) > 0 for g in lm)
        assert lm_moved is (not detach)
    # the relabeller's default: its value loss alone (policy loss weight 0 via a single-candidate decision under
    # the advantage form) trains the head and leaves the LM untouched
    d = _decision(policy, prefix, ["2 + 3 = 5"], [1.0], root_value=0.5)
    policy.zero_grad()
    loss, _ = relabel_loss([Episode(0, (d,), ("2 + 3 = 5",), outcome=1.0)], policy, RelabelArmConfig())
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in policy.model.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in policy.value_head.parameters())
    policy.zero_grad()
