"""``go-baseline selfplay | train | eval | gtp | compare`` — every subcommand takes a recipe plus overrides."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from relabel_rl.config import ConfigError, load_config
from relabel_rl.environment import quiet_broken_pipe
from relabel_rl.rundir import jsonable

__all__ = ["main"]


def _load(recipe: str | None, overrides: list[str]):
    from go_baseline.config import GoConfig

    return load_config(GoConfig, recipe, overrides)


def _cmd_train(a: argparse.Namespace, overrides: list[str]) -> int:
    from go_baseline.loop import run

    if a.algo is not None:
        overrides = [*overrides, "--train.algo", a.algo]
        if not any(o.lstrip("-").split("=")[0] == "run_dir" for o in overrides):
            base = _load(a.recipe, [])
            stem = base.run_dir[:-3] if base.run_dir.endswith(("-az", "-pg")) else base.run_dir
            overrides += ["--run_dir", f"{stem}-{a.algo}"]
    cfg = _load(a.recipe, overrides)
    last = run(cfg, progress=not a.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, once
        print(json.dumps(jsonable(last), indent=2))
    return 0


def _cmd_selfplay(a: argparse.Namespace, overrides: list[str]) -> int:
    """Play games with a checkpoint (or a fresh net) and report self-play throughput."""
    import numpy as np
    import torch

    from go_baseline.network import PolicyValueNet
    from go_baseline.selfplay import play_selfplay_games
    from go_baseline.sgf import game_to_sgf, write_sgf
    from go_baseline.train import load_net

    cfg = _load(a.recipe, overrides)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    net = (
        load_net(a.checkpoint)[0]
        if a.checkpoint
        else PolicyValueNet(cfg.net.net_config(cfg.board.size)).eval()
    )
    records, stats = play_selfplay_games(
        net,
        num_games=a.games,
        board_size=cfg.board.size,
        komi=cfg.board.komi,
        history=cfg.net.history,
        cfg=cfg.selfplay,
        rng=np.random.default_rng(cfg.seed),
        max_game_length=cfg.board.max_game_length,
    )
    if a.sgf_dir:
        for i, r in enumerate(records):
            write_sgf(
                Path(a.sgf_dir) / f"selfplay_{i:04d}.sgf",
                game_to_sgf(
                    r.moves,
                    board_size=r.board_size,
                    komi=r.komi,
                    result=r.result,
                    score=r.score,
                    resigned=r.resigned,
                ),
            )
    out = {
        "games": stats.games,
        "moves": stats.moves,
        "seconds": round(stats.seconds, 3),
        "positions_per_second": round(stats.moves_per_second, 2),
        "net_evaluations_per_second": round(stats.evaluations / max(stats.seconds, 1e-9), 1),
        "num_simulations": cfg.selfplay.num_simulations,
        "games_in_flight": cfg.selfplay.games_in_flight,
        "board_size": cfg.board.size,
        "threads": cfg.threads,
    }
    print(json.dumps(jsonable(out), indent=2))
    return 0


def _cmd_strength(a: argparse.Namespace) -> int:
    """``eval --run RUN``: the strength curve against GnuGo levels (go_baseline.strength)."""
    import torch

    from go_baseline.strength import strength_curve, write_strength_report

    torch.set_num_threads(1)
    run = Path(a.run)

    def redraw(rec: dict) -> None:
        print(
            f"it {rec['iteration']:>5} ({rec['selfplay_games']} games) vs GnuGo L{rec['gnugo_level']}: "
            f"{rec['win_rate']:.0%} [{rec['ci95_low']:.0%}, {rec['ci95_high']:.0%}] of {rec['games']}",
            flush=True,
        )
        write_strength_report(run)

    try:
        strength_curve(
            run,
            levels=a.gnugo_levels,
            games=a.games or 10,
            num_simulations=a.simulations,
            every=a.every,
            seed=a.seed,
            on_match=redraw,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in write_strength_report(run):
        print(p)
    return 0


def _cmd_eval(a: argparse.Namespace, overrides: list[str]) -> int:
    import torch

    from go_baseline.arena import GnuGoPlayer, NetPlayer, RandomPlayer, play_match
    from go_baseline.deadstones import make_judge
    from go_baseline.train import load_net

    if (a.run is None) == (a.checkpoint is None):
        print(
            "error: eval needs exactly one of --checkpoint (one match) and --run (the strength curve)",
            file=sys.stderr,
        )
        return 2
    if a.run is not None:
        return _cmd_strength(a)
    if a.recipe is None:
        print("error: eval --checkpoint needs the recipe the checkpoint was trained with", file=sys.stderr)
        return 2
    cfg = _load(a.recipe, overrides)
    rules = a.rules or cfg.eval.rules
    judge = make_judge(a.dead_stones or cfg.eval.dead_stones)
    torch.set_num_threads(cfg.threads)
    net, _meta = load_net(a.checkpoint)
    sims = cfg.eval.num_simulations if a.simulations is None else a.simulations
    me = NetPlayer(
        net,
        history=net.cfg.history,
        num_simulations=sims,
        name=Path(a.checkpoint).stem,
        search=cfg.selfplay.search,
        max_considered=cfg.selfplay.max_considered,
        score_weight=cfg.selfplay.score_weight,
    )
    if a.opponent == "random":
        opp = RandomPlayer(seed=cfg.seed)
    elif a.opponent == "gnugo":
        opp = GnuGoPlayer(a.gnugo_level if a.gnugo_level is not None else cfg.eval.gnugo_level, seed=cfg.seed)
    else:
        onet, _ = load_net(a.opponent)
        opp = NetPlayer(
            onet,
            history=onet.cfg.history,
            num_simulations=sims,
            name=Path(a.opponent).stem,
            search=cfg.selfplay.search,
            max_considered=cfg.selfplay.max_considered,
            score_weight=cfg.selfplay.score_weight,
        )
    try:
        res = play_match(
            me,
            opp,
            games=a.games or cfg.eval.games,
            board_size=net.cfg.board_size,
            komi=cfg.board.komi,
            sgf_dir=a.sgf_dir,
            sgf_prefix=f"{me.name}_vs_{opp.name}",
            player_colors=a.colors,
            max_game_length=cfg.board.max_game_length,
            rules=rules,
            judge=judge,
        )
    finally:
        opp.close()
        judge.close()
    summary = res.summary()
    scores = [g.score for g in res.games]  # counted under `rules`: 17.5 at komi 7.5 means all 25 points
    summary["scores_black_minus_white"] = scores
    summary["ended_by"] = [g.ended_by for g in res.games]
    summary["num_simulations"] = sims
    summary["komi"] = cfg.board.komi
    if a.target_score is not None:
        hit = [abs(s - a.target_score) < 1e-9 for s in scores]
        summary["target_score"] = a.target_score
        summary["target_hits"] = int(sum(hit))
    print(json.dumps(jsonable(summary), indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(jsonable(summary), indent=2))
    return 0


def _cmd_gtp(a: argparse.Namespace, overrides: list[str]) -> int:
    from go_baseline.gtp import GtpEngine

    try:
        engine = GtpEngine.from_checkpoint(
            a.checkpoint,
            num_simulations=a.simulations,
            threads=a.threads,
            rules=a.rules,
            dead_stones=a.dead_stones,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # one line, not a traceback, for a GUI's log
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        engine.serve(sys.stdin.buffer, sys.stdout.buffer)
    finally:
        engine.close()
    return 0


def _cmd_compare(a: argparse.Namespace, overrides: list[str]) -> int:
    from go_baseline.compare import compare

    out = compare(
        a.az,
        a.pg,
        out_dir=a.out,
        probe_positions=a.probe_positions,
        probe_games=a.probe_games,
        gnugo_level=a.gnugo_level,
        gnugo_games=a.gnugo_games,
        gnugo_every=a.gnugo_every,
        gnugo_simulations=a.gnugo_simulations,
    )
    print(f"report: {out / 'report.md'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """With ``recipe_keys=True`` (a subcommand taking a recipe), ``--help`` ends with every recipe key: type,
    default, range and help, generated from the config's fields (only when shown: it imports torch)."""

    def __init__(self, *args, recipe_keys: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recipe_keys = recipe_keys

    def format_help(self) -> str:
        if self.recipe_keys:
            from go_baseline.config import GoConfig
            from relabel_rl.config import config_help

            self.epilog = config_help(GoConfig)
        return super().format_help()


def _recipe_command(sub, name: str, help_: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        allow_abbrev=False,
        help=help_,
        description=f"{help_[0].upper()}{help_[1:]}. Any recipe key can be overridden: --section.key VALUE.",
        usage=f"go-baseline {name} RECIPE [options] [--section.key VALUE ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        recipe_keys=True,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="go-baseline", description=__doc__, allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    t = _recipe_command(sub, "train", "run (or resume) the self-play/train/eval loop of a recipe")
    t.add_argument("recipe")
    t.add_argument(
        "--algo",
        choices=["az", "pg"],
        help="shorthand for --train.algo; unless --run_dir is given, the run directory's -az/-pg suffix follows it",
    )
    t.add_argument("--quiet", action="store_true")
    s = _recipe_command(sub, "selfplay", "play self-play games and report positions/s")
    s.add_argument("recipe")
    s.add_argument("--checkpoint")
    s.add_argument("--games", type=int, default=32)
    s.add_argument("--sgf-dir")
    e = _recipe_command(
        sub,
        "eval",
        "a checkpoint against random, gnugo or another checkpoint; or (--run) a run's strength curve",
    )
    e.add_argument("recipe", nargs="?", help="the recipe (with --checkpoint)")
    e.add_argument("--checkpoint", help="one match: this checkpoint against --opponent")
    e.add_argument(
        "--run",
        help="the strength curve of this run directory: its checkpoints against GnuGo --gnugo-levels, both "
        "colours; writes strength.csv/.png/.pdf there (resumable)",
    )
    e.add_argument(
        "--gnugo-levels", type=int, nargs="+", default=[1, 5, 10], help="with --run (default 1 5 10)"
    )
    e.add_argument("--every", type=int, default=1, help="with --run: every k-th checkpoint (and the last)")
    e.add_argument(
        "--seed", type=int, default=0, help="with --run: GnuGo's seed for the first game of a match"
    )
    e.add_argument("--opponent", default="random", help="random | gnugo | PATH to a checkpoint")
    e.add_argument("--games", type=int, help="games per match (default: eval.games; 10 with --run)")
    e.add_argument("--gnugo-level", type=int)
    e.add_argument(
        "--simulations", type=int, help="search simulations per move (default: eval.num_simulations)"
    )
    e.add_argument("--rules", choices=["chinese", "tromp-taylor"], help="how games are counted (eval.rules)")
    e.add_argument(
        "--dead-stones",
        choices=["auto", "playout", "gnugo"],
        help="dead-stone judge without GnuGo in the game",
    )
    e.add_argument("--colors", choices=["alternate", "black", "white"], default="alternate")
    e.add_argument("--target-score", type=float, help="count games ending exactly at this score (e.g. 17.5)")
    e.add_argument("--sgf-dir")
    e.add_argument("--out")
    g = sub.add_parser("gtp", allow_abbrev=False, help="a GTP v2 engine on stdin/stdout")
    g.add_argument("--checkpoint", required=True)
    g.add_argument("--simulations", type=int, default=32, help="search simulations per move (>= 1)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (>= 1)")
    g.add_argument(
        "--rules",
        choices=["chinese", "tromp-taylor"],
        default="chinese",
        help="how final_score counts: chinese removes dead stones (default), tromp-taylor counts every stone",
    )
    g.add_argument(
        "--dead-stones",
        choices=["auto", "gnugo", "playout"],
        default="auto",
        help="who decides dead stones: GnuGo's final_status_list (auto: when installed) or Benson + playouts",
    )
    c = sub.add_parser("compare", allow_abbrev=False, help="AZ vs PG report from two run directories")
    c.add_argument("--az", nargs="+", required=True, help="AlphaZero run directories (one per seed)")
    c.add_argument("--pg", nargs="+", required=True, help="policy-gradient run directories (one per seed)")
    c.add_argument("--out", default=None, help="output directory (default: <first AZ run>/../compare)")
    c.add_argument("--probe-positions", type=int, default=64)
    c.add_argument("--probe-games", type=int, default=64)
    c.add_argument("--gnugo-level", type=int, help="also evaluate checkpoints against GnuGo at this level")
    c.add_argument("--gnugo-games", type=int, default=10)
    c.add_argument("--gnugo-every", type=int, default=8, help="every k-th checkpoint (and the last)")
    c.add_argument("--gnugo-simulations", type=int, default=8)
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_broken_pipe()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args, rest = _parser().parse_known_args(argv)
    try:
        return {
            "train": _cmd_train,
            "selfplay": _cmd_selfplay,
            "eval": _cmd_eval,
            "gtp": _cmd_gtp,
            "compare": _cmd_compare,
        }[args.cmd](args, rest)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
