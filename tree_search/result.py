"""What a search returns per root: the searched tree plus the arrays a trainer and a player need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tree_search.tree import Node

__all__ = ["SearchResult"]


@dataclass(frozen=True, init=False)
class SearchResult:
    """The outcome of searching one root.

    Attributes:
      root: the searched tree (inspect it; reuse a subtree with ``root.child(i)`` / :func:`tree_search.advance`).
      actions: the root's candidate actions ``[A]``.
      visit_counts: ``[A]`` int64 simulations through each root action.
      improved_policy: ``[A]`` the training target: normalised visit counts (PUCT), or
        ``softmax(logits + sigma(completed Q))`` (Gumbel).
      q_values: ``[A]`` per-action Q from the root player's view; unvisited actions are completed with the root
        value (PUCT) or the Gumbel mixed value (Gumbel).
      prior: ``[A]`` the prior the root search used (after Dirichlet noise, if any).
      root_value: the search's value of the root (root player's view): the root's mean return.
      selected_index: index into ``actions`` of the move to play (temperature sampling for PUCT, the sequential
        halving winner for Gumbel).
      selected_action: ``actions[selected_index]``.
    """

    root: Node
    actions: tuple
    visit_counts: np.ndarray
    improved_policy: np.ndarray
    q_values: np.ndarray
    prior: np.ndarray
    root_value: float
    selected_index: int
    selected_action: object

    def __init__(
        self,
        root: Node,
        actions: tuple,
        visit_counts: np.ndarray,
        improved_policy: np.ndarray,
        q_values: np.ndarray,
        prior: np.ndarray,
        root_value: float,
        selected_index: int,
        selected_action: object,
    ) -> None:
        # One per root per search: the instance dict written directly (as tree_search.types.Expansion); frozen.
        self.__dict__.update(
            root=root,
            actions=actions,
            visit_counts=visit_counts,
            improved_policy=improved_policy,
            q_values=q_values,
            prior=prior,
            root_value=root_value,
            selected_index=selected_index,
            selected_action=selected_action,
        )
