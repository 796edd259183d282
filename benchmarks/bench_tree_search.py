"""`make bench`: how fast is tree_search's batched PUCT, and how much of a network-driven search is overhead?

1. Simulations/s on 9x9 Go (OpenSpiel ``go``, board_size=9) with a uniform evaluator (uniform prior over the
   legal moves, value 0): ``tree_search.search`` side by side with OpenSpiel's own Python MCTS
   (``open_spiel.python.algorithms.mcts.MCTSBot`` with a uniform ``Evaluator`` subclass, no rollouts, solve=False),
   same positions, same simulations per move, same process. Target: ours >= 2x.
2. The share of wall time spent outside the evaluator when ``expand`` runs a small torch conv net on the
   OpenSpiel observation tensor, 64 roots searched together. Target: <= 25%.

Usage: python benchmarks/bench_tree_search.py [--sims 200 800] [--positions 8] [--repeats 3] [--roots 64]
       [--net-sims 32] [--channels 32 64] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pyspiel
import torch
from open_spiel.python.algorithms import mcts as os_mcts

from tree_search import Expansion, PuctConfig, Transition, search


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
            search([state], env, PuctConfig(sims), two_player=True, value_bounds=(-1.0, 1.0), rng=0)
            t1 = clock()
            bot.mcts_search(state)
            t2 = clock()
            ours[i] = min(ours[i], t1 - t0)
            theirs[i] = min(theirs[i], t2 - t1)
        t0 = clock()
        search(positions, env, PuctConfig(sims), two_player=True, value_bounds=(-1.0, 1.0), rng=0)
        batched = min(batched, clock() - t0)
    total = len(positions) * sims
    return total / float(ours.sum()), total / float(theirs.sum()), total / batched


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


def make_net_evaluate(net: SmallConvNet, num_actions: int):
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

    return evaluate


def bench_network(game, roots, sims: int, repeats: int, channels: int) -> dict:
    torch.manual_seed(0)
    net = SmallConvNet(channels, game.num_distinct_actions()).eval()
    env = GoEnv(make_net_evaluate(net, game.num_distinct_actions()))
    search(roots[:2], env, PuctConfig(4), two_player=True)  # warm up torch
    shares, rates, per_call = [], [], []
    for _ in range(repeats):
        env.expand_seconds, env.expand_calls, env.leaves = 0.0, 0, 0
        t0 = time.perf_counter()
        search(roots, env, PuctConfig(sims), two_player=True, value_bounds=(-1.0, 1.0), rng=0)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sims",
        type=int,
        nargs="+",
        default=[200, 800],
        help="simulations per move (uniform evaluator part)",
    )
    parser.add_argument("--positions", type=int, default=8, help="9x9 positions searched (uniform part)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--roots", type=int, default=64, help="roots searched together (network part)")
    parser.add_argument("--net-sims", type=int, default=32, help="simulations per root (network part)")
    parser.add_argument(
        "--channels", type=int, nargs="+", default=[32, 64], help="conv channels of the small network"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: half the available cores, at least 1)",
    )
    args = parser.parse_args()

    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // 2)
    torch.set_num_threads(threads)
    game = pyspiel.load_game("go", {"board_size": 9})
    print(
        f"tree_search benchmark — python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} CPU cores available, torch threads {threads}"
    )

    positions = go_positions(game, args.positions, seed=0)
    print(
        f"\n[1] 9x9 Go, uniform evaluator (uniform prior over legal moves, value 0); {len(positions)} positions "
        f"(0-40 random moves in); process CPU time, per position the minimum of {args.repeats} interleaved repeats"
    )
    for sims in args.sims:
        ours, theirs, batched = bench_uniform(game, positions, sims, args.repeats)
        verdict = "met" if ours / theirs >= 2 else "MISSED"
        print(
            f"    {sims:4d} sims/move: tree_search.search {ours:7.0f} sims/s | OpenSpiel MCTSBot {theirs:7.0f} sims/s"
            f" | ratio {ours / theirs:4.2f}x (target >= 2x: {verdict}) | ours, {len(positions)} roots batched "
            f"{batched:7.0f} sims/s"
        )

    roots = go_positions(game, args.roots, seed=1)
    print(
        f"\n[2] 9x9 Go, {args.roots} roots searched together, {args.net_sims} simulations each; expand = a 3-layer "
        f"conv net + policy/value heads (torch, {threads} threads) on the [4, 9, 9] observation tensor; wall time, "
        f"median of {args.repeats} repeats"
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
