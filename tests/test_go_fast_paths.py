"""The Go evaluator's fast paths equal the plain ones: the folded-batch-norm ``predict`` and the module's eval
forward, batched input planes and per-position ``encode``, batched priors and ``masked_policy``, the unchecked
``play`` and the checked one (with its board read through OpenSpiel's observation buffer)."""

from __future__ import annotations

import copy

import numpy as np
import pyspiel
import pytest
import torch

from go_baseline.board import from_ascii, new_position
from go_baseline.features import encode, encode_batch
from go_baseline.network import NetConfig, PolicyValueNet, masked_policy
from go_baseline.selfplay import GoSearchEnv, legal_priors


def _random_positions(count: int, seed: int, size: int = 5) -> list:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        pos = new_position(size, 7.5, history=6)
        for _ in range(int(rng.integers(0, 30))):
            pos = pos.play(int(rng.choice(pos.legal_actions())))
            if pos.is_terminal:
                break
        if not pos.is_terminal:
            out.append(pos)
    return out


def _eval_forward(net: PolicyValueNet, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frozen = copy.deepcopy(net).eval()
    with torch.no_grad():
        logits, value = frozen(torch.from_numpy(planes))
    return logits.double().numpy(), value.double().numpy()


def test_predict_equals_the_eval_forward_and_follows_the_weights():
    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(5, history=4, blocks=2, filters=16, value_hidden=32))
    planes = encode_batch(_random_positions(12, seed=1), 4)
    net.train()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for _ in range(3):
            net(torch.from_numpy(planes) * 2.0 + 0.5)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        logits, value = net.predict(planes)
        expected_logits, expected_value = _eval_forward(net, planes)
        np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5)
        assert logits.dtype == value.dtype == np.float64 and net.training  # predict leaves the mode alone
        optimizer.zero_grad()
        net(torch.from_numpy(planes))[0].square().mean().backward()
        optimizer.step()  # and a train-mode forward moved the batch-norm statistics: both must show
    state = {k: v * 1.1 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    np.testing.assert_allclose(net.predict(planes)[0], _eval_forward(net, planes)[0], rtol=1e-5, atol=1e-5)


def test_encode_batch_equals_stacked_encode():
    positions = _random_positions(20, seed=2)
    positions.append(from_ascii("XO...\n.X...\n..O..\n.....\n....X", to_play=-1))  # no history at all
    for history in (1, 3, 6, 8):
        batch = encode_batch(positions, history)
        assert batch.dtype == np.float32
        np.testing.assert_array_equal(batch, np.stack([encode(p, history) for p in positions]))


def test_legal_priors_equal_masked_policy_row_by_row():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(9, 26)) * 4.0
    legal = [sorted(rng.choice(26, size=int(rng.integers(1, 27)), replace=False).tolist()) for _ in range(9)]
    for row, actions, prior in zip(logits, legal, legal_priors(logits, legal)):
        np.testing.assert_allclose(prior, masked_policy(row, np.asarray(actions)), rtol=1e-12, atol=1e-15)
    legal[4] = []  # a finished game has no legal move
    priors = legal_priors(logits, legal)
    assert priors[4].shape == (0,) and priors[5].sum() == pytest.approx(1.0)


def test_search_env_expands_to_the_legal_moves():
    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(5, history=4, blocks=1, filters=8, value_hidden=8))
    positions = _random_positions(6, seed=4)
    env = GoSearchEnv(net, 4)
    logits, values = net.predict(encode_batch(positions, 4))
    for pos, expansion, row, value in zip(positions, env.expand(positions), logits, values):
        assert list(expansion.actions) == pos.legal_actions()
        np.testing.assert_allclose(expansion.prior, masked_policy(row, np.asarray(pos.legal_actions())))
        assert expansion.value == pytest.approx(value)


def test_unchecked_play_equals_play_and_reads_the_board():
    for pos in _random_positions(10, seed=5):
        for action in pos.legal_actions()[:5]:
            fast, checked = pos.play(action, checked=False), pos.play(action)
            assert fast.state.history() == checked.state.history()
            for a, b in zip(fast.boards, checked.boards, strict=True):
                np.testing.assert_array_equal(a, b)
            obs = np.asarray(fast.state.observation_tensor(0)).reshape(4, 5, 5)
            np.testing.assert_array_equal(fast.board, (obs[0] - obs[1]).astype(np.int8))
    pos = from_ascii(".....\n.....\n..X..\n.....\n.....", to_play=-1)
    with pytest.raises(ValueError, match="illegal"):
        pos.play(12)
    with pytest.raises(pyspiel.SpielError):  # unchecked: OpenSpiel still refuses an occupied point
        pos.play(12, checked=False)
