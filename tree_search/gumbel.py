"""Gumbel AlphaZero / Gumbel MuZero search (Danihelka, Guez, Schrittwieser, Silver, ICLR 2022).

Why: PUCT's visit distribution is only a policy improvement with many simulations; with the few simulations an
LLM step search can afford (2-16), Gumbel search still returns an improved policy, because the root samples
actions without replacement with the Gumbel-top-k trick and allocates simulations by Sequential Halving.

* Root: Gumbel noise ``g`` per action; simulation ``i`` visits the action with the highest
  ``g + logits + sigma(q̂)`` among the actions whose visit count equals the Sequential Halving schedule's entry
  ``i`` (so the first ``m`` simulations visit the top-``m`` of ``g + logits``, then halves of them).
* Completed Q: unvisited actions get the mixed value ``v_mix`` (paper Appendix D, eq. 33), visited ones their
  mean return; then ``sigma(q̂) = (c_visit + max_b N(b)) * c_scale * q̂`` with ``q̂`` rescaled to [0, 1] by the
  min-max of the node's completed Q (or by ``value_bounds``).
* Interior nodes: deterministic selection ``argmax_a pi'(a) - N(a) / (1 + sum_b N(b))`` with
  ``pi' = softmax(logits + sigma(completed q̂))`` (paper Sec. 5).
* Result: ``improved_policy = softmax(logits + sigma(completed q̂))`` at the root (the training target),
  ``selected_index`` = the Sequential Halving winner: among the most visited actions, the highest
  ``g + logits + sigma(q̂)``.

Departures: ``m = min(max_num_considered_actions, number of actions with non-zero prior)`` (mctx's choice; with
``num_simulations < m`` only the first ``num_simulations`` of the top-``m`` are visited, which is the paper's
``m = n`` case). Actions with prior 0 are never considered. One leaf per root per round (no virtual loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tree_search._engine import Tree, as_root_nodes, expand_roots, make_rngs, run_rounds
from tree_search.puct import normalise_q
from tree_search.result import SearchResult
from tree_search.search import _validate
from tree_search.tree import Node
from tree_search.types import SearchEnv

__all__ = ["considered_visit_sequence", "gumbel_search"]

_EPS = 1e-8


def considered_visit_sequence(max_num_considered: int, num_simulations: int) -> tuple[int, ...]:
    """Sequential Halving as a schedule: entry ``i`` is the visit count of the action simulation ``i`` extends.

    Each phase gives every still-considered action ``max(1, floor(n / (ceil(log2 m) * considered)))`` more
    visits, then halves the considered set (never below 2), until ``n`` simulations are scheduled.
    """
    if max_num_considered <= 1:
        return tuple(range(num_simulations))
    num_phases = math.ceil(math.log2(max_num_considered))
    schedule: list[int] = []
    considered = max_num_considered
    visits = 0  # every considered action has this many visits at the start of a phase
    while len(schedule) < num_simulations:
        extra = max(1, num_simulations // (num_phases * considered))
        for _ in range(extra):
            schedule.extend([visits] * considered)
            visits += 1
        considered = max(2, considered // 2)
    return tuple(schedule[:num_simulations])


def _mixed_completed_q(node: Node) -> np.ndarray:
    """``[A]`` completed Q in value units: visited actions' mean return, unvisited ones the mixed value ``v_mix``.

    ``v_mix = (v̂ + sum_b N(b) * sum_{visited} pi(a) q(a) / sum_{visited} pi(a)) / (1 + sum_b N(b))`` where
    ``v̂`` is the evaluator's value of the node (paper eq. 33).
    """
    visits = node.visit_counts
    total = visits.sum()
    visited = visits > 0
    q = node.value_sums / np.maximum(visits, 1)
    if total > 0:
        p_visited = float(node.prior[visited].sum())
        weighted_q = float((node.prior[visited] * q[visited]).sum()) / p_visited if p_visited > 0 else 0.0
        v_mix = (node.value + total * weighted_q) / (1.0 + total)
    else:
        v_mix = node.value
    return np.where(visited, q, v_mix)


def _completed_q(node: Node, q_bounds: tuple[float, float] | None) -> np.ndarray:
    """``[A]`` completed Q rescaled to [0, 1] (by ``q_bounds`` or the min-max over the node's valid actions)."""
    completed = _mixed_completed_q(node)
    if q_bounds is not None:
        return normalise_q(completed, q_bounds[0], q_bounds[1])
    valid = node.prior > 0.0
    return normalise_q(completed, float(completed[valid].min()), float(completed[valid].max()))


def _sigma(node: Node, q_hat: np.ndarray, c_visit: float, c_scale: float) -> np.ndarray:
    return (c_visit + float(node.visit_counts.max())) * c_scale * q_hat


def _logits(prior: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(prior)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    w = np.exp(z)
    return w / w.sum()


def gumbel_search(
    roots: Sequence[Any | Node],
    env: SearchEnv,
    *,
    num_simulations: int = 16,
    max_num_considered_actions: int = 16,
    gumbel_scale: float = 1.0,
    c_visit: float = 50.0,
    c_scale: float = 0.1,
    two_player: bool = False,
    discount: float = 1.0,
    value_bounds: tuple[float, float] | None = None,
    rng: np.random.Generator | int | Sequence[Any] | None = None,
) -> list[SearchResult]:
    """Gumbel search of every root, all roots in lockstep with one batched ``env.expand`` per round.

    Args:
      roots: B raw states and/or ``Node`` s kept from a previous search.
      env: the domain (see :class:`tree_search.types.SearchEnv`).
      num_simulations: simulations per root (``n``; the root's expansion is not counted).
      max_num_considered_actions: ``m``, the number of root actions sampled without replacement.
      gumbel_scale: scale of the root Gumbel noise (0 = deterministic top-m by prior; use 0 for evaluation).
      c_visit, c_scale: ``sigma(q̂) = (c_visit + max N) * c_scale * q̂`` (the paper's defaults 50 and 0.1).
      two_player, discount: as in :func:`tree_search.search`.
      value_bounds: known ``(low, high)`` of Q for rescaling; ``None`` = min-max of each node's completed Q.
      rng: an int seed, a Generator, or one per root (per-root generators, as in :func:`tree_search.search`).
    """
    _validate(num_simulations, discount, value_bounds, 1)
    if max_num_considered_actions < 1:
        raise ValueError(f"max_num_considered_actions must be >= 1, got {max_num_considered_actions}")
    if gumbel_scale < 0.0 or c_visit < 0.0 or c_scale < 0.0:
        raise ValueError("gumbel_scale, c_visit and c_scale must be >= 0")
    q_bounds = None if value_bounds is None else (float(value_bounds[0]), float(value_bounds[1]))

    nodes = as_root_nodes(roots)
    trees = [Tree(node, r) for node, r in zip(nodes, make_rngs(rng, len(nodes)))]
    expand_roots(trees, env)
    for tree in trees:
        root = tree.root
        tree.root_prior = root.prior
        logits = _logits(root.prior)
        gumbel = gumbel_scale * tree.rng.gumbel(size=root.num_actions)
        num_valid = int((root.prior > 0.0).sum())
        schedule = considered_visit_sequence(min(max_num_considered_actions, num_valid), num_simulations)
        tree.extra = (gumbel + logits, logits, schedule)

    def select(tree: Tree, node: Node, is_root: bool) -> int:
        q_hat = _completed_q(node, q_bounds)
        sigma = _sigma(node, q_hat, c_visit, c_scale)
        if is_root:
            gumbel_logits, _, schedule = tree.extra
            scores = gumbel_logits + sigma  # -inf where the prior is 0
            allowed = np.asarray(node._n) == schedule[tree.sims_done]
            if allowed.any():
                scores = np.where(allowed, scores, -np.inf)
            return int(scores.argmax())
        logits = _logits(node.prior)
        improved = _softmax(logits + sigma)
        visits = node.visit_counts
        scores = improved - visits / (1.0 + visits.sum())
        return int(np.where(node.prior > 0.0, scores, -np.inf).argmax())

    run_rounds(
        trees,
        env,
        select,
        num_simulations=int(num_simulations),
        two_player=two_player,
        discount=discount,
        track_min_max=False,
    )

    results = []
    for tree in trees:
        root = tree.root
        gumbel_logits, logits, _ = tree.extra
        visits = root.visit_counts.copy()
        q_hat = _completed_q(root, q_bounds)
        sigma = _sigma(root, q_hat, c_visit, c_scale)
        improved = _softmax(logits + sigma)
        most_visited = (visits == visits.max()) & (root.prior > 0.0)
        index = int(np.where(most_visited, gumbel_logits + sigma, -np.inf).argmax())
        results.append(
            SearchResult(
                root=root,
                actions=tuple(root.actions),
                visit_counts=visits,
                improved_policy=improved,
                q_values=_mixed_completed_q(root),
                prior=root.prior,
                root_value=float(root.mean_value),
                selected_index=index,
                selected_action=root.actions[index],
            )
        )
    return results
