"""Gumbel AlphaZero / Gumbel MuZero's search policy (Danihelka, Guez, Schrittwieser, Silver, ICLR 2022).

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

import numpy as np

from tree_search._engine import Tree
from tree_search._puct import normalise_q
from tree_search.config import GumbelConfig
from tree_search.tree import Node

__all__ = ["GumbelPolicy", "considered_visit_sequence", "mixed_completed_q"]


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


def mixed_completed_q(node: Node) -> np.ndarray:
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


def _logits(prior: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(prior)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    w = np.exp(z)
    return w / w.sum()


class GumbelPolicy:
    """The Gumbel search policy: root Gumbel draw and halving schedule, the two selection rules, the result."""

    leaves_per_round = 1
    virtual_loss = 0.0
    track_min_max = False

    def __init__(self, config: GumbelConfig, value_bounds: tuple[float, float] | None) -> None:
        self.config = config
        self.q_bounds = None if value_bounds is None else (float(value_bounds[0]), float(value_bounds[1]))

    def _completed_q(self, node: Node) -> np.ndarray:
        """``[A]`` completed Q rescaled to [0, 1] (by the value bounds or the min-max over the valid actions)."""
        completed = mixed_completed_q(node)
        if self.q_bounds is not None:
            return normalise_q(completed, self.q_bounds[0], self.q_bounds[1])
        valid = node.prior > 0.0
        return normalise_q(completed, float(completed[valid].min()), float(completed[valid].max()))

    def _sigma(self, node: Node, q_hat: np.ndarray) -> np.ndarray:
        cfg = self.config
        return (cfg.c_visit + float(node.visit_counts.max())) * cfg.c_scale * q_hat

    def prepare(self, tree: Tree) -> None:
        """Draw the root's Gumbel noise and its Sequential Halving schedule (kept in ``tree.extra``)."""
        cfg = self.config
        root = tree.root
        tree.root_prior = root.prior
        logits = _logits(root.prior)
        gumbel = cfg.gumbel_scale * tree.rng.gumbel(size=root.num_actions)
        num_valid = int((root.prior > 0.0).sum())
        schedule = considered_visit_sequence(
            min(cfg.max_num_considered_actions, num_valid), cfg.num_simulations
        )
        tree.extra = (gumbel + logits, logits, schedule)

    def select(self, tree: Tree, node: Node, is_root: bool) -> int:
        q_hat = self._completed_q(node)
        sigma = self._sigma(node, q_hat)
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

    def outcome(self, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(improved_policy, q_values, prior, selected_index)``: ``softmax(logits + sigma(q̂))``, the mixed
        completed Q, the root prior, and the Sequential Halving winner."""
        root = tree.root
        gumbel_logits, logits, _ = tree.extra
        visits = root.visit_counts
        sigma = self._sigma(root, self._completed_q(root))
        improved = _softmax(logits + sigma)
        most_visited = (visits == visits.max()) & (root.prior > 0.0)
        index = int(np.where(most_visited, gumbel_logits + sigma, -np.inf).argmax())
        return improved, mixed_completed_q(root), root.prior, index
