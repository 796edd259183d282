"""tree_search on small games: tic-tac-toe tactics (PUCT, virtual loss, Gumbel), policy improvement on a bandit,
batching, determinism, tree reuse, root noise, and a fixed snapshot of a small search."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from tree_search import Expansion, GumbelConfig, Node, PuctConfig, Transition, advance, search

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def board(ascii_board: str) -> tuple[str, str]:
    """A tic-tac-toe state from three rows like ``"X . X"``; the player to move follows from the counts."""
    cells = "".join(ascii_board.split())
    assert len(cells) == 9 and set(cells) <= set("XO.")
    to_move = "X" if cells.count("X") == cells.count("O") else "O"
    return cells, to_move


class TicTacToe:
    """Two-player: uniform prior over empty cells, value 0; the winning move earns its mover reward 1."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.steps = 0

    def expand(self, states):
        self.batches.append(len(states))
        out = []
        for cells, _ in states:
            empty = [i for i, c in enumerate(cells) if c == "."]
            out.append(Expansion(empty, np.full(len(empty), 1.0 / len(empty)), 0.0))
        return out

    def step(self, state, action):
        self.steps += 1
        cells, player = state
        assert cells[action] == "."
        cells = cells[:action] + player + cells[action + 1 :]
        won = any(all(cells[i] == player for i in line) for line in LINES)
        return Transition(
            (cells, "O" if player == "X" else "X"), 1.0 if won else 0.0, won or "." not in cells
        )


WIN = board("""
    X X .
    O O .
    . . .
""")  # X to move: 2 wins (and must: O threatens 5)
BLOCK = board("""
    X . X
    . O .
    . . .
""")  # O to move: must block at 1


def test_puct_finds_the_win_and_the_block():
    env = TicTacToe()
    win, block = search([WIN, BLOCK], env, PuctConfig(300, temperature=0.0), two_player=True, rng=0)
    assert win.selected_action == 2 and win.improved_policy[win.actions.index(2)] > 0.5
    assert win.q_values[win.actions.index(2)] == pytest.approx(1.0)  # an immediate win, exactly
    assert win.root.terminal[win.actions.index(2)]
    assert block.selected_action == 1 and block.improved_policy[block.actions.index(1)] > 0.5
    # every other O move loses at once: their Q tends to -1
    others = [i for i, a in enumerate(block.actions) if a != 1 and block.visit_counts[i] > 5]
    assert others and all(block.q_values[i] < -0.3 for i in others)
    # one batched expand per round, never more states than roots
    assert max(env.batches) <= 2 and len(env.batches) <= 300 + 1


@pytest.mark.parametrize("leaves_per_round", [2, 4, 8])
def test_virtual_loss_still_finds_the_win(leaves_per_round):
    env = TicTacToe()
    config = PuctConfig(num_simulations=200, temperature=0.0, leaves_per_round=leaves_per_round)
    (result,) = search([WIN], env, config, two_player=True, rng=0)
    assert result.selected_action == 2
    assert result.visit_counts.sum() == 200
    assert max(env.batches) <= leaves_per_round
    assert len(env.batches) < 200  # several leaves per expand call
    # virtual losses are fully reverted: node statistics are consistent
    root = result.root
    assert root.visit_count == 1 + root.visit_counts.sum()


def test_gumbel_finds_the_win():
    (result,) = search([WIN], TicTacToe(), GumbelConfig(16), two_player=True, rng=0)
    assert result.selected_action == 2
    assert int(np.argmax(result.improved_policy)) == result.actions.index(2)
    assert result.visit_counts.sum() == 16


class Bandit:
    """Single-agent: one decision between arms with fixed rewards, then the episode ends."""

    def __init__(self, prior, rewards) -> None:
        self.prior = np.asarray(prior, dtype=np.float64)
        self.rewards = np.asarray(rewards, dtype=np.float64)

    def expand(self, states):
        return [
            Expansion(list(range(len(self.prior))), self.prior, float(self.prior @ self.rewards))
            for _ in states
        ]

    def step(self, state, action):
        return Transition(("done", action), float(self.rewards[action]), True)


BANDITS = [
    ([0.4, 0.3, 0.15, 0.1, 0.05], [0.1, 0.5, 0.9, 0.2, 0.3]),
    ([0.7, 0.1, 0.1, 0.1], [0.0, 1.0, 0.5, 0.2]),
    ([0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]),
]


@pytest.mark.parametrize("prior, rewards", BANDITS)
def test_puct_improved_policy_beats_the_prior(prior, rewards):
    env = Bandit(prior, rewards)
    (result,) = search(["s"], env, PuctConfig(32), rng=0)
    assert result.improved_policy @ env.rewards >= env.prior @ env.rewards
    assert result.root_value == pytest.approx(
        (env.prior @ env.rewards + result.q_values @ result.visit_counts) / 33
    )


@pytest.mark.parametrize("num_simulations", [2, 3, 4])
@pytest.mark.parametrize("prior, rewards", BANDITS)
def test_gumbel_improved_policy_beats_the_prior(prior, rewards, num_simulations):
    env = Bandit(prior, rewards)
    results = search(["s"] * 20, env, GumbelConfig(num_simulations), rng=3)
    for result in results:
        assert result.improved_policy @ env.rewards >= env.prior @ env.rewards - 1e-12
        assert result.visit_counts.sum() == num_simulations
        assert (result.visit_counts > 0).sum() == min(num_simulations, len(prior))  # sampled w/o replacement
    # the selected action is no worse than the prior on average over the Gumbel draws
    chosen = np.mean([env.rewards[r.selected_index] for r in results])
    assert chosen >= env.prior @ env.rewards


def test_same_seed_same_search_and_noise_differs_by_seed():
    config = PuctConfig(num_simulations=64, dirichlet_fraction=0.25, dirichlet_alpha=0.3)
    a = search([BLOCK], TicTacToe(), config, two_player=True, rng=11)[0]
    b = search([BLOCK], TicTacToe(), config, two_player=True, rng=11)[0]
    c = search([BLOCK], TicTacToe(), config, two_player=True, rng=12)[0]
    np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
    np.testing.assert_array_equal(a.prior, b.prior)
    assert a.selected_index == b.selected_index
    assert not np.array_equal(a.prior, c.prior)
    g1 = search([BLOCK], TicTacToe(), GumbelConfig(8), two_player=True, rng=5)[0]
    g2 = search([BLOCK], TicTacToe(), GumbelConfig(8), two_player=True, rng=5)[0]
    np.testing.assert_array_equal(g1.visit_counts, g2.visit_counts)
    np.testing.assert_array_equal(g1.improved_policy, g2.improved_policy)


@pytest.mark.parametrize("algorithm", ["puct", "gumbel"])
def test_batch_equals_each_root_alone(algorithm):
    roots = [
        WIN,
        BLOCK,
        board(". . . / . . . / . . .".replace("/", "")),
        board("X O X / . O . / . . .".replace("/", "")),
    ]

    def run(rs, rng):
        if algorithm == "puct":
            config = PuctConfig(num_simulations=40, dirichlet_fraction=0.25)
        else:
            config = GumbelConfig(num_simulations=12)
        return search(rs, TicTacToe(), config, two_player=True, rng=rng)

    batched = run(roots, 7)
    for i, root in enumerate(roots):
        (alone,) = run([root], [np.random.default_rng([7, i])])  # the per-root generator an int seed derives
        np.testing.assert_array_equal(batched[i].visit_counts, alone.visit_counts)
        np.testing.assert_allclose(batched[i].q_values, alone.q_values)
        np.testing.assert_allclose(batched[i].prior, alone.prior)
        assert batched[i].selected_index == alone.selected_index
        assert batched[i].root.to_dict() == alone.root.to_dict()


def test_tree_reuse_keeps_the_child_statistics():
    env = TicTacToe()
    (first,) = search([BLOCK], env, PuctConfig(100, temperature=0.0), two_player=True, rng=0)
    index = first.selected_index
    child = advance(first, index)
    assert child is first.root.child(index)
    before = child.to_dict()
    visits_before = child.visit_counts.sum()
    assert child.visit_count == first.visit_counts[index]  # its expansion + the simulations through it
    expansions_before = sum(env.batches)
    (second,) = search([child], env, PuctConfig(30, temperature=0.0), two_player=True, rng=0)
    assert second.root is child
    assert second.visit_counts.sum() == visits_before + 30
    assert sum(env.batches) - expansions_before <= 30  # the kept root is not expanded again
    # statistics only grew: every previously visited edge keeps at least its old count
    old = np.array(before["visit_counts"])
    assert np.all(second.visit_counts >= old)
    root = Node(BLOCK)
    root.expand([1, 3], np.array([0.5, 0.5]), 0.0)
    with pytest.raises(ValueError, match="never visited"):
        advance(root, 0)


def test_advance_creates_an_unvisited_child_with_env():
    env = TicTacToe()
    (result,) = search([WIN], env, PuctConfig(3), two_player=True, rng=0)
    unvisited = int(np.flatnonzero(result.visit_counts == 0)[0])
    child = advance(result, unvisited, env=env)
    assert child.state[0][result.actions[unvisited]] == "X" and not child.expanded


def test_dirichlet_noise_changes_only_the_root_prior():
    env = TicTacToe()
    empty = board("... ... ...")
    (noisy,) = search([empty], env, PuctConfig(50, dirichlet_fraction=0.25), two_player=True, rng=1)
    uniform = np.full(9, 1 / 9)
    assert not np.allclose(noisy.prior, uniform)
    assert noisy.prior.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(noisy.root.prior, uniform)  # the node keeps the evaluator's prior
    for child in noisy.root.children:
        if child is not None and child.expanded:
            np.testing.assert_allclose(child.prior, np.full(8, 1 / 8))
    (clean,) = search([empty], env, PuctConfig(50), two_player=True, rng=1)
    np.testing.assert_allclose(clean.prior, uniform)


class TwoLevel:
    """Single-agent, depth 2, for the snapshot: state = path of actions; leaf values from a fixed table."""

    VALUES: ClassVar[dict] = {
        (): 0.0,
        ("a",): 0.2,
        ("b",): 0.6,
        ("a", "x"): 1.0,
        ("a", "y"): 0.0,
        ("b", "x"): 0.3,
        ("b", "y"): 0.5,
    }

    def expand(self, states):
        return [
            Expansion(["x", "y"] if s else ["a", "b"], np.array([0.6, 0.4]), self.VALUES[s]) for s in states
        ]

    def step(self, state, action):
        child = (*state, action)
        return Transition(child, 0.1, len(child) == 2 and action == "x")


def test_snapshot_of_a_small_search():
    """Checked by hand: every return is 0.1 + 0.5 * (child value), e.g. root->b first returns 0.1 + 0.5 * 0.6."""
    (result,) = search([()], TwoLevel(), PuctConfig(6), discount=0.5, rng=0)
    leaf = {"visit_count": 1, "value": 0.0, "mean_value": 0.0, "terminal": True}

    def unexplored(value):
        return {
            "visit_count": 1, "value": value, "mean_value": value, "actions": ["'x'", "'y'"], "prior": [0.6, 0.4],
            "visit_counts": [0, 0], "q": [None, None], "children": {},
        }  # fmt: skip

    expected = {
        "visit_count": 7, "value": 0.0, "mean_value": 0.1893,  # (0 + 3 * 0.1667 + 3 * 0.275) / 7
        "actions": ["'a'", "'b'"], "prior": [0.6, 0.4], "visit_counts": [3, 3], "q": [0.1667, 0.275],
        "children": {
            "'a'": {
                "visit_count": 3, "value": 0.2, "mean_value": 0.1333,  # (0.2 + 0.1 + 0.1) / 3
                "actions": ["'x'", "'y'"], "prior": [0.6, 0.4], "visit_counts": [1, 1], "q": [0.1, 0.1],
                "children": {"'x'": leaf, "'y'": unexplored(0.0)},
            },
            "'b'": {
                "visit_count": 3, "value": 0.6, "mean_value": 0.35,  # (0.6 + 0.1 + 0.35) / 3
                "actions": ["'x'", "'y'"], "prior": [0.6, 0.4], "visit_counts": [1, 1], "q": [0.1, 0.35],
                "children": {"'x'": leaf, "'y'": unexplored(0.5)},
            },
        },
    }  # fmt: skip
    assert result.root.to_dict() == expected
    assert "N=7" in repr(result.root)


def _check_invariants(node: Node) -> int:
    """Every expanded node: 1 + sum of edge visits == its visits, the visited list is the edges with visits, and
    the PUCT caches (where built) match the statistics."""
    checked = 0
    if node.expanded and node.num_actions and node._allocated:
        visits, sums = node.visit_counts, node.value_sums
        assert node.visit_count == 1 + visits.sum()
        assert sorted(child._index for child in node._visited) == np.flatnonzero(visits).tolist()
        assert node._p.tolist() == node._sel_prior.tolist()
        if node._q is not None:
            expected_q = np.where(visits > 0, sums / np.maximum(visits, 1), -np.inf)
            np.testing.assert_allclose(node._q, expected_q)
            np.testing.assert_allclose(node._pu, node._sel_prior / (1.0 + visits))
        checked += 1
        for child in node.children:
            if child is not None:
                checked += _check_invariants(child)
    return checked


@pytest.mark.parametrize("leaves_per_round", [1, 3])
def test_statistics_and_caches_are_consistent_after_search(leaves_per_round):
    empty = board("... ... ...")
    config = PuctConfig(300, dirichlet_fraction=0.25, leaves_per_round=leaves_per_round)
    (result,) = search([empty], TicTacToe(), config, two_player=True, rng=0)
    assert _check_invariants(result.root) > 10
