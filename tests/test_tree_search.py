"""tree_search's arithmetic checked against hand-computed numbers: PUCT scores, backups (single-agent and
two-player, discount), min-max normalisation (the search's PUCT selection replayed with puct_scores), Gumbel's
completed-Q target and schedule, move selection, the Sampled-MuZero prior, the configs, input errors, import
hygiene."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest

from tree_search import (
    Expansion,
    GumbelConfig,
    Node,
    PuctConfig,
    SearchResult,
    Transition,
    puct_scores,
    sampled_prior,
    search,
    select_action,
)
from tree_search._gumbel import GumbelPolicy, considered_visit_sequence
from tree_search.select import visit_policy

# --------------------------------------------------------------------------------------------------- PUCT math


def test_puct_scores_by_hand():
    prior = np.array([0.5, 0.3, 0.2, 0.0])
    visits = np.array([2, 1, 0, 0])
    value_sums = np.array([1.0, -0.5, 0.0, 0.0])
    # c(4) = ln((1 + 4 + 19652) / 19652) + 1.25 = 1.2502543947;  c * sqrt(4) = 2.5005087893
    # a0: Q = 1.0/2 = 0.5,   U = 2.5005087893 * 0.5 / 3 = 0.4167514649
    # a1: Q = -0.5/1,        U = 2.5005087893 * 0.3 / 2 = 0.3750763184
    # a2: Q = fpu = 0.1,     U = 2.5005087893 * 0.2 / 1 = 0.5001017579
    # a3: prior 0 -> pruned
    scores = puct_scores(prior, visits, value_sums, parent_visit_count=4, fpu_value=0.1)
    np.testing.assert_allclose(scores[:3], [0.9167514649, -0.1249236816, 0.6001017579], atol=1e-9)
    assert scores[3] == -np.inf
    # normalised into [0, 1] with bounds (-1, 1): Q -> (Q + 1) / 2 = 0.75, 0.25, fpu 0.55
    scores = puct_scores(
        prior, visits, value_sums, parent_visit_count=4, fpu_value=0.1, q_min=-1.0, q_max=1.0
    )
    np.testing.assert_allclose(scores[:3], [1.1667514649, 0.6250763184, 1.0501017579], atol=1e-9)
    # an FPU outside the range is clipped into [0, 1]: (2 + 1) / 2 -> 1
    scores = puct_scores(
        prior, visits, value_sums, parent_visit_count=4, fpu_value=2.0, q_min=-1.0, q_max=1.0
    )
    assert scores[2] == pytest.approx(1.0 + 0.5001017579)
    # c_base matters once N is comparable: N = 19652 -> c = ln(2 + 1/19652) + 1.25
    scores = puct_scores(
        np.array([1.0]), np.array([0]), np.array([0.0]), parent_visit_count=19652, fpu_value=0.0
    )
    assert scores[0] == pytest.approx((np.log(19653 / 19652 + 1) + 1.25) * np.sqrt(19652))


class Bandit:
    """Single-agent: arms with fixed rewards, then the episode ends."""

    def __init__(self, prior, rewards, value=None) -> None:
        self.prior = np.asarray(prior, dtype=np.float64)
        self.rewards = np.asarray(rewards, dtype=np.float64)
        self.value = float(self.prior @ self.rewards) if value is None else value

    def expand(self, states):
        return [Expansion(list(range(len(self.prior))), self.prior, self.value) for _ in states]

    def step(self, state, action):
        return Transition(("done", action), float(self.rewards[action]), True)


def replay_puct(env: Bandit, n: int, *, fpu, fpu_reduction, bounds) -> np.ndarray:
    """The search on a bandit, written out with puct_scores: parent N counts the root's expansion, FPU is the
    parent's mean value minus the reduction, min-max starts from the root value and takes every edge mean."""
    visits = np.zeros(len(env.prior), dtype=np.int64)
    sums = np.zeros(len(env.prior))
    root_sum, seen = env.value, [env.value]
    for _ in range(n):
        parent_n = 1 + visits.sum()
        fpu_value = root_sum / parent_n - fpu_reduction if fpu is None else fpu
        q_min, q_max = bounds if bounds is not None else (min(seen), max(seen))
        scores = puct_scores(
            env.prior, visits, sums, parent_visit_count=parent_n, fpu_value=fpu_value, c_puct_init=0.8,
            q_min=q_min, q_max=q_max,
        )  # fmt: skip
        a = int(np.argmax(scores))
        visits[a] += 1
        sums[a] += env.rewards[a]
        root_sum += env.rewards[a]
        seen.append(sums[a] / visits[a])
    return visits


@pytest.mark.parametrize(
    "knobs",
    [
        dict(fpu=None, fpu_reduction=0.0, bounds=None),
        dict(fpu=None, fpu_reduction=0.3, bounds=None),
        dict(fpu=0.0, fpu_reduction=0.0, bounds=(-1.0, 2.0)),
        dict(fpu=1.5, fpu_reduction=0.0, bounds=None),
    ],
)
def test_search_selection_equals_puct_scores(knobs):
    env = Bandit([0.35, 0.25, 0.2, 0.15, 0.05, 0.0], [0.2, -0.4, 1.0, 0.7, 1.5, 9.0], value=0.1)
    for n in range(1, 25):
        config = PuctConfig(n, fpu=knobs["fpu"], fpu_reduction=knobs["fpu_reduction"], c_puct_init=0.8)
        (result,) = search(["s"], env, config, value_bounds=knobs["bounds"], rng=0)
        np.testing.assert_array_equal(result.visit_counts, replay_puct(env, n, **knobs), err_msg=f"n={n}")
        assert result.visit_counts[-1] == 0  # prior 0: pruned even though it pays 9


@pytest.mark.parametrize("bounds", [None, (-1.0, 2.0)])
def test_wide_search_selection_equals_puct_scores(bounds):
    """30 arms: once more than a dozen edges are visited the search scores them with NumPy, not a loop."""
    rng = np.random.default_rng(4)
    prior = rng.random(30) ** 2
    prior[7] = 0.0
    env = Bandit(prior / prior.sum(), rng.uniform(-1.0, 2.0, size=30), value=0.2)
    knobs = dict(fpu=None, fpu_reduction=0.1, bounds=bounds)
    for n in (5, 40, 150):
        config = PuctConfig(n, fpu_reduction=0.1, c_puct_init=0.8)
        (result,) = search(["s"], env, config, value_bounds=bounds, rng=0)
        np.testing.assert_array_equal(result.visit_counts, replay_puct(env, n, **knobs), err_msg=f"n={n}")
    assert (result.visit_counts > 0).sum() > 12  # the last search scored its root with NumPy


# ------------------------------------------------------------------------------------------------------ backups


class Chain:
    """One action per state; state = depth; reward 1 per move; value estimate 10 * depth; depth 3 terminal."""

    def expand(self, states):
        return [Expansion(["go"], np.array([1.0]), 10.0 * d) for d in states]

    def step(self, state, action):
        return Transition(state + 1, 1.0, state + 1 == 3)


def test_backup_single_agent_with_discount():
    (result,) = search([0], Chain(), PuctConfig(4), discount=0.9, rng=0)
    # returns at the root edge: 1 + .9*10 = 10;  1 + .9*(1 + .9*20) = 18.1;  twice 1 + .9*(1 + .9*1) = 2.71
    root = result.root
    assert root.visit_counts[0] == 4
    assert root.value_sums[0] == pytest.approx(10 + 18.1 + 2.71 + 2.71)
    assert result.q_values[0] == pytest.approx(33.52 / 4)
    assert result.root_value == pytest.approx((0 + 33.52) / 5)  # the root's expansion (value 0) is a visit
    child1 = root.child(0)
    assert child1.visit_count == 4 and child1.value_sum == pytest.approx(10 + 19 + 1.9 + 1.9)
    child2 = child1.child(0)
    assert child2.visit_count == 3 and child2.value_sums[0] == pytest.approx(2.0)
    terminal = child2.child(0)
    assert terminal.is_terminal and not terminal.expanded and terminal.visit_count == 2


def test_backup_two_player_flips_signs():
    (result,) = search([0], Chain(), PuctConfig(4), discount=0.9, two_player=True, rng=0)
    # root edge: 1 - .9*10 = -8;  1 - .9*(1 - .9*20) = 16.3;  twice 1 - .9*(1 - .9*1) = 0.91
    root = result.root
    assert root.value_sums[0] == pytest.approx(-8 + 16.3 + 0.91 + 0.91)
    assert result.q_values[0] == pytest.approx(10.12 / 4)
    child1 = root.child(0)  # its own player's view: 10 (value), -17, 0.1, 0.1
    assert child1.value_sum == pytest.approx(10 - 17 + 0.1 + 0.1)
    assert child1.value_sums[0] == pytest.approx(-17 + 0.1 + 0.1)


def test_min_max_normalisation_is_per_root_and_uses_the_tree_range():
    # same bandit, rewards shifted and scaled: min-max normalisation makes the search invariant
    env_a = Bandit([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 0.5, 0.2])
    env_b = Bandit([0.4, 0.3, 0.2, 0.1], [100.0, 300.0, 200.0, 140.0])
    (a,) = search(["s"], env_a, PuctConfig(30), rng=0)
    (b,) = search(["s"], env_b, PuctConfig(30), rng=0)
    np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
    # ... which fixed bounds break: with bounds (0, 1000) Q differences look tiny and the prior dominates
    (c,) = search(["s"], env_b, PuctConfig(30), value_bounds=(0.0, 1000.0), rng=0)
    assert not np.array_equal(b.visit_counts, c.visit_counts)


# ------------------------------------------------------------------------------------------------------- Gumbel


def test_gumbel_schedule_by_hand():
    # m = 4, n = 8: ceil(log2 4) = 2 phases; phase 1: 8 // (2*4) = 1 visit each; phase 2: 8 // (2*2) = 2 each
    assert considered_visit_sequence(4, 8) == (0, 0, 0, 0, 1, 1, 2, 2)
    assert considered_visit_sequence(2, 5) == (0, 0, 1, 1, 2)
    assert considered_visit_sequence(1, 3) == (0, 1, 2)
    assert considered_visit_sequence(16, 2) == (0, 0)


def test_gumbel_improved_policy_by_hand():
    env = Bandit([0.5, 0.3, 0.2], [0.0, 1.0, 0.5])  # value estimate 0.3 + 0.1 = 0.4
    config = GumbelConfig(num_simulations=2, max_num_considered_actions=2, gumbel_scale=0.0)
    (result,) = search(["s"], env, config)
    np.testing.assert_array_equal(result.visit_counts, [1, 1, 0])  # the top-2 of the prior
    # v_mix = (0.4 + 2 * (0.5*0 + 0.3*1) / 0.8) / 3 = 1.15 / 3; completed Q = [0, 1, 0.38333] (already in [0,1])
    # sigma = (50 + 1) * 0.1 * q;  pi' = softmax(log prior + sigma)
    np.testing.assert_allclose(result.q_values, [0.0, 1.0, 1.15 / 3])
    np.testing.assert_allclose(result.improved_policy, [0.00978103, 0.96258201, 0.02763696], atol=1e-8)
    assert result.selected_index == 1  # most visited (tie), then highest log prior + sigma


class RandomGame:
    """Two-player, 2-9 actions per state with a random prior (some zero), random values and terminal rewards."""

    def expand(self, states):
        out = []
        for s in states:
            r = np.random.default_rng(abs(hash(s)) % 2**32)
            k = int(r.integers(2, 10))
            prior = r.random(k) ** 2
            prior[r.integers(k)] *= float(r.random() < 0.7)
            out.append(Expansion(list(range(k)), prior / prior.sum(), float(r.uniform(-1, 1))))
        return out

    def step(self, state, action):
        child = (*state, action)
        r = np.random.default_rng(abs(hash(child)) % 2**32)
        terminal = len(child) >= 6 or r.random() < 0.1
        return Transition(child, float(r.uniform(-1, 1)) if terminal else 0.0, terminal)


@pytest.mark.parametrize("bounds", [None, (-1.0, 1.0)])
def test_gumbel_selection_equals_the_dense_formula(bounds, monkeypatch):
    """Every selection of real searches, made on the visited edges in Python floats, is the argmax of the
    paper's formula over all actions in NumPy (``dense_scores``), barring near-ties (rounding)."""
    checked = []

    def checking(select, is_root):
        def wrapper(self, tree, node):
            choice = select(self, tree, node)
            scores = self.dense_scores(tree, node, is_root)
            top = np.sort(scores[np.isfinite(scores)])[::-1]
            if len(top) < 2 or top[0] - top[1] > 1e-9:
                assert choice == int(scores.argmax()), (is_root, scores)
                checked.append(is_root)
            return choice

        return wrapper

    monkeypatch.setattr(GumbelPolicy, "select", checking(GumbelPolicy.select, False))
    monkeypatch.setattr(GumbelPolicy, "select_root", checking(GumbelPolicy.select_root, True))
    for n, m in [(4, 16), (16, 4), (40, 8), (64, 16)]:
        roots = [(seed,) for seed in range(12)]
        search(roots, RandomGame(), GumbelConfig(n, max_num_considered_actions=m), two_player=True,
               value_bounds=bounds, rng=n)  # fmt: skip
    assert checked.count(True) > 300 and checked.count(False) > 300


# ---------------------------------------------------------------------------------------------- move selection


def test_select_action_and_visit_policy():
    counts = np.array([1, 2, 3, 0])
    np.testing.assert_allclose(visit_policy(counts, 0.5), np.array([1, 4, 9, 0]) / 14)
    np.testing.assert_allclose(visit_policy(counts, 1.0), np.array([1, 2, 3, 0]) / 6)
    assert select_action(counts, temperature=0.0) == 2
    assert select_action(np.array([5, 5, 1]), temperature=0.0) == 0  # ties: the first
    draws = [select_action(counts, temperature=1.0, rng=r) for r in range(3000)]
    freq = np.bincount(draws, minlength=4) / 3000
    np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6, 0], atol=0.03)
    with pytest.raises(ValueError, match="temperature"):
        select_action(counts, temperature=-1.0)


# ---------------------------------------------------------------------------------------------- sampled prior


def test_sampled_prior_is_the_empirical_frequency():
    actions, prior = sampled_prior(["a", "b", "a", "c", "a"])
    assert actions == ("a", "b", "c")
    np.testing.assert_allclose(prior, [0.6, 0.2, 0.2])
    # beta != pi: prior ∝ beta_hat * pi / beta = [0.6 * .5/.25, 0.2 * .3/.5, 0.2 * .2/.25] = [1.2, 0.12, 0.16]
    logp = np.log([0.5, 0.3, 0.5, 0.2, 0.5])
    logb = np.log([0.25, 0.5, 0.25, 0.25, 0.25])
    _, corrected = sampled_prior(["a", "b", "a", "c", "a"], logprobs=logp, sampling_logprobs=logb)
    np.testing.assert_allclose(corrected, np.array([1.2, 0.12, 0.16]) / 1.48)
    with pytest.raises(ValueError, match="differ"):
        sampled_prior(["a", "a"], logprobs=[-1.0, -2.0])
    with pytest.raises(ValueError, match="no samples"):
        sampled_prior([])


def test_sampled_actions_search_end_to_end():
    class Steps:
        def expand(self, states):
            out = []
            for s in states:
                samples = [s + "x", s + "y", s + "x", s + "x"]  # K = 4 raw samples, 2 distinct
                actions, prior = sampled_prior(samples)
                out.append(Expansion(actions, prior, 0.0, info={"k": len(samples)}))
            return out

        def step(self, state, action):
            return Transition(action, 1.0 if action.endswith("y") else 0.0, len(action) >= 2)

    (result,) = search([""], Steps(), PuctConfig(20), rng=0)
    assert result.actions == ("x", "y") and result.root.info == {"k": 4}
    np.testing.assert_allclose(result.root.prior, [0.75, 0.25])
    assert result.visit_counts.sum() == 20


# -------------------------------------------------------------------------------------------- errors and API


class BadEnv:
    def __init__(self, expansion=None, count=None):
        self.expansion, self.count = expansion, count

    def expand(self, states):
        return [self.expansion] * (len(states) if self.count is None else self.count)

    def step(self, state, action):
        return Transition(state, 0.0, True)


@pytest.mark.parametrize(
    "expansion, count, message",
    [
        (Expansion([0, 1], np.array([0.5, 0.6]), 0.0), None, "sum to 1"),
        (Expansion([0, 1], np.array([1.5, -0.5]), 0.0), None, "non-negative"),
        (Expansion([0, 1], np.array([1.0]), 0.0), None, "shape"),
        (Expansion([0, 0], np.array([0.5, 0.5]), 0.0), None, "distinct"),
        (Expansion([0, 1], np.array([0.5, 0.5]), float("nan")), None, "finite"),
        (Expansion([], np.zeros(0), 0.0), None, "no actions"),
        (Expansion([0], np.array([1.0]), 0.0), 2, "returned 2 expansions for 1"),
        ("not an expansion", None, "Expansion objects"),
    ],
)
def test_bad_evaluator_output_is_a_clear_error(expansion, count, message):
    with pytest.raises((ValueError, TypeError), match=message):
        search(["s"], BadEnv(expansion, count), PuctConfig(2))


def test_bad_arguments_are_clear_errors():
    env = Bandit([0.5, 0.5], [0.0, 1.0])
    with pytest.raises(ValueError, match="num_simulations"):
        search(["s"], env, PuctConfig(num_simulations=0))
    with pytest.raises(ValueError, match="value_bounds"):
        search(["s"], env, PuctConfig(), value_bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="leaves_per_round"):
        search(["s"], env, PuctConfig(leaves_per_round=0))
    with pytest.raises(ValueError, match="terminal"):
        search([Node("s", is_terminal=True)], env, PuctConfig())
    with pytest.raises(TypeError, match="sequence"):
        search("s", env, PuctConfig())
    with pytest.raises(ValueError, match="2 seeds"):
        search(["s"], env, PuctConfig(), rng=[1, 2])
    with pytest.raises(TypeError, match="PuctConfig or a GumbelConfig"):
        search(["s"], env, {"num_simulations": 8})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PuctConfig(num_simulations=2.5), "PuctConfig.num_simulations must be an int >= 1"),
        (lambda: PuctConfig(num_simulations=True), "num_simulations"),
        (lambda: PuctConfig(c_puct_base=0.0), "PuctConfig.c_puct_base must be > 0"),
        (lambda: PuctConfig(dirichlet_fraction=1.5), r"dirichlet_fraction must be in \[0.0, 1.0\]"),
        (lambda: PuctConfig(dirichlet_fraction=0.25, dirichlet_alpha=0.0), "dirichlet_alpha must be > 0"),
        (lambda: PuctConfig(temperature=-1.0), "temperature must be >= 0"),
        (lambda: PuctConfig(fpu=float("nan")), "fpu must be a finite number"),
        (lambda: GumbelConfig(max_num_considered_actions=0), "GumbelConfig.max_num_considered_actions"),
        (lambda: GumbelConfig(gumbel_scale=-1.0), "gumbel_scale must be >= 0"),
        (lambda: GumbelConfig(c_visit="50"), "c_visit must be a finite number"),
    ],
)
def test_bad_configs_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_configs_are_frozen_and_accept_numpy_ints():
    config = PuctConfig(num_simulations=np.int64(8), leaves_per_round=np.int32(2))
    assert config.num_simulations == 8 and type(config.num_simulations) is int
    with pytest.raises(AttributeError):
        config.num_simulations = 4  # frozen
    assert GumbelConfig() == GumbelConfig(16, 16, 1.0, 50.0, 0.1)


def test_result_and_node_inspection():
    env = Bandit([0.5, 0.5], [0.0, 1.0])
    (result,) = search(["s"], env, PuctConfig(10, temperature=0.0), rng=0)
    assert isinstance(result, SearchResult)
    with pytest.raises(AttributeError):
        result.root_value = 1.0  # frozen
    assert result.selected_action == result.actions[result.selected_index] == 1
    assert result.improved_policy.sum() == pytest.approx(1.0)
    root = result.root
    assert root.visit_count == 11 and root.expanded and root.num_actions == 2
    assert root.child(1).is_terminal and "terminal" in repr(root.child(1))
    assert repr(Node("s")) == "Node(unexpanded)"
    snapshot = root.to_dict(max_depth=0)
    assert "children" not in snapshot and snapshot["visit_counts"] == [int(n) for n in result.visit_counts]
    with pytest.raises(IndexError):
        root.child(5)


def test_search_pauses_the_cyclic_collector_and_restores_it():
    class Watching(Chain):
        def __init__(self, fail_at: int = 0) -> None:
            self.seen, self.fail_at = [], fail_at

        def expand(self, states):
            self.seen.append(gc.isenabled())
            if len(self.seen) == self.fail_at:
                raise RuntimeError("evaluator down")
            return super().expand(states)

    env = Watching()
    search([0], env, PuctConfig(2))
    assert env.seen == [True, False, False] and gc.isenabled()  # paused for the simulations only
    with pytest.raises(RuntimeError, match="evaluator down"):
        search([0], Watching(fail_at=3), PuctConfig(2))
    assert gc.isenabled()
    gc.disable()
    try:
        search([0], Chain(), PuctConfig(2))
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_tree_search_imports_neither_torch_nor_pyspiel():
    code = (
        "import sys, tree_search; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pyspiel', 'open_spiel', 'transformers')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rng_forms_are_deterministic():
    env = Bandit([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 0.5, 0.2])
    config = PuctConfig(num_simulations=16, dirichlet_fraction=0.25, temperature=1.0)
    for make in (lambda: 5, lambda: np.random.default_rng(5), lambda: [np.random.default_rng([5, 0])]):
        a = search(["s"], env, config, rng=make())[0]
        b = search(["s"], env, config, rng=make())[0]
        np.testing.assert_array_equal(a.prior, b.prior)
        assert a.selected_index == b.selected_index
    # an int seed and the per-root generator it stands for agree
    a = search(["s"], env, config, rng=5)[0]
    b = search(["s"], env, config, rng=[np.random.default_rng([5, 0])])[0]
    np.testing.assert_array_equal(a.prior, b.prior)
