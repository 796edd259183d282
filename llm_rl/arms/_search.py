"""TEMPORARY bridge to the typed `tree_search` entry point (delete at merge; import from `tree_search` instead).

The search engineer replaces `tree_search.search(**14 knobs)` and `tree_search.gumbel_search(**9 knobs)` by ONE
``search(roots, env, config, *, two_player, discount, value_bounds, rng)`` taking a frozen `PuctConfig` or
`GumbelConfig` (/work/TREE_SEARCH_API.md). The relabeller is written against that API. Until it is in this
branch, this module provides the same names over today's two functions, with the agreed fields and defaults;
once `tree_search` exports them, the first import below succeeds and this file is a re-export to remove.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

try:  # the merged tree_search (its own configs and dispatch)
    from tree_search import GumbelConfig, PuctConfig, SearchConfig, search
except ImportError:  # today's tree_search: the agreed API over search() / gumbel_search()
    import tree_search as _ts

    @dataclass(frozen=True)
    class PuctConfig:
        """AlphaZero PUCT (see tree_search.search for each knob)."""

        num_simulations: int = 64
        c_puct_init: float = 1.25
        c_puct_base: float = 19652.0
        fpu: float | None = None
        fpu_reduction: float = 0.0
        dirichlet_alpha: float = 0.3
        dirichlet_fraction: float = 0.0
        temperature: float = 1.0  # move selection from root visit counts (0 = most visited)
        leaves_per_round: int = 1
        virtual_loss: float = 1.0

        def __post_init__(self) -> None:
            if self.num_simulations < 1:
                raise ValueError(f"num_simulations must be >= 1, got {self.num_simulations}")

    @dataclass(frozen=True)
    class GumbelConfig:
        """Gumbel AlphaZero root + Sequential Halving (see tree_search.gumbel_search for each knob)."""

        num_simulations: int = 16
        max_num_considered_actions: int = 16
        gumbel_scale: float = 1.0
        c_visit: float = 50.0
        c_scale: float = 0.1

        def __post_init__(self) -> None:
            if self.num_simulations < 1:
                raise ValueError(f"num_simulations must be >= 1, got {self.num_simulations}")

    SearchConfig = PuctConfig | GumbelConfig

    def search(
        roots: Sequence[Any],
        env: Any,
        config: PuctConfig | GumbelConfig,
        *,
        two_player: bool = False,
        discount: float = 1.0,
        value_bounds: tuple[float, float] | None = None,
        rng: Any = None,
    ) -> list[Any]:
        domain = {"two_player": two_player, "discount": discount, "value_bounds": value_bounds, "rng": rng}
        if isinstance(config, GumbelConfig):
            return _ts.gumbel_search(roots, env, **asdict(config), **domain)
        if isinstance(config, PuctConfig):
            return _ts.search(roots, env, **asdict(config), **domain)
        raise TypeError(f"search() takes a PuctConfig or GumbelConfig, got {type(config).__name__}")


__all__ = ["GumbelConfig", "PuctConfig", "SearchConfig", "search"]
