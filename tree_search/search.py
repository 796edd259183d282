"""The one entry point: :func:`search` runs PUCT or Gumbel search, whichever config it is given.

Why a hand-written search instead of OpenSpiel's ``MCTSBot`` or mctx: the same library must drive Go (OpenSpiel
states, a torch network) *and* LLM reasoning steps (token prefixes, K sampled steps, a verifier), with one batched
evaluator call per round across many roots. OpenSpiel's MCTS is one root, one state at a time, a Python object per
child; mctx needs JAX and a fixed-shape recurrent model. ``benchmarks/bench_tree_search.py`` measures the speed.

mctx is the model: one search loop (``_engine.run_rounds``), and the algorithms are policies built on it
(``_puct.PuctPolicy``, ``_gumbel.GumbelPolicy``), each a root preparation, a selection rule and a root outcome.
This module validates the domain arguments, dispatches on the config's type, and assembles the results.

Shared departures from the papers: the root's own expansion counts as one visit (mctx), so ``N(parent)`` includes
it and the first pick at a node follows the prior; the root's expansion is not a simulation, so after a search of
``n`` simulations the root's children hold ``n`` visits in total (as in mctx; OpenSpiel's MCTS spends its first
simulation expanding the root). The algorithms' own departures are in ``_puct.py`` and ``_gumbel.py``.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import numpy as np

from tree_search._engine import Policy, Tree, as_root_nodes, expand_roots, make_rngs, run_rounds
from tree_search._gumbel import GumbelPolicy
from tree_search._puct import PuctPolicy
from tree_search.config import GumbelConfig, PuctConfig, SearchConfig
from tree_search.result import SearchResult
from tree_search.tree import Node
from tree_search.types import SearchEnv

__all__ = ["search"]


def _policy(config: SearchConfig, value_bounds: tuple[float, float] | None) -> Policy:
    if isinstance(config, PuctConfig):
        return PuctPolicy(config, value_bounds)
    if isinstance(config, GumbelConfig):
        return GumbelPolicy(config, value_bounds)
    raise TypeError(f"config: expected a PuctConfig or a GumbelConfig, got {type(config).__name__}")


def _check_domain(discount: float, value_bounds: Any) -> None:
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    if value_bounds is not None and (len(value_bounds) != 2 or not value_bounds[0] < value_bounds[1]):
        raise ValueError(f"value_bounds must be (low, high) with low < high, got {value_bounds!r}")


def search(
    roots: Sequence[Any | Node],
    env: SearchEnv,
    config: SearchConfig,
    *,
    two_player: bool = False,
    discount: float = 1.0,
    value_bounds: tuple[float, float] | None = None,
    rng: np.random.Generator | int | Sequence[Any] | None = None,
) -> list[SearchResult]:
    """Search every root with the algorithm ``config`` names, all roots in lockstep, one ``env.expand`` a round.

    Args:
      roots: B raw states (expanded in the first batched call) and/or ``Node`` s kept from a previous search.
      env: the domain (see :class:`tree_search.types.SearchEnv`).
      config: a :class:`~tree_search.config.PuctConfig` or :class:`~tree_search.config.GumbelConfig` (the
        algorithm and its knobs).
      two_player: zero-sum alternating game: values flip sign each ply (``Q = r - discount * V(child)``).
      discount: per-ply discount of the backed-up value, in [0, 1].
      value_bounds: known ``(low, high)`` of Q, used to normalise Q into [0, 1]; ``None`` = min-max over the tree
        (PUCT) or over each node's completed Q (Gumbel).
      rng: an int seed, a Generator, or one seed/Generator per root; per-root generators are derived so a root's
        result does not depend on the other roots of the batch (int seed ``s`` → ``default_rng([s, i])``).

    Returns:
      One :class:`SearchResult` per root, in order.
    """
    policy = _policy(config, value_bounds)
    _check_domain(discount, value_bounds)
    nodes = as_root_nodes(roots)
    trees = [Tree(node, r) for node, r in zip(nodes, make_rngs(rng, len(nodes)))]
    expand_roots(trees, env)
    for tree in trees:
        policy.prepare(tree)
    collecting = gc.isenabled()
    gc.disable()  # the tree is acyclic (no parent pointers): scanning its many young objects for cycles is waste
    try:
        run_rounds(
            trees,
            env,
            policy,
            num_simulations=config.num_simulations,
            two_player=two_player,
            discount=discount,
        )
    finally:
        if collecting:
            gc.enable()
    results = []
    for tree in trees:
        root = tree.root
        actions = root.actions
        assert actions is not None  # expanded by expand_roots
        improved, q_values, prior, index = policy.outcome(tree)
        results.append(
            SearchResult(
                root=root,
                actions=tuple(actions),
                visit_counts=root._arrays()[1],
                improved_policy=improved,
                q_values=q_values,
                prior=prior,
                root_value=float(root.mean_value),
                selected_index=index,
                selected_action=actions[index],
            )
        )
    return results
