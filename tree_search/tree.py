"""The search tree: one :class:`Node` per expanded state; an edge's statistics live on the child it leads to.

Why not arrays over a node's actions (mctx) or a Python object per child (OpenSpiel's ``SearchNode``, the AlphaZero
pseudocode): a Go position has ~80 candidate moves, and a search visits only a handful of them. A child ``Node``
(and the env's ``step``, i.e. the state clone) is created lazily, when its edge is first traversed, and carries
that edge's statistics (visits, value sum, mean, prior, reward) in its own fields; a node keeps the list of its
visited edges' children, which the selection rules loop over, and a ``[num_actions]`` list of children by action.
Compiled (see ``COMPILED``), those fields are C struct members: a selection reads a visited edge in a few
instructions instead of several list reads and float unboxings. PUCT adds two NumPy caches (mean Q, prior /
(1 + n)) for a node with many visited edges when interpreted, to score them in two vectorised operations (in
CPython a NumPy call costs as much as a dozen attribute reads). A node's statistics are allocated only when the
search first selects below it: most expanded leaves never are.

Statistics convention: an edge's ``value_sums[a] / visit_counts[a]`` is the mean return ``Q(s, a)`` of taking ``a``
here, from the view of the player to move at this node (two-player) or of the agent (single-agent). ``visit_count``
and ``value_sum`` are the node's own statistics: the evaluator's value at expansion counts as one visit (as in
mctx), then every simulation through the node adds its return.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Final, SupportsIndex

import numpy as np

__all__ = ["COMPILED", "Node", "advance"]

_sum = np.add.reduce
_PRIOR_TOLERANCE = 1e-3  # |sum(prior) - 1| above this is an error; below it the prior is renormalised


def _probe() -> None:
    """A function whose type says whether this module runs compiled (see ``COMPILED``)."""


# Whether this module runs as C compiled by mypyc (tree_search/_native.py) rather than interpreted. A few O(A) checks
# have two implementations: interpreted, a C builtin beats a Python loop over the A actions; compiled, a typed loop
# beats the builtin. Both give the same results (tests/test_tree_search_compiled.py compares them).
COMPILED: Final = type(_probe).__name__ != "function"


def _distinct(actions: Sequence[Any]) -> bool:
    """Whether the actions are distinct: ``len(set(actions)) == len(actions)``.

    Compiled, a strictly increasing list of ints (legal moves as most games list them) is recognised in one pass
    first: building the set costs ~4x more.
    """
    if COMPILED and isinstance(actions, list):
        last = -1
        for action in actions:
            if not isinstance(action, int) or action <= last:
                break
            last = action
        else:
            return True
    return len(set(actions)) == len(actions)


class Node:
    """A search tree node. Mutable; created by the search (or by you, wrapping a state: ``Node(state)``).

    Attributes:
      state: the caller's state at this node.
      actions: the candidate actions (the evaluator's sequence, not copied) once expanded, else ``None``.
      prior: ``[A]`` float64 prior used below this node (the evaluator's; root noise is not written here).
      visit_counts: ``[A]`` int64 number of simulations through each edge.
      value_sums: ``[A]`` float64 sum of returns through each edge (this node's player's view).
      rewards: ``[A]`` float64 reward of each edge (filled when the child is first created).
      terminal: ``[A]`` bool, the edge leads to a terminal state (filled when the child is first created).
      children: list of ``Node | None`` (``None`` until the edge is first traversed).
      (``visit_counts``, ``value_sums``, ``rewards`` and ``terminal`` are read-only properties that return fresh
      NumPy copies; only the search changes edge statistics.)
      info: the ``Expansion.info`` payload of the evaluator.
      value: the evaluator's value estimate for this state (``None`` until expanded; 0 for terminal nodes).
      visit_count: visits of the node itself (1 for the expansion + 1 per simulation through it).
      value_sum: sum of the node's returns (its own player's view), including the evaluator's value.
      is_terminal: the node was reached by a terminal transition; it is never expanded.
    """

    __slots__ = (
        "_allocated",
        "_children",
        "_edge_prior",
        "_edge_pu",
        "_edge_q",
        "_edge_sum",
        "_edge_visits",
        "_first",
        "_index",
        "_most",
        "_next",
        "_order",
        "_p",
        "_pending",
        "_pu",
        "_q",
        "_reward",
        "_sel_prior",
        "_visited",
        "actions",
        "info",
        "is_terminal",
        "prior",
        "state",
        "value",
        "value_sum",
        "visit_count",
    )

    # Every attribute is declared with its type: mypyc (tree_search/_native.py) compiles the class to a C struct
    # with these fields.
    state: Any
    is_terminal: bool
    actions: Sequence[Any] | None
    prior: np.ndarray | None
    info: Any
    value: float | None
    visit_count: int
    value_sum: float
    # The edge from the parent (a root's are unused): the action's index there, its reward, visits, value sum,
    # mean (valid once visited), the parent's prior in use for it, and that prior / (1 + visits).
    _index: int
    _reward: float
    _edge_visits: int
    _edge_sum: float
    _edge_q: float
    _edge_prior: float
    _edge_pu: float
    _pending: bool
    # The statistics below this node, set by _alloc_stats (then _allocated).
    _allocated: bool
    _children: list[Node | None]
    _visited: list[Node]
    _most: int
    _p: Sequence[float]
    _sel_prior: np.ndarray
    _first: int
    _order: Sequence[int] | None
    _next: int
    _q: np.ndarray | None
    _pu: np.ndarray | None

    def __init__(self, state: Any, *, is_terminal: object = False) -> None:
        self.state = state
        self.is_terminal = bool(is_terminal)
        self.actions = None
        self.prior = None
        self.info = None
        self.value = 0.0 if is_terminal else None
        self.visit_count = 0
        self.value_sum = 0.0
        self._index = -1
        self._reward = 0.0
        self._edge_visits = 0
        self._edge_sum = 0.0
        self._edge_q = 0.0
        self._edge_prior = 0.0
        self._edge_pu = 0.0
        self._pending = False  # queued for expansion in the current round (virtual-loss collisions)
        # The statistics below the node exist only once the search first selects below it: most expanded leaves
        # never are, and allocation dominated the cost of an expansion.
        self._allocated = False

    # -- construction -----------------------------------------------------------------------------------------
    def expand(self, actions: Sequence, prior: np.ndarray, value: float, info: Any = None) -> None:
        """Attach an evaluator's answer and count it as the node's first visit.

        ``prior`` must be a float64 array of ``len(actions)``; its content is validated by :meth:`_alloc_stats`.
        """
        self.actions = actions  # kept as given (a fresh list per call from most evaluators); results copy it
        self.prior = prior
        self.info = info
        self.value = value = float(value)
        self.visit_count += 1
        self.value_sum += value

    def _alloc_stats(self) -> None:
        """Validate the prior and allocate the statistics below the node. Idempotent.

        ``_children`` holds the child under each action (``None`` until its edge is first traversed),
        ``_visited`` the children of the visited edges in order of first visit (the selection rules loop over
        it). ``_p`` is the prior in use (``_sel_prior``: the node's own, or the noised one while it is a PUCT
        root), read as Python floats through a memoryview (8x cheaper to make than ``tolist()``, and a node reads a
        few entries); each child keeps its own entry in ``_edge_prior``.

        Unvisited edges all look alike to a selection rule but for their prior, so the best of them is the one
        with the highest prior: ``_first`` is the highest-prior action; once it is visited, ``_order`` (built
        then, by _build_order) lists the non-zero-prior actions by decreasing prior and ``_next`` points at the
        first unvisited one. Zero-prior actions come last in the order and are never returned (pruning).

        ``_q`` (mean Q, -inf if unvisited) and ``_pu`` (prior in use / (1 + n)) are NumPy caches that PUCT builds
        (_build_caches) for nodes with many visited edges when interpreted, where two vectorised operations beat
        a Python loop; once built, the backup keeps them in step.
        """
        actions, prior = self.actions, self.prior
        if self._allocated or actions is None or prior is None:
            return
        num_actions = len(actions)
        values: Sequence[float] = memoryview(prior)
        if num_actions:
            total = float(_sum(prior))
            # the smallest entry by argmin: a method call costs a third of np.minimum.reduce's ufunc machinery
            lowest = values[int(prior.argmin())]
            if not math.isfinite(total) or abs(total - 1.0) > _PRIOR_TOLERANCE or lowest < 0.0:
                raise ValueError(
                    f"Expansion: prior must be non-negative and sum to 1, got sum {total}: {prior}"
                )
            if not _distinct(actions):
                raise ValueError(
                    "Expansion: actions must be distinct (use sampled_prior() to merge raw samples)"
                )
            if total != 1.0:
                self.prior = prior = prior / total
                values = memoryview(prior)
        self._children = [None] * num_actions
        self._visited = []
        self._most = 0  # the largest edge visit count (kept by the backup; a virtual loss does not count)
        self._q = None
        self._pu = None
        self._sel_prior = prior  # _set_prior, inlined: this runs for every node the search selects below
        self._p = values
        self._first = int(prior.argmax()) if num_actions else 0  # ties: the lowest index, as in the order
        self._order = None
        self._next = 0
        self._allocated = True

    def _add_child(self, index: int, state: Any, reward: float, terminal: bool) -> Node:
        """Create the child under ``actions[index]`` (its edge unvisited), from ``env.step``'s transition."""
        child = Node(state, is_terminal=terminal)
        child._index = index
        child._reward = reward
        child._edge_prior = child._edge_pu = self._p[index]
        self._children[index] = child
        return child

    def _set_prior(self, prior: np.ndarray) -> None:
        self._sel_prior = prior
        values: Sequence[float] = memoryview(prior)
        self._p = values
        self._first = int(prior.argmax()) if len(prior) else 0  # ties: the lowest index, as in the order
        self._order = None
        self._next = 0
        for child in self._children:
            if child is not None:
                child._edge_prior = p = values[child._index]
                child._edge_pu = p / (1.0 + child._edge_visits)
        if self._q is not None:
            self._build_caches()

    def _build_order(self) -> Sequence[int]:
        """The actions by decreasing prior in use (stable; zero priors last, as prior >= 0), built once the first
        is visited (read through a memoryview: a scan reads a few entries)."""
        order: Sequence[int] = memoryview((-self._sel_prior).argsort(kind="stable"))
        self._order = order
        self._next = 0
        return order

    def _best_unvisited(self) -> int:
        """The unvisited non-zero-prior action with the highest prior in use (ties: the lowest index), or -1."""
        children = self._children
        a = self._first
        child = children[a]
        if child is None or child._edge_visits == 0:  # the highest-prior action; then the order
            return a
        order = self._order
        if order is None:
            order = self._build_order()
        i, n_order = self._next, len(order)
        while i < n_order:
            child = children[order[i]]
            if child is None or child._edge_visits == 0:
                break
            i += 1
        self._next = i
        if i == n_order:
            return -1
        a = order[i]
        # the first unvisited action in the order has prior 0: so have all after it (and none was selected)
        return a if self._p[a] > 0.0 else -1

    def _build_caches(self) -> tuple[np.ndarray, np.ndarray]:
        """The NumPy caches ``_q`` and ``_pu`` from the statistics (same arithmetic as the backup's updates)."""
        _, counts, sums = self._arrays()
        visits = counts.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = sums / visits
        q[visits == 0] = -np.inf
        self._q = q
        self._pu = pu = self._sel_prior / (1.0 + visits)
        return q, pu

    def _set_edge(self, child: Node, visits: int, total: float) -> None:
        """Overwrite the statistics of ``child``'s edge (virtual loss), keeping ``_visited`` and the caches in
        step."""
        was_visited = child._edge_visits > 0
        child._edge_visits = visits
        child._edge_sum = total
        child._edge_pu = child._edge_prior / (1.0 + visits)
        if visits > 0:
            child._edge_q = total / visits
            if not was_visited:
                self._visited.append(child)
        elif was_visited:
            self._visited.remove(child)
            self._next = 0  # this edge is unvisited again (a virtual loss reverted): rescan
        q, pu = self._q, self._pu
        if q is not None and pu is not None:
            q[child._index] = child._edge_q if visits > 0 else -math.inf
            pu[child._index] = child._edge_pu

    def _use_prior(self, prior: np.ndarray) -> None:
        """Select below this node with ``prior`` (e.g. the Dirichlet-noised root prior); ``node.prior`` is kept."""
        self._alloc_stats()
        self._set_prior(prior)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prior, visit_counts, value_sums)`` of an expanded node (the properties below, never ``None``)."""
        self._alloc_stats()
        if not self._allocated:
            raise ValueError("this node is not expanded")
        visits = [0] * len(self._children)
        sums = [0.0] * len(self._children)
        for child in self._children:
            if child is not None:
                visits[child._index] = child._edge_visits
                sums[child._index] = child._edge_sum
        return self.prior, np.array(visits, dtype=np.int64), np.array(sums, dtype=np.float64)

    # -- per-edge arrays: fresh NumPy copies (None until expanded) ---------------------------------------------
    @property
    def visit_counts(self) -> np.ndarray | None:
        return self._arrays()[1] if self.actions is not None else None

    @property
    def value_sums(self) -> np.ndarray | None:
        return self._arrays()[2] if self.actions is not None else None

    @property
    def rewards(self) -> np.ndarray | None:
        self._alloc_stats()
        if not self._allocated:
            return None
        return np.array([0.0 if c is None else c._reward for c in self._children], dtype=np.float64)

    @property
    def terminal(self) -> np.ndarray | None:
        self._alloc_stats()
        if not self._allocated:
            return None
        return np.array([c is not None and c.is_terminal for c in self._children], dtype=bool)

    @property
    def children(self) -> list[Node | None]:
        self._alloc_stats()
        return self._children if self._allocated else []

    # -- inspection -------------------------------------------------------------------------------------------
    @property
    def expanded(self) -> bool:
        """Whether the evaluator has been called on this node."""
        return self.actions is not None

    @property
    def num_actions(self) -> int:
        return 0 if self.actions is None else len(self.actions)

    @property
    def mean_value(self) -> float:
        """The search's value estimate of this node (its player's view): ``value_sum / visit_count``."""
        if self.visit_count == 0:
            return 0.0 if self.value is None else float(self.value)
        return self.value_sum / self.visit_count

    @property
    def q_values(self) -> np.ndarray:
        """``[A]`` mean return per edge; NaN for unvisited edges."""
        if self.actions is None:
            return np.zeros(0)
        _, visits, sums = self._arrays()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(visits > 0, sums / visits, np.nan)

    def child(self, index: SupportsIndex) -> Node | None:
        """The child under action ``actions[index]``, or ``None`` if that edge was never traversed."""
        i = operator.index(index)
        if self.actions is None:
            raise ValueError("child(): this node is not expanded")
        if not 0 <= i < len(self.actions):
            raise IndexError(f"child(): index {i} out of range for {len(self.actions)} actions")
        return self.children[i]

    def to_dict(self, *, max_depth: int | None = None, digits: int = 4) -> dict:
        """A JSON-friendly snapshot: statistics of this node and (recursively) of its created children.

        Children are keyed by ``repr(action)``; floats are rounded to ``digits`` decimals.
        """
        out: dict[str, Any] = {
            "visit_count": int(self.visit_count),
            "value": None if self.value is None else round(float(self.value), digits),
            "mean_value": round(float(self.mean_value), digits),
        }
        if self.is_terminal:
            out["terminal"] = True
        if self.actions is None:
            return out
        prior, visits, _ = self._arrays()
        out["actions"] = [repr(a) for a in self.actions]
        out["prior"] = [round(float(p), digits) for p in prior]
        out["visit_counts"] = [int(n) for n in visits]
        out["q"] = [None if np.isnan(q) else round(float(q), digits) for q in self.q_values]
        if max_depth is None or max_depth > 0:
            next_depth = None if max_depth is None else max_depth - 1
            out["children"] = {
                repr(a): c.to_dict(max_depth=next_depth, digits=digits)
                for a, c in zip(self.actions, self.children)
                if c is not None
            }
        return out

    def __repr__(self) -> str:
        if self.is_terminal:
            return f"Node(terminal, N={self.visit_count})"
        actions = self.actions
        if actions is None:
            return "Node(unexpanded)"
        _, visits, _ = self._arrays()
        order = np.argsort(-visits, kind="stable")[:3]
        top = ", ".join(f"{actions[i]!r}:N={int(visits[i])}" for i in order if visits[i] > 0)
        return (
            f"Node(N={self.visit_count}, V={self.mean_value:+.3f}, value={self.value:+.3f}, "
            f"actions={len(actions)}, top=[{top}])"
        )


def advance(result_or_node: Any, index: SupportsIndex, *, env: Any = None) -> Node:
    """The subtree under root action ``index``, to be searched again as a new root (tree reuse).

    Accepts a :class:`~tree_search.result.SearchResult` or a :class:`Node`. The child keeps all its statistics.
    Nodes hold no parent pointer, so the child is already detached; the old tree keeps referring to it, so do
    not inspect the old result after searching the returned node again. If the edge was never traversed there
    is no child yet: pass ``env`` to create it with ``env.step`` (or search the raw state instead).
    """
    root = result_or_node if isinstance(result_or_node, Node) else result_or_node.root
    i = operator.index(index)
    child = root.child(i)
    if child is not None:
        return child
    if env is None:
        raise ValueError(
            f"advance(): action index {i} was never visited, so it has no subtree; pass env= to create it "
            "or search the child state directly"
        )
    transition = env.step(root.state, root.actions[i])  # type: ignore[index]  # child() checked it
    # the statistics exist: child() above allocated them
    return root._add_child(i, transition.state, float(transition.reward), bool(transition.terminal))
