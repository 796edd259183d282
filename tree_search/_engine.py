"""The batched simulation loop shared by PUCT and Gumbel search: descend, expand in one batch, back up.

All B roots advance in lockstep. Each round picks one leaf per root (or up to ``leaves_per_round`` with virtual
loss), calls ``env.expand`` ONCE with every non-terminal leaf of every root, and backs up. ``env.step`` is called
only when an edge is first traversed (which is when its child ``Node`` is created). Terminal children are never
expanded: their return is the transition's reward.

Only the policy differs between PUCT and Gumbel (root preparation, the selection rule, the root's outcome): it is
passed in as a :class:`Policy`, as mctx's ``search`` takes its action-selection functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Protocol

import numpy as np

from tree_search.tree import Node
from tree_search.types import Expansion

# How a descent ended: at a leaf to expand, at a terminal child, at a node without actions, at a leaf already
# queued this round (virtual loss).
_EXPAND: Final = 0
_TERMINAL: Final = 1
_DEADEND: Final = 2
_COLLIDE: Final = 3
_NDARRAY: Final = np.ndarray
_FLOAT64: Final = np.dtype(np.float64)


class Tree:
    """Per-root search context: the root, its (noised) prior, its rng, its min-max Q statistics, progress."""

    __slots__ = ("extra", "q_max", "q_min", "rng", "root", "root_prior", "sims_done")

    def __init__(self, root: Node, rng: np.random.Generator) -> None:
        self.root = root
        self.rng = rng
        self.root_prior: np.ndarray | None = None
        self.q_min = math.inf
        self.q_max = -math.inf
        self.sims_done = 0
        self.extra: Any = None  # the selection rule's per-root data (Gumbel noise, halving table)

    def init_min_max(self) -> None:
        """MuZero-style min-max statistics, seeded with the root's value and its visited edges' Q (reuse)."""
        root = self.root
        self.q_min = self.q_max = root.mean_value
        _, visits, sums = root._arrays()
        visited = visits > 0
        if visited.any():
            q = sums[visited] / visits[visited]
            self.q_min = min(self.q_min, float(q.min()))
            self.q_max = max(self.q_max, float(q.max()))


# A descent whose leaf (its path's last node) waits for this round's batched expansion.
_Pending = tuple[Tree, list[Node]]


def make_rngs(rng: Any, num_roots: int) -> list[np.random.Generator]:
    """One generator per root, so that a root's search does not depend on the other roots of the batch.

    ``int`` seed ``s`` → root ``i`` gets ``default_rng([s, i])``; a sequence gives each root its own seed or
    generator; a ``Generator`` spawns ``num_roots`` children; ``None`` uses fresh OS entropy.
    """
    if isinstance(rng, (list, tuple)):
        if len(rng) != num_roots:
            raise ValueError(f"rng: got a sequence of {len(rng)} seeds/generators for {num_roots} roots")
        return [r if isinstance(r, np.random.Generator) else np.random.default_rng(r) for r in rng]
    if isinstance(rng, np.random.Generator):
        try:
            return list(rng.spawn(num_roots))
        except (AttributeError, TypeError):  # a bit generator without a spawnable SeedSequence
            return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63, size=num_roots)]
    if rng is None:
        return [np.random.default_rng(s) for s in np.random.SeedSequence().spawn(num_roots)]
    if isinstance(rng, (int, np.integer)):
        return [np.random.default_rng([int(rng), i]) for i in range(num_roots)]
    raise TypeError(
        f"rng: expected None, an int seed, a numpy Generator or a sequence of them, got {type(rng)}"
    )


def as_root_nodes(roots: Sequence[Any]) -> list[Node]:
    if isinstance(roots, (str, bytes)) or not isinstance(roots, Sequence):
        raise TypeError("roots: expected a sequence of states or Nodes (wrap a single root in a list)")
    if len(roots) == 0:
        raise ValueError("roots: empty")
    nodes = [r if isinstance(r, Node) else Node(r) for r in roots]
    for i, node in enumerate(nodes):
        if node.is_terminal:
            raise ValueError(f"roots[{i}] is a terminal node: there is nothing to search")
    return nodes


def attach_expansion(node: Node, expansion: Expansion) -> float:
    """Check an evaluator answer's shape and value (clear errors) and expand ``node`` with it.

    The prior's content (non-negative, sums to 1, distinct actions) is checked by ``Node._alloc_stats`` when the
    search first selects below the node: at once for roots, and never for a leaf that is never searched below
    (its prior is never used). That keeps the per-leaf cost low.
    """
    if not isinstance(expansion, Expansion):
        raise TypeError(f"env.expand must return Expansion objects, got {type(expansion).__name__}")
    actions = expansion.actions
    prior = expansion.prior
    if type(prior) is not _NDARRAY or prior.dtype is not _FLOAT64:  # native float64 (read via memoryview)
        prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or len(prior) != len(actions):
        raise ValueError(f"Expansion: prior has shape {prior.shape} but there are {len(actions)} actions")
    value = float(expansion.value)
    if not math.isfinite(value):
        raise ValueError(f"Expansion: value must be finite, got {expansion.value}")
    node.actions = actions  # Node.expand, inlined: this runs once per leaf
    node.prior = prior
    node.info = expansion.info
    node.value = value
    node.visit_count += 1
    node.value_sum += value
    return value


def expand_batch(env: Any, nodes: list[Node]) -> None:
    expansions = env.expand([node.state for node in nodes])
    if len(expansions) != len(nodes):
        raise ValueError(f"env.expand returned {len(expansions)} expansions for {len(nodes)} states")
    for node, expansion in zip(nodes, expansions):
        attach_expansion(node, expansion)


def expand_roots(trees: list[Tree], env: Any) -> None:
    """Expand all raw roots in one batched call (the first round of the search)."""
    fresh = [t.root for t in trees if not t.root.expanded]
    if fresh:
        expand_batch(env, fresh)
    for i, t in enumerate(trees):
        if t.root.num_actions == 0:
            raise ValueError(f"roots[{i}]: the evaluator returned no actions for a non-terminal root")
        t.root._alloc_stats()  # validates the root's prior now


class Policy(Protocol):
    """What a search algorithm supplies to the engine (``_puct.PuctPolicy``, ``_gumbel.GumbelPolicy``).

    As mctx's ``search`` takes a root and an interior action-selection function, the engine asks the policy for
    the action at the root and at every node below it.
    """

    leaves_per_round: int  # leaves per tree per round (> 1: virtual loss)
    virtual_loss: float
    track_min_max: bool  # keep each tree's min-max Q range up to date in the backup

    def prepare(self, tree: Tree) -> None:
        """Set up a freshly expanded root (noise, schedules) before the first simulation."""

    def select_root(self, tree: Tree, node: Node) -> int:
        """The index of the action to descend through at the root ``node`` of ``tree``."""
        ...

    def select(self, tree: Tree, node: Node) -> int:
        """The index of the action to descend through at a node below the root."""
        ...

    def outcome(self, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(improved_policy, q_values, prior, selected_index)`` of a searched root."""
        ...


class _Rounds:
    """One search's simulation loop over all trees: descend, expand in one batch, back up (see module doc).

    The loop runs once per simulation and level, so it reads the nodes' private fields directly. A descent's
    path is its list of nodes, root first; each node after the first holds the statistics of the edge into it.
    """

    def __init__(self, env: Any, policy: Policy, *, two_player: bool, discount: float) -> None:
        self.env = env
        self.policy = policy
        self.sign_discount: float = -discount if two_player else discount
        self.leaves_per_round: int = policy.leaves_per_round
        self.use_vl = policy.leaves_per_round > 1
        self.virtual_loss: float = policy.virtual_loss
        self.track_min_max: bool = policy.track_min_max

    def descend(self, tree: Tree) -> tuple[list[Node], int]:
        """Select from the root to a leaf; create the leaf's ``Node`` with ``env.step`` on first traversal."""
        use_vl, policy = self.use_vl, self.policy
        node = tree.root
        a = policy.select_root(tree, node)
        path = [node]
        while True:
            child = node._children[a]
            if child is None:
                transition = self.env.step(node.state, node.actions[a])  # type: ignore[index]
                terminal = bool(transition.terminal)
                child = node._add_child(a, transition.state, float(transition.reward), terminal)
                path.append(child)
                if use_vl:
                    self.add_virtual_loss(node, child)
                return path, (_TERMINAL if terminal else _EXPAND)
            path.append(child)
            if use_vl:
                self.add_virtual_loss(node, child)
            if child.is_terminal:
                return path, _TERMINAL
            actions = child.actions
            if actions is None:
                return path, (_COLLIDE if child._pending else _EXPAND)
            if not actions:
                return path, _DEADEND
            node = child
            if not node._allocated:
                node._alloc_stats()
            a = policy.select(tree, node)

    def add_virtual_loss(self, node: Node, child: Node) -> None:
        virtual_loss = self.virtual_loss
        node._set_edge(child, child._edge_visits + 1, child._edge_sum - virtual_loss)
        node.visit_count += 1
        node.value_sum -= virtual_loss

    def revert_virtual_loss(self, path: list[Node]) -> None:
        virtual_loss = self.virtual_loss
        for i in range(1, len(path)):
            node, child = path[i - 1], path[i]
            node._set_edge(child, child._edge_visits - 1, child._edge_sum + virtual_loss)
            node.visit_count -= 1
            node.value_sum += virtual_loss

    def backup(self, tree: Tree, path: list[Node], value: float) -> None:
        """Add the return of one simulation along ``path`` (and to the tree's min-max range)."""
        sign_discount, track_min_max = self.sign_discount, self.track_min_max
        g = value
        q_min, q_max = tree.q_min, tree.q_max
        for i in range(len(path) - 1, 0, -1):
            child = path[i]
            node = path[i - 1]
            g = child._reward + sign_discount * g
            n = child._edge_visits + 1
            s = child._edge_sum + g
            q = s / n
            child._edge_visits = n
            child._edge_sum = s
            child._edge_q = q
            child._edge_pu = pu = child._edge_prior / (1.0 + n)
            if n == 1:
                node._visited.append(child)
            if n > node._most:
                node._most = n
            node_q, node_pu = node._q, node._pu
            if node_q is not None and node_pu is not None:
                node_q[child._index] = q
                node_pu[child._index] = pu
            node.visit_count += 1
            node.value_sum += g
            if track_min_max:
                if q < q_min:
                    q_min = q
                if q > q_max:
                    q_max = q
        tree.q_min, tree.q_max = q_min, q_max

    def finish(self, tree: Tree, path: list[Node], kind: int) -> None:
        """Back up a descent that ended without a new expansion (a terminal or a dead-end leaf)."""
        leaf = path[-1]
        value = 0.0
        if kind != _TERMINAL:
            assert leaf.value is not None  # a dead end is an expanded node
            value = leaf.value
        leaf.visit_count += 1
        leaf.value_sum += value
        if self.use_vl:
            self.revert_virtual_loss(path)
        self.backup(tree, path, value)

    def collect_with_virtual_loss(self, tree: Tree, num_simulations: int, pending: list[_Pending]) -> None:
        """Up to ``leaves_per_round`` descents of one tree, spread by virtual loss; leaves to expand go to
        ``pending`` (marked, so that a later descent of this round that meets one stops there)."""
        budget = min(num_simulations - tree.sims_done, self.leaves_per_round)
        while budget:
            budget -= 1
            path, kind = self.descend(tree)
            if kind == _COLLIDE:  # another descent of this round already waits on this leaf
                self.revert_virtual_loss(path)
                return
            tree.sims_done += 1
            if kind == _EXPAND:
                path[-1]._pending = True
                pending.append((tree, path))
            else:
                self.finish(tree, path, kind)

    def expand_pending(self, pending: list[_Pending]) -> None:
        """One batched ``env.expand`` for every leaf of this round, then their backups."""
        expansions = self.env.expand([path[-1].state for _, path in pending])
        if len(expansions) != len(pending):
            raise ValueError(f"env.expand returned {len(expansions)} expansions for {len(pending)} states")
        use_vl = self.use_vl
        for (tree, path), expansion in zip(pending, expansions):
            leaf = path[-1]
            value = attach_expansion(leaf, expansion)
            if use_vl:
                leaf._pending = False
                self.revert_virtual_loss(path)
            self.backup(tree, path, value)

    def run(self, trees: list[Tree], num_simulations: int) -> None:
        """Rounds until every tree has had ``num_simulations`` simulations."""
        for t in trees:
            t.sims_done = 0
        active = list(trees)
        pending: list[_Pending] = []
        while active:
            pending.clear()
            for tree in active:
                if self.use_vl:
                    self.collect_with_virtual_loss(tree, num_simulations, pending)
                    continue
                path, kind = self.descend(tree)  # one descent per tree: no collision is possible
                tree.sims_done += 1
                if kind == _EXPAND:
                    pending.append((tree, path))
                else:
                    self.finish(tree, path, kind)
            if pending:
                self.expand_pending(pending)
            if any(t.sims_done >= num_simulations for t in active):
                active = [t for t in active if t.sims_done < num_simulations]


def run_rounds(
    trees: list[Tree], env: Any, policy: Policy, *, num_simulations: int, two_player: bool, discount: float
) -> None:
    """Run ``num_simulations`` simulations on every tree, batching all leaf expansions of a round."""
    _Rounds(env, policy, two_player=two_player, discount=discount).run(trees, num_simulations)


def completed_root_q(root: Node, visits: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Root Q per action, unvisited ones completed with the root's search value (``visits`` and ``sums``: the
    root's ``_arrays()``, which the caller already has)."""
    return np.where(visits > 0, sums / np.maximum(visits, 1), root.mean_value)
