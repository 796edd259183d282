"""PUCT (AlphaZero, Silver et al. 2018; MuZero's min-max Q normalisation, Schrittwieser et al. 2020): the formula
as pure array math (:func:`puct_scores`) and the search policy built on the same pieces (:class:`PuctPolicy`).

``score(a) = Q̄(a) + c(N) * P(a) * sqrt(N) / (1 + n(a))`` with ``c(N) = log((1 + N + c_base) / c_base) + c_init``.

* ``N`` is the parent's visit count *including its own expansion* (mctx's convention): the first selection at a
  fresh node already sees ``sqrt(1) = 1``, so the prior breaks the tie among unvisited children. (The AlphaZero
  pseudocode uses the sum of the children's visits, which makes the very first pick at a node a pure tie.)
* ``Q̄`` is the edge's mean return normalised by ``(q - q_min) / (q_max - q_min)`` (MuZero's min-max over the
  tree, per root and seeded with the root's value, or fixed known bounds; the range is floored at 1e-8), or for
  unvisited edges the first-play urgency ``fpu`` normalised the same way and clipped to [0, 1]. Visited Q are not
  clipped: min-max bounds contain them by construction, fixed bounds are the caller's promise.
* Actions with prior exactly 0 score ``-inf``: they are pruned and never selected.

Departures from the papers (each a knob of :class:`~tree_search.config.PuctConfig`): FPU defaults to the parent's
search value minus ``fpu_reduction`` (Leela; AlphaZero's pseudocode uses Q = 0, ``fpu=0.0`` here); Dirichlet
noise is mixed only into actions with a non-zero prior (pruned actions stay pruned); with ``leaves_per_round > 1``
a virtual loss spreads the leaves of one tree, and a descent that meets a leaf already queued this round ends that
tree's round early (no wasted evaluator slot).
"""

from __future__ import annotations

import math
import sys
from typing import Final

import numpy as np

from tree_search._engine import Tree, completed_root_q
from tree_search.config import PuctConfig
from tree_search.select import select_action
from tree_search.tree import COMPILED, Node

__all__ = ["PuctPolicy", "exploration", "normalise_q", "puct_scores", "unit_clip"]

_EPS = 1e-8
# Score up to this many visited edges in a Python loop, more with NumPy (the measured crossover). Compiled, the loop
# is C and always wins.
_LOOP_MAX: Final = sys.maxsize if COMPILED else 12
# exploration(N) for N = 0, 1, ... by (c_init, c_base), shared by every search (the selection's only log and sqrt).
_EXPLORATION: dict[tuple[float, float], list[float]] = {}


def exploration(parent_visit_count: float, c_puct_init: float, c_puct_base: float) -> float:
    """``c(N) * sqrt(N)``: the factor of ``P(a) / (1 + n(a))`` in the score."""
    c = math.log((1.0 + parent_visit_count + c_puct_base) / c_puct_base) + c_puct_init
    return c * math.sqrt(parent_visit_count)


def unit_clip(x: float) -> float:
    """``x`` clipped into [0, 1] (a normalised FPU)."""
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


def normalise_q(q: np.ndarray, q_min: float | None, q_max: float | None) -> np.ndarray:
    """Map ``q`` into [0, 1] by ``(q - q_min) / max(q_max - q_min, 1e-8)``, clipped; unchanged if no bounds."""
    if q_min is None or q_max is None:
        return q
    scale = q_max - q_min
    if scale < _EPS:
        scale = _EPS
    return np.minimum(np.maximum((q - q_min) / scale, 0.0), 1.0)


def puct_scores(
    prior: np.ndarray,
    visit_counts: np.ndarray,
    value_sums: np.ndarray,
    *,
    parent_visit_count: float,
    c_puct_init: float = 1.25,
    c_puct_base: float = 19652.0,
    fpu_value: float = 0.0,
    q_min: float | None = None,
    q_max: float | None = None,
) -> np.ndarray:
    """PUCT scores ``[A]`` of a node's children (see the module docstring for the formula).

    Args:
      prior: ``[A]`` prior probabilities (0 = pruned).
      visit_counts: ``[A]`` visits per child edge.
      value_sums: ``[A]`` summed returns per child edge (the parent's player's view).
      parent_visit_count: the parent's visit count ``N`` (its expansion counts as one).
      c_puct_init, c_puct_base: the exploration schedule ``c(N)``.
      fpu_value: the (un-normalised) Q used for unvisited children.
      q_min, q_max: bounds used to normalise Q into [0, 1]; ``None`` leaves Q as is.
    """
    coef = exploration(float(parent_visit_count), c_puct_init, c_puct_base)
    q = value_sums / np.maximum(visit_counts, 1)
    if q_min is not None and q_max is not None:
        q = (q - q_min) / max(q_max - q_min, _EPS)
        fpu_value = unit_clip((fpu_value - q_min) / max(q_max - q_min, _EPS))
    q = np.where(visit_counts > 0, q, fpu_value)
    scores = q + coef * prior / (1.0 + visit_counts)
    return np.where(prior > 0.0, scores, -np.inf)


class PuctPolicy:
    """The PUCT search policy: root noise, the selection rule at every node, the result at the root.

    Selection is :func:`puct_scores` multiplied by the Q range and shifted by a per-node constant (the same
    argmax; ``tests/test_tree_search.py`` replays the search with :func:`puct_scores`):

    * visited:   ``(q - lo) / scale + U``            →  ``q + U * scale``
    * unvisited: ``clip((fpu - lo) / scale) + U``    →  ``clip(...) * scale + lo + U * scale``

    Unvisited edges share the FPU, so only the one with the highest prior (``Node._first``, then
    ``Node._order``) can win among them: the visited edges are scored (a Python loop over ``Node._visited``
    while they are few, two vectorised operations over the node's cached arrays once they are many; the same
    floating-point operations either way) plus one scalar candidate. Ties go to the lower index, as
    ``np.argmax`` over :func:`puct_scores` would.
    """

    def __init__(self, config: PuctConfig, value_bounds: tuple[float, float] | None) -> None:
        self.config = config
        self.leaves_per_round: int = config.leaves_per_round
        self.virtual_loss: float = config.virtual_loss
        self.track_min_max = value_bounds is None
        # fixed bounds: (lo, scale) of the normalisation; else the tree's min-max range at each selection
        self._fixed = value_bounds is not None
        self._fixed_lo = self._fixed_scale = 0.0
        if value_bounds is not None:
            self._fixed_lo = lo = float(value_bounds[0])
            self._fixed_scale = max(float(value_bounds[1]) - lo, _EPS)
        self._parent_fpu = config.fpu is None
        self._fpu: float = 0.0 if config.fpu is None else config.fpu
        self._fpu_reduction: float = config.fpu_reduction
        self._explore = _EXPLORATION.setdefault((config.c_puct_init, config.c_puct_base), [])

    def _exploration(self, parent_visit_count: int) -> float:
        """``exploration(N)``, from the table shared by every search with these constants (grown on demand)."""
        table, cfg = self._explore, self.config
        while len(table) <= parent_visit_count:
            table.append(exploration(len(table), cfg.c_puct_init, cfg.c_puct_base))
        return table[parent_visit_count]

    def prepare(self, tree: Tree) -> None:
        """Mix the Dirichlet noise into the root prior (non-zero-prior actions only); seed the min-max range."""
        cfg = self.config
        prior, _, _ = tree.root._arrays()
        if cfg.dirichlet_fraction > 0.0:
            support = prior > 0.0
            noise = tree.rng.dirichlet(np.full(int(support.sum()), cfg.dirichlet_alpha))
            prior = prior.copy()
            prior[support] = (1.0 - cfg.dirichlet_fraction) * prior[support] + cfg.dirichlet_fraction * noise
        tree.root_prior = prior
        tree.root._use_prior(prior)
        tree.init_min_max()

    def select(self, tree: Tree, node: Node) -> int:
        n_parent = node.visit_count
        if n_parent == 1:  # only the node's own expansion: no edge visited yet, the top-prior action wins
            return node._first
        fpu_value = node.value_sum / n_parent - self._fpu_reduction if self._parent_fpu else self._fpu
        if self._fixed:
            lo, scale = self._fixed_lo, self._fixed_scale
        else:
            lo = tree.q_min
            scale = tree.q_max - lo
            if scale < _EPS:
                scale = _EPS
        fpu_norm = unit_clip((fpu_value - lo) / scale)
        explore = self._explore
        coef = (explore[n_parent] if n_parent < len(explore) else self._exploration(n_parent)) * scale
        visited = node._visited
        best = -1
        best_score = -math.inf
        if len(visited) > _LOOP_MAX:
            q, pu = node._q, node._pu
            if q is None or pu is None:
                q, pu = node._build_caches()
            scores = pu * coef
            scores += q
            best = int(scores.argmax())
            best_score = float(scores[best])
        else:  # the same arithmetic as above, on the visited edges only: prior / (1 + n) * coef + q
            for child in visited:
                score = child._edge_pu * coef + child._edge_q
                if score > best_score or (score == best_score and child._index < best):
                    best, best_score = child._index, score
        candidate = node._best_unvisited()
        if candidate >= 0:
            score = (fpu_norm * scale + lo) + node._p[candidate] * coef
            if score > best_score or (score == best_score and candidate < best):
                return candidate
        return best

    def select_root(self, tree: Tree, node: Node) -> int:
        """The same rule at the root (its prior is the noised one)."""
        return self.select(tree, node)

    def outcome(self, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(improved_policy, q_values, prior, selected_index)``: normalised visits, completed Q, the noised
        prior, and a temperature draw from the visit counts."""
        root = tree.root
        _, visits, sums = root._arrays()
        prior = tree.root_prior
        assert prior is not None  # set by prepare()
        total = visits.sum()
        improved = visits / total if total > 0 else prior.copy()
        index = select_action(visits, temperature=self.config.temperature, rng=tree.rng)
        return improved, completed_root_q(root, visits, sums), prior, index
