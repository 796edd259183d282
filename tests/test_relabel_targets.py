"""The relabeller's search targets, on a scripted step env (no model): a fake backend returns fixed candidate steps
per prefix and the value head is a constant, so every visit count below can be worked out by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

import verifiers
from llm_rl.arms.relabel import RelabelArmConfig, relabel_episodes, value_targets
from llm_rl.arms.step_env import StepAction, StepSearchEnv, StepState
from llm_rl.harness.budget import Budget
from llm_rl.harness.metering import MeteredVerifier
from tree_search import GumbelConfig, PuctConfig


@dataclass(frozen=True)
class FakeContinuation:
    text: str
    token_ids: tuple[int, ...]
    logprob: float
    finished: bool = False
    stopped: bool = True


class ScriptedBackend:
    """``sample`` returns, for each prefix, the scripted steps for that prefix (cycled to n)."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[list[str]] = []

    def sample(
        self,
        prefixes: Sequence[str],
        *,
        n: int,
        max_new_tokens: int,
        temperature=1.0,
        stop="\n",
        generator=None,
    ):
        self.calls.append(list(prefixes))
        out = []
        for prefix in prefixes:
            steps = self.script[prefix]
            out.append(
                [FakeContinuation(s, tuple(range(len(s) + 1)), -float(len(s))) for s in (steps * n)[:n]]
            )
        return out


class ConstantValueEnv(StepSearchEnv):
    def prefix_values(self, prefixes: Sequence[str]) -> np.ndarray:
        return np.full(len(prefixes), 0.5)


def make_env(examples, script, *, k, prune=True, budget=None) -> tuple[ConstantValueEnv, ScriptedBackend]:
    backend = ScriptedBackend(script)
    env = ConstantValueEnv(
        examples,
        verifier=MeteredVerifier(
            verifiers.ContainedVerifier(verifiers.load("chain_arithmetic")),
            budget,
            feedback="steps" if prune else "outcome",  # pruning is what step feedback gives the relabeller
        ),
        backend=backend,
        num_candidates=k,
        max_step_tokens=16,
        max_steps=4,
        prune_rejected_steps=prune,
    )
    return env, backend


ONE_OP = {"prompt": "Start 2. Add 3.\n", "start": 2, "operations": "+3", "answer": "5"}
TWO_OPS = {"prompt": "Start 2. Add 3, times 4.\n", "start": 2, "operations": "+3 *4", "answer": "20"}


def test_puct_target_is_the_hand_computed_visit_distribution() -> None:
    # Root: two terminal candidates, prior 1/2 each, value 0.5, no noise, 4 simulations, Q bounds (0, 1).
    #   sim 1: tie (both at FPU 0.5) -> first, "Answer: 5", reward 1.   root N=2, sum 1.5
    #   sim 2: Q=1 + c*sqrt(2)*0.5/2 = 1.442  vs  FPU 0.75 + c*sqrt(2)*0.5 = 1.634 -> "Answer: 9", reward 0
    #   sim 3: 1 + c*sqrt(3)*0.5/2 = 1.541  vs  0 + 0.541 -> "Answer: 5"
    #   sim 4: 1 + c*2*0.5/3 = 1.417  vs  0 + 0.625 -> "Answer: 5"            (c = 1.25 + log(1 + 3/19652))
    env, _ = make_env([ONE_OP], {ONE_OP["prompt"]: ["Answer: 5", "Answer: 9"]}, k=2, prune=False)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=4, dirichlet_fraction=0.0, temperature=0.0))
    (episode,) = relabel_episodes(env, [0], cfg, np.random.default_rng(0))
    (decision,) = episode.decisions
    assert decision.prefix == ONE_OP["prompt"]
    assert decision.candidates == ("Answer: 5", "Answer: 9")
    assert [len(c) for c in decision.continuations] == [10, 10]  # the sampled ids: step + delimiter
    assert decision.visit_counts.tolist() == [3, 1]
    assert decision.target.tolist() == pytest.approx([0.75, 0.25])
    assert decision.root_value == pytest.approx((0.5 + 1 + 0 + 1 + 1) / 5)
    assert episode.steps == ("Answer: 5",) and episode.outcome == 1.0


def test_pruned_steps_get_zero_target_and_the_path_is_searched_to_the_end() -> None:
    p0 = TWO_OPS["prompt"]
    p1 = p0 + "2 + 3 = 5\n"
    p2 = p1 + "5 * 4 = 20\n"
    script = {
        p0: ["2 + 3 = 5", "2 + 3 = 6", "2 + 3 = 5", "Answer: 7"],  # wrong step and wrong answer are rejected
        p1: ["5 * 4 = 21", "5 * 4 = 20"],
        p2: ["Answer: 20", "Answer: 21"],
    }
    budget = Budget()
    env, backend = make_env([TWO_OPS], script, k=4, budget=budget)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=6, dirichlet_fraction=0.25, temperature=1.0))
    (episode,) = relabel_episodes(env, [0], cfg, np.random.default_rng(3))
    first, second, third = episode.decisions
    assert first.candidates == ("2 + 3 = 5", "2 + 3 = 6", "Answer: 7")
    assert first.prior[1:].tolist() == [0.0, 0.0]  # pruned before the noise, and noise keeps them at 0
    assert first.target.tolist() == [1.0, 0.0, 0.0]
    assert second.prefix == p1 and second.target.tolist() == [0.0, 1.0]
    assert third.prefix == p2 and third.target.tolist() == [1.0, 0.0]
    assert episode.steps == ("2 + 3 = 5", "5 * 4 = 20", "Answer: 20") and episode.outcome == 1.0
    assert env.stats.rejected_candidates == 4 and env.stats.distinct_candidates == 7
    # one generation call per search round; verifier calls = step checks (7) + terminal scores
    assert all(len(call) == 1 for call in backend.calls)
    assert budget.verifier_calls == 7 + len(env.stats.terminal_scores)


def test_gumbel_target_gives_pruned_steps_zero_mass() -> None:
    p0 = TWO_OPS["prompt"]
    p1 = p0 + "2 + 3 = 5\n"
    script = {
        p0: ["2 + 3 = 5", "2 + 3 = 6"],
        p1: ["5 * 4 = 20", "Answer: 21"],
        p1 + "5 * 4 = 20\n": ["Answer: 20"],
    }
    env, _ = make_env([TWO_OPS], script, k=2)
    cfg = RelabelArmConfig(
        root="gumbel", gumbel=GumbelConfig(num_simulations=4, max_num_considered_actions=2)
    )
    (episode,) = relabel_episodes(env, [0], cfg, np.random.default_rng(0))
    first = episode.decisions[0]
    assert first.target.tolist() == pytest.approx([1.0, 0.0])
    # A wrong answer line is rejected by check_step, so the search goes on with the right step.
    assert episode.decisions[1].target.tolist() == pytest.approx([1.0, 0.0])
    assert episode.outcome == 1.0


def test_roots_are_searched_in_lockstep_with_one_generation_per_round() -> None:
    examples = [ONE_OP, {**ONE_OP, "prompt": "Start 1. Add 3.\n", "start": 1, "answer": "4"}]
    script = {ONE_OP["prompt"]: ["Answer: 5", "1 + 1 = 2"], examples[1]["prompt"]: ["Answer: 4"]}
    script[ONE_OP["prompt"] + "1 + 1 = 2\n"] = ["Answer: 5"]
    env, backend = make_env(examples, script, k=2, prune=False)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=3, dirichlet_fraction=0.0, temperature=0.0))
    episodes = relabel_episodes(env, [0, 1], cfg, np.random.default_rng(0))
    assert backend.calls[0] == [ONE_OP["prompt"], examples[1]["prompt"]]  # both roots in the first call
    assert [ep.outcome for ep in episodes] == [1.0, 1.0]


def test_step_terminal_rules() -> None:
    env, _ = make_env([ONE_OP], {}, k=1)
    s = StepState(0, ())
    assert not env.step(s, StepAction("2 + 3 = 5")).terminal
    assert env.step(s, StepAction("Answer: 5")).reward == 1.0
    assert env.step(s, StepAction("2 + 3 = 5", "eos")).terminal  # EOS ends the completion (scored: no answer)
    assert env.step(s, StepAction("  ")).terminal
    long = StepState(0, ("a", "b", "c"))
    assert env.step(long, StepAction("d")).terminal  # max_steps = 4
    assert env.prefix(long) == ONE_OP["prompt"] + "a\nb\nc\n"


def test_value_targets_modes() -> None:
    env, _ = make_env([ONE_OP], {ONE_OP["prompt"]: ["Answer: 5", "Answer: 9"]}, k=2, prune=False)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=4, dirichlet_fraction=0.0, temperature=0.0))
    episodes = relabel_episodes(env, [0], cfg, np.random.default_rng(0))
    assert value_targets(episodes, "outcome") == [1.0]
    assert value_targets(episodes, "search") == pytest.approx([0.7])
    assert value_targets(episodes, "mix") == pytest.approx([0.85])
    with pytest.raises(ValueError, match="value_target"):
        value_targets(episodes, "nope")


def test_all_rejected_candidates_are_left_unpruned() -> None:
    env, _ = make_env([ONE_OP], {ONE_OP["prompt"]: ["Answer: 6", "Answer: 7"]}, k=2)
    (expansion,) = env.expand([StepState(0, ())])
    assert expansion.prior.tolist() == [0.5, 0.5]  # a node needs a move: nothing is pruned
    assert expansion.info["rejected"].tolist() == [True, True]
    assert env.stats.all_rejected_nodes == 1
    assert expansion.value == 0.5 and expansion.info["token_ids"][0] == tuple(range(10))


def test_a_budget_stop_cuts_paths_after_the_current_round() -> None:
    p0 = TWO_OPS["prompt"]
    script = {
        p0: ["2 + 3 = 5"],
        p0 + "2 + 3 = 5\n": ["5 * 4 = 20"],
        p0 + "2 + 3 = 5\n5 * 4 = 20\n": ["Answer: 20"],
    }
    env, _ = make_env([TWO_OPS], script, k=1)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=2, dirichlet_fraction=0.0))
    (episode,) = relabel_episodes(env, [0], cfg, np.random.default_rng(0), should_stop=lambda: True)
    assert episode.steps == ("2 + 3 = 5",) and episode.outcome is None and len(episode.decisions) == 1
    # no outcome: the value target is the search's root value, whatever the mode
    assert value_targets([episode], "outcome") == [episode.decisions[0].root_value]
    (full,) = relabel_episodes(env, [0], cfg, np.random.default_rng(0), should_stop=lambda: False)
    assert full.outcome == 1.0 and len(full.decisions) == 3


def test_a_decision_with_every_candidate_rejected_has_no_policy_target() -> None:
    env, _ = make_env([ONE_OP], {ONE_OP["prompt"]: ["Answer: 6", "Answer: 7"]}, k=2)
    cfg = RelabelArmConfig(puct=PuctConfig(num_simulations=4, dirichlet_fraction=0.0))
    (episode,) = relabel_episodes(env, [0], cfg, np.random.default_rng(0))
    (decision,) = episode.decisions
    assert decision.visit_counts.sum() == 4  # the search still had to move
    assert decision.rejected.tolist() == [True, True] and decision.target.tolist() == [0.0, 0.0]
    assert episode.outcome == 0.0
