"""`make bench`: 5x5 AlphaZero self-play speed, this tree against the code before the speed work, in one run.

Targets (issue #14): positions/s >= 2x the baseline's; search bookkeeping <= 15% of self-play time.

* The workload is the 5x5 recipe (``recipes/go/5x5.yaml``): its net (freshly initialised, seed 0), its self-play
  section (Gumbel, 32 simulations, 32 games in flight), one iteration of ``games_per_iteration`` games, its torch
  threads. Positions/s = moves played / seconds of ``play_selfplay_games``.
* The baseline (``--baseline``, default main before the work) is exported with ``git archive``; every measurement
  runs in a fresh subprocess with one tree on ``PYTHONPATH``, ours and the baseline alternating for ``--rounds``
  rounds, each after a two-game warm-up. Timed in process CPU time (the machine is shared: CPU time is what the
  process itself spent; wall time is printed beside it). The ratio is reported per round, then its median and
  minimum.
* Where the time goes (``--rounds`` more instrumented runs of each tree, shares of their wall time, the median
  over runs; ours also with the default net, ``NetSection``'s 4 blocks x 32 filters, which the issue's
  bookkeeping target names, beside the 5x5 recipe's 3 blocks): the net's forward pass
  (``predict``), the rest of ``env.expand`` (input planes, legal moves, priors), ``env.step`` (the rules), search
  bookkeeping (time inside ``tree_search``'s search outside ``env.expand`` and ``env.step``), and the game loop
  around the searches.

Usage: python benchmarks/bench_go_selfplay.py [--rounds 3] [--games N] [--recipe recipes/go/5x5.yaml]
       [--baseline REV]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import yaml
from _baseline import BASELINE, ROOT, baseline_tree, median, run_worker

PARTS = ("net forward", "rest of expand", "rules (env.step)", "search bookkeeping", "game loop")


# --------------------------------------------------------------------------------------------------- the worker
def _timed(fn, totals: dict, key: str):
    clock = (
        time.perf_counter
    )  # ~50 ns a read; process_time is a system call, ~10x that, under ~70k step calls

    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += clock() - t0

    return wrapper


def worker(spec: dict) -> dict:
    """Play one iteration of self-play with whichever ``go_baseline`` is on the path; time it."""
    import numpy as np
    import torch

    import go_baseline.selfplay as sp
    from go_baseline.config import NetSection, SelfPlaySection
    from go_baseline.network import NetConfig, PolicyValueNet

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    board, net_spec = spec["board"], spec["net"]
    if net_spec == "default":  # the network's documented defaults (NetSection), not the recipe's
        net_spec = {f.name: getattr(NetSection(), f.name) for f in dataclasses.fields(NetSection)}
    net = PolicyValueNet(NetConfig(board["size"], **net_spec))
    known = {f.name for f in dataclasses.fields(SelfPlaySection)}
    cfg = SelfPlaySection(**{k: v for k, v in spec["selfplay"].items() if k in known})
    totals = dict.fromkeys(("predict", "expand", "step", "search"), 0.0)
    if spec["instrument"]:
        net.predict = _timed(net.predict, totals, "predict")
        sp.GoSearchEnv.expand = _timed(sp.GoSearchEnv.expand, totals, "expand")
        sp.GoSearchEnv.step = _timed(sp.GoSearchEnv.step, totals, "step")
        for name in ("search", "gumbel_search"):  # the baseline called gumbel_search or search
            if hasattr(sp, name):
                setattr(sp, name, _timed(getattr(sp, name), totals, "search"))

    def play(num_games: int, seed: int):
        return sp.play_selfplay_games(
            net,
            num_games=num_games,
            board_size=board["size"],
            komi=board["komi"],
            history=net_spec["history"],
            cfg=cfg,
            rng=np.random.default_rng(seed),
            max_game_length=board.get("max_game_length"),
        )

    play(2, seed=spec["seed"] + 1)  # warm-up: torch's first calls, caches
    for key in totals:
        totals[key] = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    _, stats = play(spec["games"], seed=spec["seed"])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    import tree_search

    compiled = bool(getattr(tree_search, "compiled", False))  # the baseline has no compiled core
    return {
        "moves": stats.moves,
        "evaluations": stats.evaluations,
        "cpu": cpu,
        "wall": wall,
        "compiled": compiled,
        **totals,
    }


# --------------------------------------------------------------------------------------------------- the parent
def _spec(recipe: Path, games: int | None) -> dict:
    data = yaml.safe_load(recipe.read_text())
    board = {"size": 5, "komi": 7.5, **data.get("board", {})}
    net = {"history": 4, "blocks": 4, "filters": 32, "value_hidden": 64, **data.get("net", {})}
    return {
        "board": board,
        "net": net,
        "selfplay": data.get("selfplay", {}),
        "threads": int(data.get("threads", 1)),
        "games": games or int(data.get("games_per_iteration", 32)),
        "seed": 0,
        "instrument": False,
    }


def _parts(r: dict) -> dict[str, float]:
    """Shares of the instrumented run's wall time (its parts are timed with perf_counter)."""
    expand_rest = r["expand"] - r["predict"]
    bookkeeping = r["search"] - r["expand"] - r["step"]
    loop = r["wall"] - r["search"]
    values = (r["predict"], expand_rest, r["step"], bookkeeping, loop)
    return {name: v / r["wall"] for name, v in zip(PARTS, values)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/go/5x5.yaml")
    parser.add_argument(
        "--games", type=int, default=None, help="games per measurement (default: one iteration)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each tree")
    parser.add_argument(
        "--baseline", default=BASELINE, help="the commit to compare with (default: %(default)s)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    spec = _spec(args.recipe, args.games)
    sp = spec["selfplay"]
    print(
        f"Go self-play benchmark — python {platform.python_version()}; {args.recipe.name}: "
        f"{spec['board']['size']}x{spec['board']['size']}, net {spec['net']}, search {sp.get('search')}, "
        f"{sp.get('num_simulations')} simulations, {sp.get('games_in_flight')} games in flight, "
        f"{spec['games']} games per measurement, torch threads {spec['threads']}; process CPU time"
    )
    trees = {"ours": ROOT}
    with baseline_tree(args.baseline) as base:
        if base is not None:
            trees[f"baseline {args.baseline}"] = base
        rates: dict[str, list[float]] = {name: [] for name in trees}
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
            line = []
            for name, code in order:
                res = run_worker(__file__, code, spec)
                rates[name].append(res["moves"] / res["cpu"])
                line.append(
                    f"{name}{' (compiled core)' if res['compiled'] else ''}: {res['moves']} moves, "
                    f"{res['cpu']:.1f} s CPU ({res['wall']:.1f} s wall), {rates[name][-1]:.0f} positions/s"
                )
            print(f"  round {r + 1}: " + " | ".join(line))
        if len(trees) == 2:
            ratios = [a / b for a, b in zip(*rates.values())]
            verdict = "met" if median(ratios) >= 2.0 else "MISSED"
            print(
                f"positions/s, ours / baseline: median {median(ratios):.2f}x, min {min(ratios):.2f}x over "
                f"{len(ratios)} rounds (target >= 2x: {verdict})"
            )
        print(
            f"where the time goes (shares of the wall time of instrumented runs, {args.rounds} of each tree, "
            "median per part; the wrappers add ~1%):"
        )
        shares: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
            for name, code in order:
                shares[name].append(_parts(run_worker(__file__, code, {**spec, "instrument": True})))
        default_net = [
            _parts(run_worker(__file__, ROOT, {**spec, "net": "default", "instrument": True}))
            for _ in range(args.rounds)
        ]
        rows = [(f"{name}, recipe net", runs) for name, runs in shares.items()]
        rows.insert(1, ("ours, default net", default_net))
        for name, runs in rows:
            parts = {k: median([run[k] for run in runs]) for k in PARTS}
            text = ", ".join(f"{k} {100 * v:4.1f}%" for k, v in parts.items())
            note = ""
            if name.startswith("ours"):
                book = ", ".join(f"{100 * run['search bookkeeping']:.1f}%" for run in runs)
                note = f"  (bookkeeping per run: {book})"
                if name == "ours, default net":
                    ok = "met" if parts["search bookkeeping"] <= 0.15 else "MISSED"
                    note += f" (target <= 15% with the default net: {ok})"
            print(f"  {name:>27}: {text}{note}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
