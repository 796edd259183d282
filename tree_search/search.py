"""Batched PUCT search (AlphaZero, Silver et al. 2018; MuZero's min-max Q normalisation, Schrittwieser et al. 2020).

Why a hand-written search instead of OpenSpiel's ``MCTSBot`` or mctx: the same library must drive Go (OpenSpiel
states, a torch network) *and* LLM reasoning steps (token prefixes, K sampled steps, a verifier), with one batched
evaluator call per round across many roots. OpenSpiel's MCTS is one root, one state at a time, a Python object per
child; mctx needs JAX and a fixed-shape recurrent model. ``benchmarks/bench_tree_search.py`` measures the speed.

Departures from the papers (all deliberate, all documented on the knobs):

* The root's own expansion counts as one visit (mctx): ``N(parent)`` in PUCT includes it, so the first pick at a
  node follows the prior instead of a tie.
* The root's expansion is not a simulation: after ``search(num_simulations=n)`` the root's children hold
  ``n`` visits in total (as in mctx; OpenSpiel's MCTS spends its first simulation expanding the root).
* FPU (first-play urgency) is a knob: ``None`` uses the parent's current search value minus ``fpu_reduction``
  (Leela-style); AlphaZero's pseudocode uses Q = 0 for unvisited children (``fpu=0.0`` here).
* Dirichlet noise is mixed only into actions with a non-zero prior (pruned actions stay pruned).
* Min-max normalisation (``value_bounds=None``) is per root, seeded with the root's value; degenerate ranges
  map to 0 and unvisited values outside the range are clipped into [0, 1].
* With ``leaves_per_round > 1`` a virtual loss (``virtual_loss`` subtracted from the edge return and one visit
  added along the path) spreads the leaves of one tree; a descent that meets a leaf already queued in the same
  round ends that tree's round early (no wasted evaluator call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tree_search._engine import Tree, as_root_nodes, completed_root_q, expand_roots, make_rngs, run_rounds
from tree_search.result import SearchResult
from tree_search.select import select_action
from tree_search.tree import Node
from tree_search.types import SearchEnv

__all__ = ["search"]


def _validate(num_simulations: int, discount: float, value_bounds: Any, leaves_per_round: int) -> None:
    if not isinstance(num_simulations, (int, np.integer)) or num_simulations < 1:
        raise ValueError(f"num_simulations must be a positive int, got {num_simulations!r}")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    if value_bounds is not None and (len(value_bounds) != 2 or not value_bounds[0] < value_bounds[1]):
        raise ValueError(f"value_bounds must be (low, high) with low < high, got {value_bounds!r}")
    if not isinstance(leaves_per_round, (int, np.integer)) or leaves_per_round < 1:
        raise ValueError(f"leaves_per_round must be an int >= 1, got {leaves_per_round!r}")


def search(
    roots: Sequence[Any | Node],
    env: SearchEnv,
    *,
    num_simulations: int = 64,
    two_player: bool = False,
    c_puct_init: float = 1.25,
    c_puct_base: float = 19652.0,
    fpu: float | None = None,
    fpu_reduction: float = 0.0,
    dirichlet_alpha: float = 0.3,
    dirichlet_fraction: float = 0.0,
    temperature: float = 1.0,
    discount: float = 1.0,
    value_bounds: tuple[float, float] | None = None,
    leaves_per_round: int = 1,
    virtual_loss: float = 1.0,
    rng: np.random.Generator | int | Sequence[Any] | None = None,
) -> list[SearchResult]:
    """Search every root with PUCT, all roots in lockstep with one batched ``env.expand`` per round.

    Args:
      roots: B raw states (expanded in the first batched call) and/or ``Node`` s kept from a previous search.
      env: the domain (see :class:`tree_search.types.SearchEnv`).
      num_simulations: simulations per root (the root's own expansion is not counted).
      two_player: zero-sum alternating game: values flip sign each ply (``Q = r - discount * V(child)``).
      c_puct_init, c_puct_base: ``c(N) = log((1 + N + c_base) / c_base) + c_init`` (AlphaZero's schedule).
      fpu: Q used for unvisited children; ``None`` = the parent's search value minus ``fpu_reduction``.
      fpu_reduction: subtracted from the parent's value when ``fpu is None``.
      dirichlet_alpha, dirichlet_fraction: root noise ``(1 - f) * P + f * Dir(alpha)``; ``f = 0`` disables it
        (use 0.25 for self-play).
      temperature: for choosing ``selected_index`` from the root visit counts (0 = most visited).
      discount: per-ply discount of the backed-up value.
      value_bounds: known ``(low, high)`` of Q, used to normalise Q into [0, 1]; ``None`` = min-max over the tree.
      leaves_per_round: leaves picked per tree per batched expand (> 1 uses virtual loss).
      virtual_loss: the return subtracted per in-flight descent through an edge.
      rng: an int seed, a Generator, or one seed/Generator per root; per-root generators are derived so a root's
        result does not depend on the other roots of the batch (int seed ``s`` → ``default_rng([s, i])``).

    Returns:
      One :class:`SearchResult` per root, in order.
    """
    _validate(num_simulations, discount, value_bounds, leaves_per_round)
    if not 0.0 <= dirichlet_fraction <= 1.0:
        raise ValueError(f"dirichlet_fraction must be in [0, 1], got {dirichlet_fraction}")
    if dirichlet_fraction > 0.0 and dirichlet_alpha <= 0.0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if c_puct_base <= 0.0:
        raise ValueError(f"c_puct_base must be > 0, got {c_puct_base}")

    nodes = as_root_nodes(roots)
    trees = [Tree(node, r) for node, r in zip(nodes, make_rngs(rng, len(nodes)))]
    expand_roots(trees, env)
    for tree in trees:
        prior = tree.root.prior
        if dirichlet_fraction > 0.0:
            support = prior > 0.0
            noise = tree.rng.dirichlet(np.full(int(support.sum()), dirichlet_alpha))
            prior = prior.copy()
            prior[support] = (1.0 - dirichlet_fraction) * prior[support] + dirichlet_fraction * noise
        tree.root_prior = prior
        tree.root.use_prior(prior)
        tree.init_min_max()

    fixed = value_bounds is not None
    lo_fixed = float(value_bounds[0]) if fixed else 0.0
    scale_fixed = max(float(value_bounds[1]) - lo_fixed, 1e-8) if fixed else 1.0
    log, sqrt = math.log, math.sqrt

    def select(tree: Tree, node: Node, is_root: bool) -> int:
        # puct_scores() times the Q range, minus a per-node constant (same argmax; tested against it):
        #   visited:   (q - lo) / scale + U          ->  q + U * scale
        #   unvisited: clip((fpu - lo) / scale) + U  ->  clip(...) * scale + lo + U * scale
        # Unvisited edges share the FPU, so only the one with the highest prior (node._first, then node._order)
        # can win among them: two array operations over the visited edges (unvisited have _q = -inf) plus one
        # scalar candidate. Ties go to the lower index, as np.argmax over puct_scores() would.
        n_parent = node.visit_count
        if n_parent == 1:  # only the node's own expansion: no edge visited yet, the top-prior action wins
            return node._first
        fpu_value = node.value_sum / n_parent - fpu_reduction if fpu is None else fpu
        if fixed:
            lo, scale = lo_fixed, scale_fixed
        else:
            lo = tree.q_min
            scale = tree.q_max - lo
            if scale < 1e-8:
                scale = 1e-8
        fpu_norm = (fpu_value - lo) / scale
        fpu_norm = 0.0 if fpu_norm < 0.0 else (1.0 if fpu_norm > 1.0 else fpu_norm)
        coef = (log((1.0 + n_parent + c_puct_base) / c_puct_base) + c_puct_init) * sqrt(n_parent) * scale
        scores = node._pu * coef
        scores += node._q
        best = int(scores.argmax())
        best_score = scores[best]
        visits = node._n
        order = node._order
        if order is None:  # until the highest-prior action is visited, it is the candidate
            a = node._first
            if visits[a] > 0:
                order = node.build_order()
        if order is not None:
            i, n_order = node._next, len(order)
            while i < n_order and visits[order[i]] > 0:
                i += 1
            node._next = i
            a = order[i] if i < n_order else -1
        if a >= 0:
            candidate = (fpu_norm * scale + lo) + node._sel_prior[a] * coef
            if candidate > best_score or (candidate == best_score and a < best):
                return a
        return best

    run_rounds(
        trees,
        env,
        select,
        num_simulations=int(num_simulations),
        two_player=two_player,
        discount=discount,
        leaves_per_round=int(leaves_per_round),
        virtual_loss=virtual_loss,
        track_min_max=not fixed,
    )

    results = []
    for tree in trees:
        root = tree.root
        visits = root.visit_counts.copy()
        total = visits.sum()
        improved = visits / total if total > 0 else tree.root_prior.copy()
        index = select_action(visits, temperature=temperature, rng=tree.rng)
        results.append(
            SearchResult(
                root=root,
                actions=tuple(root.actions),
                visit_counts=visits,
                improved_policy=improved,
                q_values=completed_root_q(root),
                prior=tree.root_prior,
                root_value=float(root.mean_value),
                selected_index=index,
                selected_action=root.actions[index],
            )
        )
    return results
