"""Arm 2: the tree-search relabeller — AlphaZero's policy-improvement loop with reasoning steps as moves.

The algorithm, top to bottom (one batch of B prompts; every search call below serves all B roots at once):

1. Roots. Each prompt is a root state ``(example, no steps)`` of a :class:`llm_rl.arms.step_env.StepSearchEnv`.
2. Search. PUCT (``relabel.root: puct``, AlphaZero's rule, by default without its root noise; knobs in
   ``relabel.puct``, a `tree_search.PuctConfig`) or Gumbel AlphaZero (``root: gumbel``, Sequential Halving over
   the sampled root steps; ``relabel.gumbel``, a `tree_search.GumbelConfig`) with `tree_search.search`. Each round of the search expands every selected leaf of every root in
   ONE batched call: the policy samples K candidate next steps per leaf (the prefix is prefilled once, its KV
   cache repeated K times), the distinct steps become the leaf's actions with the Sampled-MuZero prior (their
   empirical frequency), and the value head values the leaf. With ``leaf_rollout_weight`` lambda > 0 (0.5 under
   ``task.feedback: outcome``, the default) every expanded leaf is also rolled out once to a terminal by the
   policy (one more batched call per round) and scored by the verifier; its value is ``(1 - lambda) v_head +
   lambda z``. A step that ends the solution is scored by the verifier (the terminal reward); under
   ``task.feedback: steps`` a step that ``check_step`` rejects gets prior 0 (pruning; under ``outcome`` no step
   is checked).
3. Relabel. The root's search result is a decision point: ``(prefix, candidate steps, improved_policy,
   root_value)``. PUCT's improved policy is the normalised visit counts; Gumbel's is ``softmax(log prior +
   sigma(completed Q))``.
4. Commit. Play the step chosen from the visit counts at ``puct.temperature`` (PUCT; AlphaZero's self-play
   rule) or the Sequential-Halving winner (Gumbel), then search again from that child, reusing its subtree
   (`tree_search.advance`). Repeat until the committed step is terminal; its verifier score is the outcome z.
5. Learn. For every decision point on every committed path: the cross-entropy of the policy to the improved
   policy over the candidate steps (their sequence log-probabilities; rejected steps at target 0), plus
   ``value_loss_coef`` x the squared error of the value head at the decision prefix to z (``value_target:
   outcome``), to the search's root value (``search``), or to their mean (``mix``); the value head reads the
   LM's hidden state detached (``detach_value_head``, default), so the value loss trains the head alone.
   ``policy_loss: advantage`` (default) is ``-sum_a (target(a) - beta_hat(a)) log pi(a)`` with beta_hat the
   candidates' sampling frequency; ``sampled`` is Sampled MuZero's ``-sum_a target(a) log pi(a)``; ``candidate``
   renormalises pi over the candidate set first (see `llm_rl.arms.losses` for why that form drifts). The harness
   takes ``optim.epochs`` x ``optim.minibatches`` optimiser steps per batch (minibatches of episodes).

Where it departs from AlphaZero, and why (the defaults below come from docs/research/outcome_relabel.md, which
found why the relabeller without step checks drove a warm start from 0.22 to 0.05 pass@1, and measured each fix):

* Moves are sampled, not enumerated: a reasoning step is an unbounded string, so each node's actions are the
  distinct steps among K samples from the policy, with the Sampled MuZero prior (Hubert et al. 2021), and the
  policy target lives on those candidates only. Sampled MuZero's loss, with the policy's full sequence
  log-probabilities, leaves the policy unchanged *in expectation* when the search adds nothing (target = the
  samples' frequencies), but per batch it imitates the policy's own samples; the default ``advantage`` form
  drops that self-imitation term (same expected gradient, exactly zero where the search adds nothing). Under
  Adam, which moves every weight ~learning rate per step whatever the gradient's size, that noise alone took the
  tiny preset from 0.20 to 0.04 pass@1 in 12 steps. The candidate-normalised form the design first called for
  (``policy_loss: candidate``) also lowers the total probability of the policy's own samples, so it drifts
  towards flatter policies even when the search adds nothing (enumerated in ``tests/test_losses.py``).
* The value head does not train the trunk (``detach_value_head: true``), unlike AlphaZero's shared network: the
  value loss's gradient through the LM destroyed the policy on its own (0.20 to 0.02), and on the tiny model the
  LM's features cannot rank sibling steps anyway. ``false`` restores AlphaZero's shared trunk.
* Leaf values mix a rollout (``leaf_rollout_weight``, AlphaGo's lambda mixing, which AlphaZero dropped): under
  ``outcome`` the only ground truth is the terminal score, and with 8 simulations the tree reaches a terminal
  only near the end of a solution; elsewhere an untrained head's values made the target no better than the
  sampling frequency. One rollout per leaf moved +5 to +9 points of target mass onto correct steps, for ~50% more
  generated tokens. The rollout policy is the policy itself (AlphaGo used a separate fast rollout network).
* No Dirichlet root noise by default (AlphaZero: fraction 0.25): over ~2 distinct sampled candidates it mostly
  raises the rarer, more often wrong, step; the K samples already explore.
* Single agent, verifier-grounded: there is no opponent; the only reward is the contained verifier's score of the
  finished completion, in [0, 1], so values are bounded by (0, 1) rather than min-max normalised, and the value
  head ends in a sigmoid. Non-terminal steps earn nothing.
* Pruning by ``check_step`` (only under ``task.feedback: steps``, where every arm gets step checks: this is the
  relabeller's natural use of them, as GRPO's is process supervision and the MC arm's is ending an episode at
  its first rejected step; ``relabel.prune_rejected_steps`` follows the setting and may only restate it): a step
  the verifier can already reject is never searched; having no visits it gets
  target 0, so the step check acts as a dense per-step signal (under ``candidate`` it is pushed down explicitly).
  If every candidate is rejected the search still needs a move, so nothing is pruned for the search, but the
  decision gets no policy target (none of its candidates deserves imitation); its value target still trains.
* Episodes are short (``task.max_steps``) and always searched to the end with the current policy; the targets are
  used once, on-policy, instead of from a replay buffer of past self-play games.
* Gumbel roots choose the committed move by Sequential Halving (no move temperature); both roots reuse subtrees.
* One batch's search is expensive (K x simulations x steps generated steps per prompt), so when the run's budget
  runs out mid-batch (``ctx.out_of_budget()``) the remaining searches are skipped: the decision points so far are still trained on (their
  targets do not need the outcome), and the value head regresses to the search value where the path has no z.
  This bounds the budget overshoot to one round of searches instead of a whole batch.

The recipe section ``relabel:`` is `llm_rl.arm_configs.RelabelArmConfig` (importable from here too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from llm_rl.arm_configs import RelabelArmConfig
from llm_rl.arms.base import Arm, ArmContext, Batch, numpy_rng
from llm_rl.arms.losses import candidate_cross_entropy, value_loss
from llm_rl.arms.step_env import StepSearchEnv
from llm_rl.config import ExperimentConfig
from relabel_rl.config import ConfigError
from tree_search import Node, SearchResult, advance, search

__all__ = [
    "DecisionPoint",
    "Episode",
    "RelabelArm",
    "RelabelArmConfig",
    "decision_point",
    "leaf_rollout_weight",
    "prune_rejected_steps",
    "relabel_episodes",
    "relabel_loss",
    "value_targets",
]

VALUE_BOUNDS = (0.0, 1.0)  # verifier scores are in [0, 1]


def prune_rejected_steps(cfg: ExperimentConfig) -> bool:
    """Whether the relabeller prunes rejected candidates: exactly when ``task.feedback`` is ``steps``.

    Raises:
      ConfigError: ``relabel.prune_rejected_steps`` set to a value that contradicts ``task.feedback``.
    """
    wanted = cfg.task.feedback == "steps"
    given = cfg.relabel.prune_rejected_steps
    if given is not None and given != wanted:
        raise ConfigError(
            f"'relabel.prune_rejected_steps: {str(given).lower()}' contradicts 'task.feedback: {cfg.task.feedback}' "
            "(pruning uses check_step, which every arm gets under 'steps' and none under 'outcome'): drop "
            "'relabel.prune_rejected_steps' (it follows task.feedback) or change 'task.feedback'"
        )
    return wanted


def leaf_rollout_weight(cfg: ExperimentConfig) -> float:
    """lambda of the leaf values: ``relabel.leaf_rollout_weight``, or when null 0.5 under ``task.feedback:
    outcome`` and 0 under ``steps`` (`RelabelArmConfig`'s comment says why)."""
    given = cfg.relabel.leaf_rollout_weight
    if given is not None:
        return float(given)
    return 0.5 if cfg.task.feedback == "outcome" else 0.0


# --- records ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionPoint:
    """One committed decision: what the policy is trained on.

    Attributes:
      prefix: the text before the step (prompt + previous steps, each followed by the delimiter).
      candidates: ``[A]`` the distinct candidate steps (text, without the delimiter).
      continuations: ``[A]`` their sampled token ids (the step plus the delimiter/EOS token that ended it): what
        the policy's sequence log-probability is taken of.
      target: ``[A]`` the policy's training target: the search's improved policy over the candidates with the
        steps ``check_step`` rejected at 0 — all zeros when every candidate was rejected (the search still had
        to move, but no candidate deserves imitation: the decision then trains only the value head).
      rejected: ``[A]`` which candidates ``check_step`` rejected (all False without ``prune_rejected_steps``).
      visit_counts: ``[A]`` root visit counts of this search.
      prior: ``[A]`` the prior the search used (after any root noise).
      root_value: the search's value of the prefix.
      selected_index: the committed candidate.
      frequency: ``[A]`` the candidates' sampling frequency beta_hat among the K samples (before pruning and
        root noise): the baseline of ``policy_loss: advantage``; None (a hand-built record): ``prior``.
    """

    prefix: str
    candidates: tuple[str, ...]
    continuations: tuple[tuple[int, ...], ...]
    target: np.ndarray
    rejected: np.ndarray
    visit_counts: np.ndarray
    prior: np.ndarray
    root_value: float
    selected_index: int
    frequency: np.ndarray | None = None


@dataclass(frozen=True)
class Episode:
    """One prompt's committed path: its decision points, the steps played, and the verifier's outcome z
    (``None`` when the run's budget ran out before the path reached a terminal step)."""

    example_index: int
    decisions: tuple[DecisionPoint, ...]
    steps: tuple[str, ...]
    outcome: float | None


@dataclass
class RelabelBatch:
    """What ``collect`` hands to ``loss_fn``: the episodes and the search's own statistics."""

    episodes: list[Episode]
    stats: dict[str, float] = field(default_factory=dict)


# --- search and relabelling -------------------------------------------------------------------------------------
def decision_point(env: StepSearchEnv, result: SearchResult) -> DecisionPoint:
    """The training record of one root search: its candidates and the improved policy over them."""
    rejected = np.asarray(result.root.info["rejected"], dtype=bool)
    return DecisionPoint(
        prefix=env.prefix(result.root.state),
        candidates=tuple(a.text for a in result.actions),
        continuations=tuple(result.root.info["token_ids"]),
        target=np.where(rejected, 0.0, np.asarray(result.improved_policy, dtype=np.float64)),
        rejected=rejected,
        visit_counts=np.asarray(result.visit_counts),
        prior=np.asarray(result.prior, dtype=np.float64),
        root_value=float(result.root_value),
        selected_index=int(result.selected_index),
        frequency=np.asarray(result.root.info["frequency"], dtype=np.float64),
    )


def relabel_episodes(
    env: StepSearchEnv,
    example_indices: Sequence[int],
    cfg: RelabelArmConfig,
    rng: np.random.Generator,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> list[Episode]:
    """Search, commit, and search again from the child until every prompt's path is terminal (steps 1-4).

    ``should_stop`` is asked after each round of searches (one committed step per prompt); when it says yes
    (the run's budget is spent) the unfinished paths end there, with outcome ``None``.
    """
    roots: dict[int, Any] = {i: env.root_state(i) for i in example_indices}
    decisions: dict[int, list[DecisionPoint]] = {i: [] for i in example_indices}
    episodes: dict[int, Episode] = {}
    active = list(example_indices)
    while active:
        results = search([roots[i] for i in active], env, cfg.search, value_bounds=VALUE_BOUNDS, rng=rng)
        still_active = []
        for i, result in zip(active, results):
            decisions[i].append(decision_point(env, result))
            child: Node = advance(result, result.selected_index, env=env)
            if child.is_terminal:
                outcome = float(result.root.rewards[result.selected_index])
                episodes[i] = Episode(i, tuple(decisions[i]), child.state.steps, outcome)
            else:
                roots[i] = child  # subtree reuse: its statistics seed the next search
                still_active.append(i)
        active = still_active
        if active and should_stop is not None and should_stop():
            for i in active:
                episodes[i] = Episode(i, tuple(decisions[i]), roots[i].state.steps, None)
            active = []
    return [episodes[i] for i in example_indices]


# --- the loss ---------------------------------------------------------------------------------------------------
def value_targets(episodes: Sequence[Episode], mode: str) -> list[float]:
    """One value target per decision point, in episode order: z, the search's root value, or their mean.

    A path cut by the budget has no z: its decisions regress to the search's root value whatever the mode."""
    out = []
    for ep in episodes:
        for d in ep.decisions:
            if ep.outcome is None or mode == "search":
                out.append(d.root_value)
            elif mode == "outcome":
                out.append(ep.outcome)
            elif mode == "mix":
                out.append(0.5 * (ep.outcome + d.root_value))
            else:
                raise ValueError(f"unknown relabel.value_target {mode!r}; choose outcome, search or mix")
    return out


def _baseline(d: DecisionPoint) -> torch.Tensor:
    """The sampling frequency beta_hat of a decision's candidates (the ``advantage`` loss's baseline)."""
    return torch.as_tensor(d.frequency if d.frequency is not None else d.prior)


def relabel_loss(
    episodes: Sequence[Episode], policy: Any, cfg: RelabelArmConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Candidate cross-entropy to the improved policies + ``value_loss_coef`` x value MSE (step 5)."""
    decisions = [d for ep in episodes for d in ep.decisions]
    if not decisions:
        raise ValueError("relabel_loss(): no decision points")
    # One forward pass: every candidate of every decision, and the value head at each decision's prefix.
    scored = policy.token_logprobs(
        [d.prefix for d in decisions for _ in d.continuations],
        [c for d in decisions for c in d.continuations],
        with_values=True,
        detach_values=cfg.detach_value_head,  # the value loss then trains the head only
    )
    sizes = [len(d.continuations) for d in decisions]
    per_decision = torch.split(scored.sums(), sizes)  # [A_d] sequence log-probs per decision
    informative = [(lp, d) for lp, d in zip(per_decision, decisions) if len(d.continuations) > 1]
    # Sampled MuZero's form keeps single-candidate decisions (they are part of its zero-drift expectation); the
    # candidate-normalised form gets nothing from them. Decisions whose candidates were all rejected have no target.
    normalise = cfg.policy_loss == "candidate"
    trained = [
        (lp, d)
        for lp, d in (informative if normalise else zip(per_decision, decisions))
        if d.target.sum() > 0
    ]
    advantage = cfg.policy_loss == "advantage"
    if trained:
        ce = [
            candidate_cross_entropy(
                lp,
                torch.as_tensor(d.target),
                normalise=normalise,
                baseline=_baseline(d) if advantage else None,
            )
            for lp, d in trained
        ]
        policy_loss = torch.stack(ce).sum() / len(decisions)  # mean over decisions; untrained ones count 0
    else:  # no decision has a policy target in this batch
        policy_loss = scored.sums().sum() * 0.0
    first_rows = torch.tensor(np.cumsum([0, *sizes[:-1]]), device=scored.values.device)
    predicted = scored.values[first_rows]  # [D] value of each decision prefix
    targets = torch.tensor(
        value_targets(episodes, cfg.value_target), dtype=predicted.dtype, device=predicted.device
    )
    v_loss = value_loss(predicted, targets)
    loss = policy_loss + cfg.value_loss_coef * v_loss
    outcomes = [ep.outcome for ep in episodes if ep.outcome is not None]
    entropies = [
        float(-(d.target[d.target > 0] * np.log(d.target[d.target > 0])).sum()) for _, d in informative
    ]
    metrics = {
        "loss": float(loss.detach()),
        "policy_loss": float(policy_loss.detach()),
        "value_loss": float(v_loss.detach()),
        "train_outcome": float(np.mean(outcomes)) if outcomes else 0.0,
        "unfinished_episodes": len(episodes) - len(outcomes),
        "decisions": len(decisions),
        "informative_decisions": len(informative),
        "policy_decisions": len(trained),
        "all_rejected_decisions": sum(bool(d.rejected.all()) for d in decisions),
        "mean_candidates": float(np.mean([len(d.candidates) for d in decisions])),
        "target_entropy": float(np.mean(entropies)) if entropies else 0.0,
        "mean_root_value": float(np.mean([d.root_value for d in decisions])),
        "mean_value_prediction": float(predicted.detach().mean()),
        "mean_steps": float(np.mean([len(ep.steps) for ep in episodes])),
    }
    return loss, metrics


# --- the arm: collect (steps 1-4) and loss (step 5) ----------------------------------------------------------------
class RelabelArm(Arm):
    """The tree-search relabeller (module docstring)."""

    name = "relabel"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.knobs = cfg.relabel
        self.prune = prune_rejected_steps(cfg)
        self.leaf_rollout_weight = leaf_rollout_weight(cfg)

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        prune_rejected_steps(cfg)

    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        env = StepSearchEnv(
            examples,
            verifier=ctx.verifier,
            backend=ctx.sampler,
            num_candidates=self.knobs.num_candidates,
            max_step_tokens=self.cfg.task.max_step_tokens,
            max_steps=self.cfg.task.max_steps,
            temperature=self.knobs.candidate_temperature,
            prune_rejected_steps=self.prune,
            generator=ctx.generator,
            leaf_rollout_weight=self.leaf_rollout_weight,
            rollout_max_tokens=self.cfg.task.max_completion_tokens,
        )
        episodes = relabel_episodes(
            env,
            list(range(len(examples))),
            self.knobs,
            numpy_rng(ctx.generator),
            should_stop=ctx.out_of_budget,
        )
        return Batch(episodes, env.stats.as_dict())

    def loss(self, batch: Batch, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return relabel_loss(batch.items, policy, self.knobs)
