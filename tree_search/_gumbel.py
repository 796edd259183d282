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

import functools
import math

import numpy as np

from tree_search._engine import Tree
from tree_search._puct import normalise_q, unit_clip
from tree_search.config import GumbelConfig
from tree_search.tree import Node

__all__ = ["GumbelPolicy", "considered_visit_sequence", "mixed_completed_q"]

_EPS = 1e-8


@functools.lru_cache(maxsize=256)
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


def mixed_completed_q(node: Node, visits: np.ndarray | None = None) -> np.ndarray:
    """``[A]`` completed Q in value units: visited actions' mean return, unvisited ones the mixed value ``v_mix``.

    ``v_mix = (v̂ + sum_b N(b) * sum_{visited} pi(a) q(a) / sum_{visited} pi(a)) / (1 + sum_b N(b))`` where
    ``v̂`` is the evaluator's value of the node (paper eq. 33). ``visits``: ``node.visit_counts`` if known.
    """
    prior, counts, sums = node._arrays()
    value = node.value
    assert value is not None  # the node is expanded
    if visits is None:
        visits = counts
    total = visits.sum()
    visited = visits > 0
    q = sums / np.maximum(visits, 1)
    if total > 0:
        p_visited = float(prior[visited].sum())
        weighted_q = float((prior[visited] * q[visited]).sum()) / p_visited if p_visited > 0 else 0.0
        v_mix = (value + total * weighted_q) / (1.0 + total)
    else:
        v_mix = value
    return np.where(visited, q, v_mix)


def _logits(prior: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(prior)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    w = np.exp(z)
    return w / w.sum()


class _RootDraw:
    """A Gumbel root's draw, kept in ``Tree.extra``: the noise, the halving schedule, and the phase-1 order."""

    __slots__ = ("gumbel_logits", "logits", "next", "ranked", "schedule", "scores")

    def __init__(
        self, gumbel_logits: np.ndarray, logits: np.ndarray, schedule: tuple[int, ...], num_valid: int
    ) -> None:
        self.gumbel_logits = gumbel_logits  # [A] g + logits (-inf where the prior is 0)
        self.logits = logits  # [A] log prior
        self.schedule = schedule  # the visit count each simulation extends (considered_visit_sequence)
        self.scores: list[float] = gumbel_logits.tolist()  # g + logits as floats
        # the valid actions, best g + logits first, and the position in it of the first action that may be
        # unvisited (visits only grow: the phase-1 scan resumes there)
        self.ranked: list[int] = (-gumbel_logits).argsort(kind="stable")[:num_valid].tolist()
        self.next = 0


class GumbelPolicy:
    """The Gumbel search policy: root Gumbel draw and halving schedule, the two selection rules, the result.

    The selection rules run once per simulation and level, so they work on a node's *visited* edges only
    (``Node._visited``, a handful) in Python floats: every unvisited action has the same completed Q
    (``v_mix``), so among them the highest prior (interior) or the highest ``g + logits`` (root) wins, and the
    softmax's normaliser sums the unvisited actions' prior in one term, ``1 - sum_{visited} pi``. The result is
    the formula above up to floating-point rounding (``tests/test_tree_search.py`` checks it against the dense
    NumPy formula, :meth:`dense_scores`, which the root's result and the rare fallback still use).
    """

    leaves_per_round = 1
    virtual_loss = 0.0
    track_min_max = False

    def __init__(self, config: GumbelConfig, value_bounds: tuple[float, float] | None) -> None:
        self.config = config
        self.q_bounds = None if value_bounds is None else (float(value_bounds[0]), float(value_bounds[1]))
        # the same, typed for the selection rules: with fixed bounds, [lo, lo + scale] rescales Q to [0, 1]
        self._fixed = value_bounds is not None
        self._lo = self._scale = 0.0
        if self.q_bounds is not None:
            self._lo = self.q_bounds[0]
            self._scale = max(self.q_bounds[1] - self.q_bounds[0], _EPS)
        self._c_visit: float = config.c_visit
        self._c_scale: float = config.c_scale

    # -- the dense formula (NumPy over all actions): the root's result, and the reference ------------------------
    def _completed_q(self, node: Node) -> np.ndarray:
        """``[A]`` completed Q rescaled to [0, 1] (by the value bounds or the min-max over the valid actions)."""
        return self._normalised(node, mixed_completed_q(node))

    def _normalised(self, node: Node, completed: np.ndarray) -> np.ndarray:
        if self.q_bounds is not None:
            return normalise_q(completed, self.q_bounds[0], self.q_bounds[1])
        prior, _, _ = node._arrays()
        valid = prior > 0.0
        return normalise_q(completed, float(completed[valid].min()), float(completed[valid].max()))

    def _sigma(self, node: Node, q_hat: np.ndarray, visits: np.ndarray | None = None) -> np.ndarray:
        cfg = self.config
        most = float((node._arrays()[1] if visits is None else visits).max())
        return (cfg.c_visit + most) * cfg.c_scale * q_hat

    def dense_scores(self, tree: Tree, node: Node, is_root: bool) -> np.ndarray:
        """``[A]`` the selection scores of the paper's formula (``-inf`` = not selectable); argmax = the choice."""
        sigma = self._sigma(node, self._completed_q(node))
        if is_root:
            draw: _RootDraw = tree.extra
            scores = draw.gumbel_logits + sigma  # -inf where the prior is 0
            allowed = node._arrays()[1] == draw.schedule[tree.sims_done]
            return np.where(allowed, scores, -np.inf) if allowed.any() else scores
        prior, visits, _ = node._arrays()
        improved = _softmax(_logits(prior) + sigma)
        scores = improved - visits / (1.0 + visits.sum())
        return np.where(prior > 0.0, scores, -np.inf)

    # -- the search -----------------------------------------------------------------------------------------------
    def prepare(self, tree: Tree) -> None:
        """Draw the root's Gumbel noise and its Sequential Halving schedule (kept in ``tree.extra``)."""
        cfg = self.config
        root = tree.root
        prior, _, _ = root._arrays()
        if root._sel_prior is not prior:  # a reused PUCT root: select with its own prior again
            root._use_prior(prior)
        tree.root_prior = prior
        logits = _logits(prior)
        gumbel = cfg.gumbel_scale * tree.rng.gumbel(size=root.num_actions)
        num_valid = int((prior > 0.0).sum())
        schedule = considered_visit_sequence(
            min(cfg.max_num_considered_actions, num_valid), cfg.num_simulations
        )
        tree.extra = _RootDraw(gumbel + logits, logits, schedule, num_valid)

    @staticmethod
    def _mixed_value(node: Node, p_visited: float, weighted: float) -> float:
        """``v_mix`` from ``sum_{visited} pi`` and ``sum_{visited} pi q`` (paper eq. 33)."""
        value = node.value
        assert value is not None  # the node is expanded
        total = node.visit_count - 1  # = sum of the edge visits (the expansion is the node's first visit)
        if total == 0:
            return value
        return (value + total * (weighted / p_visited if p_visited > 0 else 0.0)) / (1.0 + total)

    def _visited_q(self, node: Node, any_unvisited: bool) -> tuple[list[float], float, float, float, float]:
        """One pass over the visited edges: ``(q per visited edge, v_mix, sum_{visited} pi, lo, scale)``, where
        ``[lo, lo + scale]`` is the range that rescales the completed Q to [0, 1]."""
        qs: list[float] = []
        p_visited = weighted = 0.0
        for child in node._visited:
            q = child._edge_q
            qs.append(q)
            p = child._edge_prior
            p_visited += p
            weighted += p * q
        v_mix = self._mixed_value(node, p_visited, weighted)
        if self._fixed:
            return qs, v_mix, p_visited, self._lo, self._scale
        # min-max over the valid actions' completed Q: the visited edges' (never empty here), then v_mix, in the
        # order and with the comparisons of min() and max() over [*qs, v_mix]
        lo = hi = qs[0]
        for q in qs:
            if q < lo:
                lo = q
            if q > hi:
                hi = q
        if any_unvisited:
            if v_mix < lo:
                lo = v_mix
            if v_mix > hi:
                hi = v_mix
        return qs, v_mix, p_visited, lo, max(hi - lo, _EPS)

    def select_root(self, tree: Tree, node: Node) -> int:
        """Sequential Halving: among the actions with the scheduled visit count, the best ``g + logits + sigma``."""
        draw: _RootDraw = tree.extra
        target = draw.schedule[tree.sims_done]
        if target == 0:  # unvisited actions share sigma(v_mix): the best g + logits among them
            ranked, children = draw.ranked, node._children
            i = draw.next
            while i < len(ranked):
                child = children[ranked[i]]
                if child is None or child._edge_visits == 0:
                    break
                i += 1
            draw.next = i
            if i < len(ranked):
                return ranked[i]
            return int(self.dense_scores(tree, node, True).argmax())
        if self._fixed:
            lo, scale = self._lo, self._scale
        else:
            _, _, _, lo, scale = self._visited_q(node, node._best_unvisited() >= 0)
        gumbel_logits = draw.scores
        coef = (self._c_visit + float(node._most)) * self._c_scale
        best, best_score = -1, -math.inf
        for child in node._visited:
            if child._edge_visits != target:
                continue
            a = child._index
            x = (child._edge_q - lo) / scale
            score = gumbel_logits[a] + coef * (0.0 if x < 0.0 else (1.0 if x > 1.0 else x))
            if score > best_score or (score == best_score and a < best):
                best, best_score = a, score
        if best < 0:  # no action has the scheduled count (a reused root): the formula itself
            return int(self.dense_scores(tree, node, True).argmax())
        return best

    def select(self, tree: Tree, node: Node) -> int:
        """``argmax pi'(a) - N(a) / (1 + sum N)``, ``pi' = softmax(logits + sigma(q̂))``, over the visited edges
        and the best unvisited one. ``pi'(a) = pi(a) exp(sigma(q̂(a))) / Z``: exp(logits) is the prior."""
        visited = node._visited
        candidate = node._best_unvisited()
        if not visited:
            return candidate
        exp = math.exp
        coef = (self._c_visit + float(node._most)) * self._c_scale
        # exp(coef * q̂) could overflow beyond ~700: then every weight is divided by exp(coef)
        shift = coef if coef > 600.0 else 0.0
        weights: list[float] = []
        normaliser = 0.0
        if self._fixed:  # the range is known: one pass gives the weights and v_mix's sums
            lo, scale = self._lo, self._scale
            p_visited = weighted = 0.0
            for child in visited:
                q = child._edge_q
                p = child._edge_prior
                p_visited += p
                weighted += p * q
                x = (q - lo) / scale
                w = p * exp(coef * (0.0 if x < 0.0 else (1.0 if x > 1.0 else x)) - shift)
                weights.append(w)
                normaliser += w
            v_mix = self._mixed_value(node, p_visited, weighted)
        else:
            qs, v_mix, p_visited, lo, scale = self._visited_q(node, candidate >= 0)
            for child, q in zip(visited, qs):
                x = (q - lo) / scale
                w = child._edge_prior * exp(coef * (0.0 if x < 0.0 else (1.0 if x > 1.0 else x)) - shift)
                weights.append(w)
                normaliser += w
        unvisited_weight = 0.0
        if candidate >= 0:  # the unvisited actions: completed Q = v_mix, prior mass 1 - sum_{visited} pi
            unvisited_weight = exp(coef * unit_clip((v_mix - lo) / scale) - shift)
            normaliser += max(0.0, 1.0 - p_visited) * unvisited_weight
        denominator = float(node.visit_count)  # 1 + sum N
        best, best_score = -1, -math.inf
        for child, weight in zip(visited, weights):
            a = child._index
            score = weight / normaliser - child._edge_visits / denominator
            if score > best_score or (score == best_score and a < best):
                best, best_score = a, score
        if candidate >= 0:
            score = node._p[candidate] * unvisited_weight / normaliser
            if score > best_score or (score == best_score and candidate < best):
                best = candidate
        return best

    def outcome(self, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(improved_policy, q_values, prior, selected_index)``: ``softmax(logits + sigma(q̂))``, the mixed
        completed Q, the root prior, and the Sequential Halving winner."""
        root = tree.root
        draw: _RootDraw = tree.extra
        prior, visits, _ = root._arrays()
        completed = mixed_completed_q(root, visits)
        sigma = self._sigma(root, self._normalised(root, completed), visits)
        improved = _softmax(draw.logits + sigma)
        most_visited = (visits == visits.max()) & (prior > 0.0)
        index = int(np.where(most_visited, draw.gumbel_logits + sigma, -np.inf).argmax())
        return improved, completed, prior, index
