"""`make bench`: how fast is tree_search's batched PUCT, and how much of a network-driven search is overhead?

1. Simulations/s on 9x9 Go (OpenSpiel ``go``, board_size=9) with a uniform evaluator (uniform prior over the
   legal moves, value 0): ``tree_search.search`` side by side with OpenSpiel's own Python MCTS
   (``open_spiel.python.algorithms.mcts.MCTSBot`` with a uniform ``Evaluator`` subclass, no rollouts, solve=False),
   same positions, same simulations per move, same process. Target (issue #14): ours >= 3x OpenSpiel's. The same
   measurement runs on the baseline commit (``--baseline``, exported with ``git archive``; default main before
   the speed work), in worker subprocesses alternating with ours, so the speed-up over the old code is measured
   in the same run.
2. The share of wall time spent outside the evaluator when ``expand`` runs a small torch conv net on the
   OpenSpiel observation tensor, 64 roots searched together (this tree only). Target: <= 25%.

Usage: python benchmarks/bench_tree_search.py [--sims 200 800] [--positions 8] [--repeats 3] [--rounds 2]
       [--roots 64] [--net-sims 32] [--channels 32 64] [--threads N] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import pyspiel
from _baseline import BASELINE, ROOT, baseline_tree, median, run_worker
from open_spiel.python.algorithms import mcts as os_mcts

import tree_search
from tree_search import Expansion, Transition


def puct_search(roots, env, sims: int, **kwargs):
    """PUCT search with this tree's API or the baseline's (``search(..., num_simulations=)``)."""
    if hasattr(tree_search, "PuctConfig"):
        return tree_search.search(roots, env, tree_search.PuctConfig(sims), **kwargs)
    return tree_search.search(roots, env, num_simulations=sims, **kwargs)


def go_positions(game: pyspiel.Game, count: int, seed: int) -> list[pyspiel.State]:
    """Positions after 0..40 uniformly random (non-pass when possible) moves, a fixed seed."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        state = game.new_initial_state()
        for _ in range(int(rng.integers(0, 41))):
            legal = [
                a for a in state.legal_actions() if a != game.num_distinct_actions() - 1
            ] or state.legal_actions()
            state.apply_action(int(rng.choice(legal)))
            if state.is_terminal():
                break
        if not state.is_terminal():
            out.append(state)
    return out


class GoEnv:
    """The SearchEnv for OpenSpiel Go: two-player, reward = the mover's return at terminal states.

    ``evaluate=None`` is the uniform evaluator (uniform prior over legal moves, value 0), the same work as
    :class:`UniformEvaluator` does for OpenSpiel's MCTS. ``evaluate=f`` calls ``f(states)`` and accumulates the
    time spent in it.
    """

    def __init__(self, evaluate=None) -> None:
        self.evaluate = evaluate
        self.expand_seconds = 0.0
        self.expand_calls = 0
        self.leaves = 0

    def expand(self, states):
        if self.evaluate is None:
            out = []
            for state in states:
                legal = state.legal_actions()
                prior = np.empty(len(legal))
                prior.fill(1.0 / len(legal))
                out.append(Expansion(legal, prior, 0.0))
            return out
        t0 = time.perf_counter()
        out = self.evaluate(states)
        self.expand_seconds += time.perf_counter() - t0
        self.expand_calls += 1
        self.leaves += len(states)
        return out

    def step(self, state, action):
        child = state.child(action)
        if child.is_terminal():
            return Transition(child, float(child.returns()[state.current_player()]), True)
        return Transition(child, 0.0, False)


class UniformEvaluator(os_mcts.Evaluator):
    """OpenSpiel's evaluator interface, doing the same work as GoEnv's uniform expand: no rollouts."""

    def evaluate(self, state):
        return np.zeros(2) if not state.is_terminal() else np.asarray(state.returns())

    def prior(self, state):
        legal = state.legal_actions(state.current_player())
        return [(a, 1.0 / len(legal)) for a in legal]


def bench_uniform(game, positions, sims: int, repeats: int) -> tuple[float, float, float]:
    """Simulations/s of (ours one root at a time, OpenSpiel, ours all positions batched).

    The machine is shared, so wall time is noisy: each search is timed in process CPU time (single-threaded
    work), ours and OpenSpiel's interleaved position by position, and each position's time is the minimum over
    ``repeats`` (the least-disturbed run); rates are total simulations / summed minimum times.
    """
    env = GoEnv()
    bot = os_mcts.MCTSBot(
        game,
        uct_c=1.25,
        max_simulations=sims,
        evaluator=UniformEvaluator(),
        solve=False,
        random_state=np.random.RandomState(0),
        child_selection_fn=os_mcts.SearchNode.puct_value,
    )
    clock = time.process_time
    ours = np.full(len(positions), np.inf)
    theirs = np.full(len(positions), np.inf)
    batched = np.inf
    for _ in range(repeats):
        for i, state in enumerate(positions):
            t0 = clock()
            puct_search([state], env, sims, two_player=True, value_bounds=(-1.0, 1.0), rng=0)
            t1 = clock()
            bot.mcts_search(state)
            t2 = clock()
            ours[i] = min(ours[i], t1 - t0)
            theirs[i] = min(theirs[i], t2 - t1)
        t0 = clock()
        puct_search(positions, env, sims, two_player=True, value_bounds=(-1.0, 1.0), rng=0)
        batched = min(batched, clock() - t0)
    total = len(positions) * sims
    return total / float(ours.sum()), total / float(theirs.sum()), total / batched


def bench_network(game, roots, sims: int, repeats: int, channels: int) -> dict:
    """Wall-time share outside ``expand`` when it runs a small conv net (torch is imported here only)."""
    import torch

    class SmallConvNet(torch.nn.Module):
        """3 conv layers (4→C→C→C, 3x3) + policy and value heads on the [4, 9, 9] observation tensor."""

        def __init__(self, channels: int, num_actions: int) -> None:
            super().__init__()
            c = channels
            self.trunk = torch.nn.Sequential(
                torch.nn.Conv2d(4, c, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(c, c, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(c, c, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Flatten(),
            )
            self.policy = torch.nn.Linear(c * 81, num_actions)
            self.value = torch.nn.Linear(c * 81, 1)

        def forward(self, x):
            h = self.trunk(x)
            return self.policy(h), torch.tanh(self.value(h)).squeeze(-1)

    @torch.inference_mode()
    def evaluate(states):
        obs = torch.from_numpy(np.asarray([s.observation_tensor() for s in states], dtype=np.float32))
        logits, values = net(obs.view(-1, 4, 9, 9))
        logits, values = logits.numpy().astype(np.float64), values.numpy().astype(np.float64)
        out = []
        for i, state in enumerate(states):
            legal = state.legal_actions()
            z = logits[i, legal]
            p = np.exp(z - z.max())
            out.append(Expansion(legal, p / p.sum(), float(values[i])))
        return out

    torch.manual_seed(0)
    net = SmallConvNet(channels, game.num_distinct_actions()).eval()
    env = GoEnv(evaluate)
    puct_search(roots[:2], env, 4, two_player=True)  # warm up torch
    shares, rates, per_call = [], [], []
    for _ in range(repeats):
        env.expand_seconds, env.expand_calls, env.leaves = 0.0, 0, 0
        t0 = time.perf_counter()
        puct_search(roots, env, sims, two_player=True, value_bounds=(-1.0, 1.0), rng=0)
        total = time.perf_counter() - t0
        shares.append(1.0 - env.expand_seconds / total)
        rates.append(len(roots) * sims / total)
        per_call.append(env.expand_seconds / env.expand_calls)
    return {
        "outside_share": float(np.median(shares)),
        "sims_per_s": float(np.median(rates)),
        "expand_ms": 1e3 * float(np.median(per_call)),
        "leaves_per_call": env.leaves / env.expand_calls,
    }


def worker(spec: dict) -> dict:
    """Part 1 with whichever tree_search is on the path: ``{sims: [ours, OpenSpiel, ours batched]}``, and
    whether its compiled core ran."""
    game = pyspiel.load_game("go", {"board_size": 9})
    positions = go_positions(game, spec["positions"], seed=0)
    out: dict = {str(sims): bench_uniform(game, positions, sims, spec["repeats"]) for sims in spec["sims"]}
    out["compiled"] = bool(getattr(tree_search, "compiled", False))
    return out


def report_uniform(args: argparse.Namespace, spec: dict) -> None:
    """Part 1: worker runs of ours and the baseline, alternating; per round rates, medians and ratios."""
    trees = {"ours": ROOT}
    with baseline_tree(args.baseline) as base:
        if base is not None:
            trees[f"baseline {args.baseline}"] = base
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
            for name, code in order:
                runs[name].append(run_worker(__file__, code, spec))
    for name, results in runs.items():
        kinds = sorted({"compiled core (mypyc)" if res["compiled"] else "pure Python" for res in results})
        print(f"    {name}: tree_search ran as {' and '.join(kinds)}")
    for sims in map(str, args.sims):
        for name, results in runs.items():
            rates = [res[sims][0] for res in results]
            ratios = [res[sims][0] / res[sims][1] for res in results]
            line = (
                f"    {sims:>4} sims/move, {name:>16}: {median(rates):7.0f} sims/s (rounds: "
                f"{', '.join(f'{x:.0f}' for x in rates)}) | OpenSpiel MCTSBot in the same processes "
                f"{median([res[sims][1] for res in results]):7.0f} sims/s | ratio median {median(ratios):4.2f}x "
                f"(min {min(ratios):4.2f}x)"
            )
            if name == "ours":
                line += f" (target >= 3x: {'met' if median(ratios) >= 3 else 'MISSED'})"
                line += f" | {args.positions} roots batched {median([res[sims][2] for res in results]):7.0f} sims/s"
            print(line)
        if len(runs) == 2:
            speedups = [a[sims][0] / b[sims][0] for a, b in zip(*runs.values())]
            print(
                f"    {sims:>4} sims/move: ours / baseline {median(speedups):4.2f}x (min {min(speedups):4.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sims", type=int, nargs="+", default=[200, 800], help="simulations per move (part 1)"
    )
    parser.add_argument("--positions", type=int, default=8, help="9x9 positions searched (part 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per position (part 1: the minimum)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating worker runs of each tree (part 1)")
    parser.add_argument("--roots", type=int, default=64, help="roots searched together (part 2)")
    parser.add_argument("--net-sims", type=int, default=32, help="simulations per root (part 2)")
    parser.add_argument(
        "--channels", type=int, nargs="*", default=[32, 64], help="conv channels (part 2; none: skip)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: half the cores)")
    parser.add_argument(
        "--baseline", default=BASELINE, help="the commit to compare with (default: %(default)s)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    print(
        f"tree_search benchmark — python {platform.python_version()}, numpy {np.__version__}, "
        f"{len(os.sched_getaffinity(0))} CPU cores available; tree_search.compiled = {tree_search.compiled} "
        f"({tree_search._native.status})"
    )
    spec = {"sims": args.sims, "positions": args.positions, "repeats": args.repeats}
    print(
        f"\n[1] 9x9 Go, uniform evaluator (uniform prior over legal moves, value 0); {args.positions} positions "
        f"(0-40 random moves in); process CPU time, per position the minimum of {args.repeats} interleaved repeats "
        f"(ours, OpenSpiel); {args.rounds} rounds of worker processes, ours and the baseline alternating"
    )
    report_uniform(args, spec)

    if not args.channels:
        return
    import torch

    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // 2)
    torch.set_num_threads(threads)
    game = pyspiel.load_game("go", {"board_size": 9})
    roots = go_positions(game, args.roots, seed=1)
    print(
        f"\n[2] 9x9 Go, {args.roots} roots searched together, {args.net_sims} simulations each; expand = a 3-layer "
        f"conv net + policy/value heads (torch {torch.__version__}, {threads} threads) on the [4, 9, 9] observation "
        f"tensor; wall time, median of {args.repeats} repeats"
    )
    for channels in args.channels:
        net = bench_network(game, roots, args.net_sims, args.repeats, channels)
        verdict = "met" if net["outside_share"] <= 0.25 else "MISSED"
        print(
            f"    {channels:3d} channels: evaluator {net['expand_ms']:5.1f} ms per call ({net['leaves_per_call']:.1f} "
            f"leaves), {net['sims_per_s']:6.0f} sims/s; wall time outside the evaluator (selection, env.step, "
            f"backup): {100 * net['outside_share']:4.1f}% (target <= 25%: {verdict})"
        )


if __name__ == "__main__":
    main()
