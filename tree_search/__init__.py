"""AlphaZero/MuZero-style search, domain-independent: PUCT and Gumbel roots, batched, sampled actions.

One library for Go (``go_baseline``) and LLM reasoning steps (``llm_rl``). It never imports torch, Go or LLM code:
the caller's :class:`~tree_search.types.SearchEnv` owns the domain, this package owns the tree. One entry point,
:func:`search`, takes a :class:`PuctConfig` or a :class:`GumbelConfig`; the names below are the whole public API.
``compiled`` says whether the search's hot modules run as the C extensions mypyc built at install time or as
Python source (see ``tree_search/_native.py``; results are identical).
"""

from tree_search._native import compiled  # first: it decides how the modules below are loaded
from tree_search._puct import puct_scores
from tree_search.config import GumbelConfig, PuctConfig, SearchConfig
from tree_search.result import SearchResult
from tree_search.sampled import sampled_prior
from tree_search.search import search
from tree_search.select import select_action
from tree_search.tree import Node, advance
from tree_search.types import Expansion, SearchEnv, Transition

__all__ = [
    "Expansion",
    "GumbelConfig",
    "Node",
    "PuctConfig",
    "SearchConfig",
    "SearchEnv",
    "SearchResult",
    "Transition",
    "advance",
    "compiled",
    "puct_scores",
    "sampled_prior",
    "search",
    "select_action",
]
