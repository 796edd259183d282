"""The knobs of a search, one frozen config per algorithm: :class:`PuctConfig` and :class:`GumbelConfig`.

Why config objects rather than keyword arguments (mctx's ``muzero_policy(..., pb_c_init=1.25)``): a caller embeds
one value in its own recipe (the relabeller's ``relabel.puct`` section, the Go recipe's ``selfplay``) and hands it
to :func:`tree_search.search`, which dispatches on its type; nobody re-flattens knobs or writes the PUCT-or-Gumbel
branch again. Algorithm knobs live here; facts about the domain (``two_player``, ``discount``, ``value_bounds``)
and the randomness (``rng``) are keyword arguments of :func:`tree_search.search`.

Every field is checked in ``__post_init__``, so a bad recipe fails where it is built, naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["GumbelConfig", "PuctConfig", "SearchConfig"]


def _check_int(owner: object, name: str, low: int) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{type(owner).__name__}.{name} must be an int >= {low}, got {value!r}")


def _check_float(
    owner: object, name: str, low: float, high: float = math.inf, *, low_open: bool = False
) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{type(owner).__name__}.{name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        if high != math.inf:
            bound = f"in [{low}, {high}]"
        raise ValueError(f"{type(owner).__name__}.{name} must be {bound}, got {value!r}")


def _integral_ints(owner: Any) -> None:
    """Accept NumPy integers for the int fields (stored as Python ints)."""
    for f in fields(owner):
        value = getattr(owner, f.name)
        if f.type == "int" and not isinstance(value, (bool, int)) and hasattr(value, "__index__"):
            object.__setattr__(owner, f.name, int(value))


@dataclass(frozen=True)
class PuctConfig:
    """AlphaZero's PUCT search (Silver et al. 2018) with MuZero's min-max Q normalisation.

    ``score(a) = Q̄(a) + c(N) * P(a) * sqrt(N) / (1 + n(a))``, ``c(N) = log((1 + N + c_base) / c_base) + c_init``
    (see :func:`tree_search.puct_scores`).

    Attributes:
      num_simulations: simulations per root; the root's own expansion is not counted, so the root's children end
        with exactly this many visits in total.
      c_puct_init: ``c_init`` of the exploration schedule.
      c_puct_base: ``c_base`` of the exploration schedule (> 0).
      fpu: the Q of unvisited children (first-play urgency); ``None`` = the parent's search value minus
        ``fpu_reduction`` (Leela); AlphaZero's pseudocode uses ``0.0``.
      fpu_reduction: subtracted from the parent's value when ``fpu`` is ``None``.
      dirichlet_alpha: concentration of the root noise ``Dir(alpha)`` (> 0 when the noise is on).
      dirichlet_fraction: root prior ``(1 - f) * P + f * Dir(alpha)`` over the non-zero-prior actions; 0 turns
        the noise off (use 0.25 for self-play).
      temperature: how ``SearchResult.selected_index`` is drawn from the root visit counts, ``N^(1/T)``;
        0 = the most visited (ties: the first).
      leaves_per_round: leaves picked per root per batched ``env.expand``; above 1 the descents of a round are
        spread by a virtual loss.
      virtual_loss: the return subtracted (and one visit added) per in-flight descent through an edge.
    """

    num_simulations: int = 64
    c_puct_init: float = 1.25
    c_puct_base: float = 19652.0
    fpu: float | None = None
    fpu_reduction: float = 0.0
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.0
    temperature: float = 1.0
    leaves_per_round: int = 1
    virtual_loss: float = 1.0

    def __post_init__(self) -> None:
        _integral_ints(self)
        _check_int(self, "num_simulations", 1)
        _check_int(self, "leaves_per_round", 1)
        _check_float(self, "c_puct_init", 0.0)
        _check_float(self, "c_puct_base", 0.0, low_open=True)
        if self.fpu is not None:
            _check_float(self, "fpu", -math.inf)
        _check_float(self, "fpu_reduction", -math.inf)
        _check_float(self, "dirichlet_fraction", 0.0, 1.0)
        _check_float(self, "dirichlet_alpha", 0.0, low_open=self.dirichlet_fraction > 0.0)
        _check_float(self, "temperature", 0.0)
        _check_float(self, "virtual_loss", 0.0)


@dataclass(frozen=True)
class GumbelConfig:
    """Gumbel AlphaZero's root (Danihelka et al. 2022): Gumbel-top-k sampling and Sequential Halving.

    Attributes:
      num_simulations: simulations per root (``n``; the root's expansion is not counted).
      max_num_considered_actions: ``m``, the root actions sampled without replacement (capped by the number of
        actions with a non-zero prior).
      gumbel_scale: scale of the root Gumbel noise; 0 = the deterministic top-``m`` by prior (for evaluation).
      c_visit: ``sigma(q̂) = (c_visit + max_b N(b)) * c_scale * q̂`` (the paper's 50).
      c_scale: as above (the paper's 0.1).
    """

    num_simulations: int = 16
    max_num_considered_actions: int = 16
    gumbel_scale: float = 1.0
    c_visit: float = 50.0
    c_scale: float = 0.1

    def __post_init__(self) -> None:
        _integral_ints(self)
        _check_int(self, "num_simulations", 1)
        _check_int(self, "max_num_considered_actions", 1)
        _check_float(self, "gumbel_scale", 0.0)
        _check_float(self, "c_visit", 0.0)
        _check_float(self, "c_scale", 0.0)


SearchConfig = PuctConfig | GumbelConfig
"""Either config; :func:`tree_search.search` dispatches on its type."""
