"""The PUCT score (AlphaZero, Silver et al. 2018, pseudocode ``ucb_score``), as pure array math.

``score(a) = Q̄(a) + c(N) * P(a) * sqrt(N) / (1 + n(a))`` with ``c(N) = log((1 + N + c_base) / c_base) + c_init``.

* ``N`` is the parent's visit count *including its own expansion* (mctx's convention): the first selection at a
  fresh node already sees ``sqrt(1) = 1``, so the prior breaks the tie among unvisited children. (The AlphaZero
  pseudocode uses the sum of the children's visits, which makes the very first pick at a node a pure tie.)
* ``Q̄`` is the edge's mean return normalised by ``(q - q_min) / (q_max - q_min)`` (MuZero's min-max over the
  tree, or fixed known bounds; the range is floored at 1e-8), or for unvisited edges ``fpu_value``
  (first-play urgency) normalised the same way and clipped to [0, 1]. Visited Q are not clipped: min-max
  bounds contain them by construction, fixed bounds are the caller's promise.
* Actions with prior exactly 0 score ``-inf``: they are pruned and never selected.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normalise_q", "puct_scores"]

_EPS = 1e-8


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
    parent_visit_count: int,
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
    n_parent = float(parent_visit_count)
    c = math.log((1.0 + n_parent + c_puct_base) / c_puct_base) + c_puct_init
    q = value_sums / np.maximum(visit_counts, 1)
    if q_min is not None and q_max is not None:
        q = (q - q_min) / max(q_max - q_min, _EPS)
        fpu_value = min(max((fpu_value - q_min) / max(q_max - q_min, _EPS), 0.0), 1.0)
    q = np.where(visit_counts > 0, q, fpu_value)
    scores = q + (c * math.sqrt(n_parent)) * prior / (1.0 + visit_counts)
    return np.where(prior > 0.0, scores, -np.inf)
