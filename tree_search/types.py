"""The contract between `tree_search` and its callers (Go, LLM reasoning steps, test games).

The caller owns the domain; the library owns the tree. A caller supplies a :class:`SearchEnv`:

* ``expand(states)`` — *batched*: for every state, the candidate actions, their prior, and a value estimate. For Go
  this is one forward pass of the policy/value net over all leaves of all games; for an LLM it is one batched
  generation of K candidate next steps plus one value-head pass.
* ``step(state, action)`` — the transition: the child state, the reward earned by taking ``action``, and whether
  the child is terminal (Go: game over, scored exactly; LLM: the step ends the solution, scored by the verifier).

Perspective conventions (mctx's, spelled out):

* single-agent (``two_player=False``): every value and reward is the agent's. ``Q(s, a) = r + discount * V(s')``.
* two-player zero-sum (``two_player=True``): ``Expansion.value`` is from the view of the player *to move* at that
  state; ``Transition.reward`` is from the view of the player who *made* the move. The sign flips each ply:
  ``Q(s, a) = r - discount * V(s')``. Passes are moves, so players strictly alternate.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

S = TypeVar("S")  # a state: whatever the caller uses (a pyspiel state, a token prefix, ...)
A = TypeVar("A", bound=Hashable)  # an action: an int move, a step string, ...

__all__ = ["A", "Expansion", "S", "SearchEnv", "Transition"]


@dataclass(frozen=True, init=False)
class Expansion(Generic[A]):
    """The evaluator's answer for one (non-terminal) state.

    Attributes:
      actions: the candidate actions, length ``num_actions`` (legal moves; or the distinct sampled steps).
      prior: ``[num_actions]`` probabilities, non-negative, summing to 1. For sampled action spaces use
        :func:`tree_search.sampled_prior` to build the Sampled-MuZero empirical prior from the raw samples.
      value: the value estimate of the state (see the perspective conventions in the module docstring).
      info: optional per-state payload the caller wants to keep on the node (e.g. log-probs of the candidates).
    """

    actions: Sequence[A]
    prior: np.ndarray
    value: float
    info: Any = None

    def __init__(self, actions: Sequence[A], prior: np.ndarray, value: float, info: Any = None) -> None:
        # One is built per searched leaf: writing the instance dict directly costs 40% of the frozen
        # dataclass's generated __init__ (four object.__setattr__ calls); the instance stays frozen.
        fields = self.__dict__
        fields["actions"] = actions
        fields["prior"] = prior
        fields["value"] = value
        fields["info"] = info


@dataclass(frozen=True, init=False)
class Transition(Generic[S]):
    """The result of taking an action.

    Attributes:
      state: the child state.
      reward: the immediate reward of the move (perspective: the player who moved). Terminal outcomes go here.
      terminal: the child ends the episode; it is never expanded and its value is 0 beyond ``reward``.
    """

    state: S
    reward: float = 0.0
    terminal: bool = False

    def __init__(self, state: S, reward: float = 0.0, terminal: bool = False) -> None:
        fields = self.__dict__  # as Expansion: one per traversed edge
        fields["state"] = state
        fields["reward"] = reward
        fields["terminal"] = terminal


class SearchEnv(Protocol[S, A]):
    """What a caller supplies to :func:`tree_search.search`."""

    def expand(self, states: Sequence[S]) -> Sequence[Expansion[A]]:
        """Candidate actions, prior and value for each state, in one batched call."""
        ...

    def step(self, state: S, action: A) -> Transition[S]:
        """The child of ``state`` under ``action``."""
        ...
