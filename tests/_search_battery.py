"""A battery of searches, printed exactly: run as a script by tests/test_tree_search_compiled.py, once with the
compiled core and once with ``TREE_SEARCH_PURE_PYTHON=1``, and the two printouts compared.

Every float is printed as ``float.hex`` (bit for bit), with the whole searched tree of every root. The battery
covers PUCT (FPU variants, fixed and min-max bounds, Dirichlet noise, virtual loss), Gumbel (bounds, considered
counts, no noise), wide nodes (where the interpreted PUCT switches to NumPy), priors that need renormalising,
actions that are not ints, single-agent discounting, tree reuse, and 9x9 Go from OpenSpiel with a uniform and a
random-logit evaluator.
"""

from __future__ import annotations

import json
import sys
import zlib

import numpy as np

import tree_search
from tree_search import Expansion, GumbelConfig, PuctConfig, Transition, advance, search


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))  # not hash(): the same in every process


class RandomGame:
    """Two-player: 2-9 int actions, a random prior (some zero), random values and terminal rewards."""

    def __init__(self, unnormalised: bool = False) -> None:
        self.unnormalised = unnormalised

    def expand(self, states):
        out = []
        for s in states:
            r = _rng("expand", s)
            k = int(r.integers(2, 10))
            prior = r.random(k) ** 2
            prior[r.integers(k)] *= float(r.random() < 0.7)
            prior = prior / prior.sum()
            if self.unnormalised:  # within the tolerance: the search renormalises it
                prior = prior * (1 + 1e-5 * r.standard_normal())
            out.append(Expansion(list(range(k)), prior, float(r.uniform(-1, 1))))
        return out

    def step(self, state, action):
        child = (*state, action)
        r = _rng("step", child)
        terminal = len(child) >= 6 or r.random() < 0.1
        return Transition(child, float(r.uniform(-1, 1)) if terminal else 0.0, terminal)


class Wide:
    """Single-agent, 40 string actions (three with prior 0), depth 3."""

    def expand(self, states):
        out = []
        for s in states:
            r = _rng("wide", s)
            prior = r.random(40) ** 3
            prior[r.integers(40, size=3)] = 0.0
            out.append(Expansion([f"a{i}" for i in range(40)], prior / prior.sum(), float(r.uniform(0, 2))))
        return out

    def step(self, state, action):
        child = (*state, action)
        return Transition(child, float(_rng("reward", child).uniform(0, 1)), len(child) >= 3)


def dump_node(node) -> dict:
    out = {"N": node.visit_count, "W": float(node.value_sum).hex(), "terminal": node.is_terminal}
    out["value"] = None if node.value is None else float(node.value).hex()
    if node.actions is not None and len(node.actions):
        out["n"] = node.visit_counts.tolist()
        out["w"] = [x.hex() for x in node.value_sums.tolist()]
        out["prior"] = [x.hex() for x in node.prior.tolist()]
        out["children"] = {str(i): dump_node(c) for i, c in enumerate(node.children) if c is not None}
    return out


def dump(results) -> list:
    return [
        {
            "visit_counts": r.visit_counts.tolist(),
            "improved_policy": [x.hex() for x in r.improved_policy.tolist()],
            "q_values": [x.hex() for x in r.q_values.tolist()],
            "prior": [x.hex() for x in r.prior.tolist()],
            "root_value": r.root_value.hex(),
            "selected_index": r.selected_index,
            "tree": dump_node(r.root),
        }
        for r in results
    ]


def games() -> dict:
    runs = {}
    roots = [(s,) for s in range(6)]
    for n in (1, 7, 60):
        for fpu, reduction in [(None, 0.0), (None, 0.25), (0.0, 0.0), (1.5, 0.0)]:
            for bounds in [None, (-1.0, 1.0)]:
                for leaves, noise in [(1, 0.0), (1, 0.25), (3, 0.25)]:
                    config = PuctConfig(
                        n, fpu=fpu, fpu_reduction=reduction, leaves_per_round=leaves, dirichlet_fraction=noise
                    )
                    runs[
                        f"puct n={n} fpu={fpu} red={reduction} bounds={bounds} leaves={leaves} noise={noise}"
                    ] = dump(
                        search(
                            roots, RandomGame(n % 2 == 1), config, two_player=True, value_bounds=bounds, rng=n
                        )
                    )
        for m in (2, 16):
            for bounds in [None, (-1.0, 1.0)]:
                for scale in (0.0, 1.0):
                    config = GumbelConfig(n, max_num_considered_actions=m, gumbel_scale=scale)
                    runs[f"gumbel n={n} m={m} bounds={bounds} scale={scale}"] = dump(
                        search(roots, RandomGame(), config, two_player=True, value_bounds=bounds, rng=n)
                    )
    for n in (40, 300):
        for bounds in [None, (0.0, 3.0)]:
            runs[f"wide puct {n} {bounds}"] = dump(
                search(
                    [(), ("x",)],
                    Wide(),
                    PuctConfig(n, fpu_reduction=0.1),
                    discount=0.9,
                    value_bounds=bounds,
                    rng=3,
                )
            )
            runs[f"wide puct leaves {n} {bounds}"] = dump(
                search([()], Wide(), PuctConfig(n, leaves_per_round=8), value_bounds=bounds, rng=3)
            )
            runs[f"wide gumbel {n} {bounds}"] = dump(
                search([()], Wide(), GumbelConfig(n // 4), discount=0.9, value_bounds=bounds, rng=3)
            )
    env = RandomGame()
    for algorithm in ("puct", "gumbel"):  # tree reuse: a searched child becomes a root
        first = search(
            [(0,), (1,), (2,)], env, PuctConfig(60, dirichlet_fraction=0.25), two_player=True, rng=5
        )
        kids = [advance(r, int(np.argmax(r.visit_counts))) for r in first]
        kids = [k for k in kids if not k.is_terminal]
        config = PuctConfig(40, dirichlet_fraction=0.25) if algorithm == "puct" else GumbelConfig(16)
        runs[f"reuse {algorithm}"] = dump(search(kids, env, config, two_player=True, rng=6))
    return runs


def go() -> dict:
    import pyspiel

    game = pyspiel.load_game("go", {"board_size": 9})
    positions = []
    r = _rng("go")
    for length in (0, 12, 30):
        state = game.new_initial_state()
        for _ in range(length):
            legal = state.legal_actions()[:-1] or state.legal_actions()  # avoid passing
            state.apply_action(int(r.choice(legal)))
        positions.append(state)

    class Go:
        def __init__(self, uniform: bool) -> None:
            self.uniform = uniform

        def expand(self, states):
            out = []
            for s in states:
                legal = s.legal_actions()
                if self.uniform:
                    out.append(Expansion(legal, np.full(len(legal), 1.0 / len(legal)), 0.0))
                    continue
                g = _rng("net", s.history_str())
                z = g.standard_normal(len(legal))
                p = np.exp(z - z.max())
                out.append(Expansion(legal, p / p.sum(), float(np.tanh(g.standard_normal()))))
            return out

        def step(self, state, action):
            child = state.child(action)
            reward = float(child.returns()[state.current_player()]) if child.is_terminal() else 0.0
            return Transition(child, reward, child.is_terminal())

    return {
        "go uniform puct": dump(search(positions, Go(True), PuctConfig(200), two_player=True, value_bounds=(-1, 1), rng=0)),
        "go net puct": dump(search(positions, Go(False), PuctConfig(200, dirichlet_fraction=0.25), two_player=True, rng=1)),
        "go net gumbel": dump(search(positions, Go(False), GumbelConfig(32), two_player=True, rng=2)),
    }  # fmt: skip


if __name__ == "__main__":
    runs = games()
    if "--go" in sys.argv:
        runs.update(go())
    print(json.dumps({"compiled": tree_search.compiled, "runs": runs}, sort_keys=True))
