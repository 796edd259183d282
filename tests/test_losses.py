"""The shared loss functions against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from llm_rl.arms.losses import candidate_cross_entropy, pg_token_loss, value_loss


def test_candidate_cross_entropy_renormalises_over_the_candidates() -> None:
    # Sequence probs 0.2 and 0.3 -> renormalised over the set {a, b}: 0.4 and 0.6.
    logprobs = torch.tensor([math.log(0.2), math.log(0.3)], requires_grad=True)
    loss = candidate_cross_entropy(logprobs, torch.tensor([0.5, 0.5]))
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.4) + 0.5 * math.log(0.6)), abs=1e-6)  # 0.713558
    loss.backward()
    # d loss / d logprob = p_C - target = [0.4 - 0.5, 0.6 - 0.5]
    assert logprobs.grad.tolist() == pytest.approx([-0.1, 0.1], abs=1e-6)


def test_candidate_cross_entropy_zero_target_is_pushed_down() -> None:
    logprobs = torch.tensor([math.log(0.1), math.log(0.1), math.log(0.2)], requires_grad=True)
    loss = candidate_cross_entropy(logprobs, torch.tensor([0.75, 0.25, 0.0]))
    # p_C = [0.25, 0.25, 0.5]
    assert loss.item() == pytest.approx(-(0.75 * math.log(0.25) + 0.25 * math.log(0.25)), abs=1e-6)
    loss.backward()
    assert logprobs.grad.tolist() == pytest.approx([0.25 - 0.75, 0.25 - 0.25, 0.5], abs=1e-6)


def test_candidate_cross_entropy_single_candidate_has_no_gradient() -> None:
    logprobs = torch.tensor([-7.0], requires_grad=True)
    loss = candidate_cross_entropy(logprobs, torch.tensor([1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert logprobs.grad.tolist() == pytest.approx([0.0])


def test_candidate_cross_entropy_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="distribution"):
        candidate_cross_entropy(torch.zeros(2), torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="shape"):
        candidate_cross_entropy(torch.zeros(2), torch.tensor([1.0]))


def test_value_loss_is_mean_squared_error() -> None:
    predicted = torch.tensor([0.2, 0.9], requires_grad=True)
    loss = value_loss(predicted, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((0.8**2 + 0.9**2) / 2, abs=1e-6)  # 0.725
    loss.backward()
    assert predicted.grad.tolist() == pytest.approx([2 * (0.2 - 1.0) / 2, 2 * 0.9 / 2], abs=1e-6)


def test_pg_token_loss_on_policy_is_minus_mean_advantage() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages = torch.tensor([2.0, -1.0])  # per sequence
    loss = pg_token_loss(logprobs, logprobs.detach(), advantages, mask)
    # token mean over 5 tokens: (-(2 * 3) + (1 * 2)) / 5
    assert loss.item() == pytest.approx(-4.0 / 5, abs=1e-6)
    loss.backward()
    assert logprobs.grad.flatten().tolist() == pytest.approx([-0.4, -0.4, -0.4, 0.2, 0.2, 0.0], abs=1e-6)
    seq = pg_token_loss(logprobs, logprobs.detach(), advantages, mask, reduction="sequence_mean")
    assert seq.item() == pytest.approx((-2.0 + 1.0) / 2, abs=1e-6)


def test_pg_token_loss_clips_the_ratio() -> None:
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[math.log(1.5), math.log(0.5)]])
    mask = torch.ones(1, 2)
    # A = +1: min(1.5, 1.2) = 1.2 and min(0.5, 0.8) = 0.5 -> loss -(1.2 + 0.5) / 2
    assert pg_token_loss(new, old, torch.tensor([1.0]), mask).item() == pytest.approx(-0.85, abs=1e-6)
    # A = -1: min(-1.5, -1.2) = -1.5 and min(-0.5, -0.8) = -0.8 -> loss (1.5 + 0.8) / 2
    assert pg_token_loss(new, old, torch.tensor([-1.0]), mask).item() == pytest.approx(1.15, abs=1e-6)
    # No clipping: -(1.5 + 0.5) / 2
    assert pg_token_loss(new, old, torch.tensor([1.0]), mask, clip_epsilon=None).item() == pytest.approx(-1.0)


def test_pg_token_loss_per_token_advantages_and_bad_mask() -> None:
    lp = torch.zeros(1, 3)
    loss = pg_token_loss(lp, lp, torch.tensor([[1.0, 0.0, -2.0]]), torch.ones(1, 3))
    assert loss.item() == pytest.approx(1.0 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="no tokens"):
        pg_token_loss(lp, lp, torch.zeros(1), torch.zeros(1, 3))


def test_sampled_muzero_cross_entropy_uses_the_full_sequence_logprobs() -> None:
    logprobs = torch.tensor([math.log(0.2), math.log(0.3)], requires_grad=True)
    loss = candidate_cross_entropy(logprobs, torch.tensor([0.5, 0.5]), normalise=False)
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.2) + 0.5 * math.log(0.3)), abs=1e-6)  # 1.406922
    loss.backward()
    assert logprobs.grad.tolist() == pytest.approx([-0.5, -0.5])
    # a single candidate is plain maximum likelihood of the sample
    single = torch.tensor([-7.0], requires_grad=True)
    assert candidate_cross_entropy(single, torch.tensor([1.0]), normalise=False).item() == pytest.approx(7.0)


def test_with_an_uninformative_search_only_the_sampled_form_has_zero_expected_gradient() -> None:
    # A policy over two steps, p = softmax(theta) = (0.9, 0.1); K = 2 samples; the target is the empirical
    # frequency over the distinct samples (a search that adds nothing). Enumerate {A,A}, {A,B}, {B,B}.
    outcomes = [((0,), [1.0], 0.81), ((0, 1), [0.5, 0.5], 0.18), ((1,), [1.0], 0.01)]
    grads = {}
    for normalise in (True, False):
        theta = torch.tensor([math.log(0.9), math.log(0.1)], requires_grad=True)
        log_p = torch.log_softmax(theta, 0)
        expected_loss = sum(
            prob * candidate_cross_entropy(log_p[list(idx)], torch.tensor(target), normalise=normalise)
            for idx, target, prob in outcomes
        )
        expected_loss.backward()
        grads[normalise] = theta.grad.tolist()
    assert grads[False] == pytest.approx(
        [0.0, 0.0], abs=1e-7
    )  # Sampled MuZero: no drift without a search signal
    # the normalised form drifts towards the rare step: 0.18 * (p_C - target) = 0.18 * (0.4, -0.4)
    assert grads[True] == pytest.approx([0.072, -0.072], abs=1e-6)


def test_advantage_form_subtracts_the_sampling_frequency() -> None:
    # target (0.75, 0.25) over candidates sampled with frequency (0.5, 0.5): weights (0.25, -0.25)
    logprobs = torch.tensor([math.log(0.2), math.log(0.3)], requires_grad=True)
    loss = candidate_cross_entropy(
        logprobs, torch.tensor([0.75, 0.25]), normalise=False, baseline=torch.tensor([0.5, 0.5])
    )
    assert loss.item() == pytest.approx(-(0.25 * math.log(0.2) - 0.25 * math.log(0.3)), abs=1e-6)
    loss.backward()
    assert logprobs.grad.tolist() == pytest.approx([-0.25, 0.25])
    # renormalising over the candidates changes nothing (the weights sum to 0)
    again = candidate_cross_entropy(
        logprobs, torch.tensor([0.75, 0.25]), normalise=True, baseline=torch.tensor([0.5, 0.5])
    )
    assert again.item() == pytest.approx(loss.item(), abs=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        candidate_cross_entropy(logprobs, torch.tensor([0.5, 0.5]), baseline=torch.tensor([0.5, 0.6]))


# p = softmax(theta) = (0.9, 0.1), K = 2 samples: {A,A} (prob 0.81), {A,B} (0.18), {B,B} (0.01). Per sample,
# d(-log p_A)/d theta = (-0.1, 0.1) and d(-log p_B)/d theta = (0.9, -0.9).
SAMPLES = [((0,), [1.0], 0.81), ((0, 1), [0.5, 0.5], 0.18), ((1,), [1.0], 0.01)]


def _grad(idx, target, baseline) -> list[float]:
    theta = torch.tensor([math.log(0.9), math.log(0.1)], requires_grad=True)
    log_p = torch.log_softmax(theta, 0)[list(idx)]
    candidate_cross_entropy(log_p, torch.tensor(target), normalise=False, baseline=baseline).backward()
    return theta.grad.tolist()


def test_advantage_form_has_zero_gradient_for_every_uninformative_sample() -> None:
    # target = beta_hat (a search that adds nothing): the sampled form is zero only in expectation, each sample
    # set pushing its own steps up; the advantage form is zero for every sample set.
    sampled = {(0,): [-0.1, 0.1], (0, 1): [0.4, -0.4], (1,): [0.9, -0.9]}  # 0.5 (-0.1, 0.1) + 0.5 (0.9, -0.9)
    for idx, target, _ in SAMPLES:
        assert _grad(idx, target, torch.tensor(target)) == pytest.approx([0.0, 0.0], abs=1e-7)
        assert _grad(idx, target, None) == pytest.approx(sampled[idx], abs=1e-6)
    mean = [sum(prob * sampled[idx][j] for idx, _, prob in SAMPLES) for j in (0, 1)]
    assert mean == pytest.approx([0.0, 0.0], abs=1e-7)


def test_advantage_form_keeps_the_sampled_forms_expected_gradient() -> None:
    # The search moves {A,B} to (0.75, 0.25); single-candidate samples stay at 1. Sampled: {A,B} gives
    # 0.75 (-0.1, 0.1) + 0.25 (0.9, -0.9) = (0.15, -0.15), expectation 0.81 (-0.1, 0.1) + 0.18 (0.15, -0.15) +
    # 0.01 (0.9, -0.9) = (-0.045, 0.045). Advantage: only {A,B}, 0.25 (-0.1, 0.1) - 0.25 (0.9, -0.9) =
    # (-0.25, 0.25), expectation 0.18 (-0.25, 0.25) = (-0.045, 0.045).
    targets = {(0,): [1.0], (0, 1): [0.75, 0.25], (1,): [1.0]}
    expected = {}
    for form in ("sampled", "advantage"):
        grads = [
            (prob, _grad(idx, targets[idx], torch.tensor(freq) if form == "advantage" else None))
            for idx, freq, prob in SAMPLES
        ]
        expected[form] = [sum(prob * g[j] for prob, g in grads) for j in (0, 1)]
    assert grads[1][1] == pytest.approx([-0.25, 0.25], abs=1e-6)  # the advantage form's {A,B} sample
    assert expected["sampled"] == pytest.approx([-0.045, 0.045], abs=1e-6)
    assert expected["advantage"] == pytest.approx([-0.045, 0.045], abs=1e-6)
