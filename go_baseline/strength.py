"""``go-baseline eval --run RUN``: the strength curve of one run — win rate against GnuGo levels over training.

For each chosen checkpoint of the run and each GnuGo level, a match of ``games`` games with colours alternating
(so both colours, equally often), counted under the run's ``eval.rules`` (Chinese by default: GnuGo's dead
stones removed). Each match is appended to ``RUN/strength.jsonl`` as soon as it ends — a killed evaluation
resumes and skips the matches already there — and the curve is redrawn after every match:

* ``strength.csv`` — one row per (checkpoint, level): iteration, SGD steps, self-play games, wall hours of
  training, wins / losses / draws, the win rate (a jigo counts half) with its 95 % Wilson interval
  (:func:`relabel_rl.report.wilson_interval`), and the same by colour;
* ``strength.png`` and ``strength.pdf`` — win rate against self-play games, one line per level with its Wilson
  band, and thin dashed (as black) and dotted (as white) lines; below it the mean final margin from our side
  (points, after komi, under the run's rules) with its t-interval — it moves while the win rate still reads 0.

GnuGo is deterministic for a seed, and so is our search, so game ``k`` of a match runs under GnuGo seed
``seed + k`` (see :class:`go_baseline.arena.GnuGoPlayer`); ``distinct_games`` counts what that bought.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from go_baseline.train import list_checkpoints, load_net
from relabel_rl.report import mean_ci, wilson_interval
from relabel_rl.rundir import jsonable, read_metrics

__all__ = ["STRENGTH_CSV", "STRENGTH_JSONL", "choose_checkpoints", "strength_curve", "write_strength_report"]

STRENGTH_JSONL = "strength.jsonl"
STRENGTH_CSV = "strength.csv"
_CSV_FIELDS = [
    "iteration", "step", "selfplay_games", "wall_hours", "gnugo_level", "num_simulations", "rules", "games",
    "wins", "losses", "draws", "win_rate", "ci95_low", "ci95_high", "games_as_black", "win_rate_as_black",
    "games_as_white", "win_rate_as_white", "mean_margin", "margin_ci95_low", "margin_ci95_high", "distinct_games",
]  # fmt: skip


def choose_checkpoints(checkpoints: Sequence[Path], every: int) -> list[Path]:
    """Every ``every``-th checkpoint, always with the first and the last."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    n = len(checkpoints)
    return [c for i, c in enumerate(checkpoints) if i % every == 0 or i == n - 1]


def wall_hours_by_iteration(run: Path) -> dict[int, float]:
    """Training wall time (hours, summed over resumed sessions) at the end of each iteration of ``run``."""
    out, offset, last = {0: 0.0}, 0.0, 0.0
    for rec in read_metrics(run / "metrics.jsonl"):
        if rec.get("kind") != "train" or "session_seconds" not in rec:
            continue
        seconds = float(rec["session_seconds"])
        if seconds < last:  # a new session started: its clock restarted
            offset += last
        last = seconds
        out[int(rec["iteration"])] = (offset + seconds) / 3600.0
    return out


def _match(cfg: Any, net: Any, name: str, level: int, games: int, sims: int, seed: int, sgf_dir: Path) -> Any:
    from go_baseline.arena import GnuGoPlayer, NetPlayer, play_match

    me = NetPlayer(
        net,
        history=net.cfg.history,
        num_simulations=sims,
        name=name,
        search=cfg.selfplay.search,
        max_considered=cfg.selfplay.max_considered,
        score_weight=cfg.selfplay.score_weight,
    )
    opp = GnuGoPlayer(level, seed=seed)
    try:
        return play_match(
            me,
            opp,
            games=games,
            board_size=cfg.board.size,
            komi=cfg.board.komi,
            sgf_dir=sgf_dir,
            sgf_prefix=f"{name}_gnugo-L{level}",
            max_game_length=cfg.board.max_game_length,
            rules=cfg.eval.rules,
        )
    finally:
        opp.close()


def strength_curve(
    run: str | Path,
    *,
    levels: Sequence[int] = (1, 5, 10),
    games: int = 10,
    num_simulations: int | None = None,
    every: int = 1,
    seed: int = 0,
    on_match: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Play the matches of the curve that ``RUN/strength.jsonl`` lacks; returns every record of the curve.

    ``num_simulations`` defaults to the run's ``eval.num_simulations``. Raises FileNotFoundError for a directory
    without checkpoints and ValueError for bad settings, before any game.
    """
    from go_baseline.compare import read_yaml
    from go_baseline.config import GoConfig
    from go_baseline.gnugo import find_gnugo
    from relabel_rl.config import load_config

    run = Path(run)
    ckpts = list_checkpoints(run / "checkpoints")
    if not ckpts:
        raise FileNotFoundError(f"{run} has no checkpoints/ckpt_*.pt: not a go-baseline run directory")
    if games < 1 or not levels or any(not 0 <= lv <= 10 for lv in levels):
        raise ValueError(
            f"need games >= 1 and GnuGo levels in [0, 10], got games={games}, levels={list(levels)}"
        )
    if find_gnugo() is None:
        raise FileNotFoundError("gnugo not found on PATH or in /usr/games; install it: apt-get install gnugo")
    cfg = load_config(GoConfig, data=read_yaml(run / "config.yaml"))
    sims = cfg.eval.num_simulations if num_simulations is None else num_simulations
    key = ("iteration", "gnugo_level", "num_simulations", "games", "rules")
    done = {tuple(r[k] for k in key) for r in read_metrics(run / STRENGTH_JSONL)}
    hours = wall_hours_by_iteration(run)
    for ckpt in choose_checkpoints(ckpts, every):
        net, meta = load_net(ckpt)
        for level in levels:
            if (meta["iteration"], level, sims, games, cfg.eval.rules) in done:
                continue
            res = _match(cfg, net, ckpt.stem, level, games, sims, seed, run / "sgf" / "strength")
            s = res.summary()
            margins = [g.score * (1 if b else -1) for g, b in zip(res.games, res.player_was_black)]
            margin = mean_ci([m for m in margins if m == m])  # NaN after a resignation
            rec = {
                "iteration": meta["iteration"],
                "step": meta.get("step", 0),
                "selfplay_games": meta.get("games", 0),
                "wall_hours": hours.get(int(meta["iteration"]), float("nan")),
                "gnugo_level": level,
                "num_simulations": sims,
                "rules": cfg.eval.rules,
                "games": s["eval_games"],
                "ci95_low": s["ci95"][0],
                "ci95_high": s["ci95"][1],
                "mean_margin": margin.mean,
                "margin_ci95_low": margin.low,
                "margin_ci95_high": margin.high,
                **{k: s[k] for k in _CSV_FIELDS if k in s and k != "games"},
            }
            with open(run / STRENGTH_JSONL, "a") as f:
                f.write(json.dumps(jsonable(rec)) + "\n")
            if on_match is not None:
                on_match(rec)
    return read_metrics(run / STRENGTH_JSONL)


def write_strength_report(run: str | Path, records: Sequence[dict] | None = None) -> list[Path]:
    """``strength.csv``, ``strength.png`` and ``strength.pdf`` in ``run`` from its curve records."""
    run = Path(run)
    recs = sorted(
        read_metrics(run / STRENGTH_JSONL) if records is None else records,
        key=lambda r: (r["gnugo_level"], r["selfplay_games"], r["iteration"]),
    )
    with open(run / STRENGTH_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(recs)
    return [run / STRENGTH_CSV, *_plot(recs, run / "strength")]


def _plot(recs: Sequence[dict], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax, axm) = plt.subplots(2, 1, figsize=(6.4, 6.4), dpi=110, sharex=True, height_ratios=(3, 2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, level in enumerate(sorted({r["gnugo_level"] for r in recs})):
        mine = [r for r in recs if r["gnugo_level"] == level]
        xs = [r["selfplay_games"] for r in mine]
        colour = colours[i % len(colours)]
        ax.plot(xs, [r["win_rate"] for r in mine], "o-", color=colour, label=f"GnuGo level {level}")
        cis = [wilson_interval(r["wins"] + 0.5 * r["draws"], r["games"]) for r in mine]
        ax.fill_between(
            xs, [c.low for c in cis], [c.high for c in cis], color=colour, alpha=0.15, linewidth=0
        )
        for colour_key, style in (("black", "--"), ("white", ":")):
            ax.plot(xs, [r[f"win_rate_as_{colour_key}"] for r in mine], style, color=colour, linewidth=0.8)
        axm.plot(xs, [r.get("mean_margin", float("nan")) for r in mine], "o-", color=colour)
        lows = [r.get("margin_ci95_low", float("nan")) for r in mine]
        axm.fill_between(xs, lows, [r.get("margin_ci95_high", float("nan")) for r in mine], color=colour,
                         alpha=0.15, linewidth=0)  # fmt: skip
    ax.plot([], [], "k--", linewidth=0.8, label="as black")
    ax.plot([], [], "k:", linewidth=0.8, label="as white")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("win rate (jigo = ½)")
    games = sorted({r["games"] for r in recs})
    sims = sorted({r["num_simulations"] for r in recs})
    ax.set_title(
        f"Strength against GnuGo ({', '.join(map(str, games))} games per point, colours alternating, "
        f"{'/'.join(map(str, sims))} simulations)\nbands: 95 % Wilson interval (win rate), t-interval (margin)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    axm.axhline(0.0, color="grey", linewidth=0.8)
    axm.set_ylabel("mean margin (points, ours)")
    axm.set_xlabel("self-play games")
    for a in (ax, axm):
        a.grid(True, alpha=0.3)
    fig.tight_layout()
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p)
    plt.close(fig)
    return out
