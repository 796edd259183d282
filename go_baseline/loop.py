"""The driver: iterate self-play → train → checkpoint → evaluate, in a run directory that survives ``kill -9``.

State lives on disk only: finished games (``games/``, written as each game ends), checkpoints (``checkpoints/``,
written after each iteration's training) and ``metrics.jsonl``. On restart the latest checkpoint gives the
iteration, step counter, optimiser and RNG state; games already on disk for the current iteration are kept and
only the missing ones are played. So no finished game is lost and the step counter continues.

Both arms run here (``train.algo``): ``az`` trains ``steps_per_iteration`` steps on the replay window after each
iteration's games; ``pg`` (see :mod:`go_baseline.pg`) plays the iteration in chunks of ``games_in_flight``
games and takes one REINFORCE step per chunk. After a resume in the middle of a PG iteration, chunks played
before the kill are trained on by the checkpointed policy (slightly off-policy; it affects at most one
iteration).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from go_baseline.arena import GnuGoPlayer, NetPlayer, Player, RandomPlayer, play_match
from go_baseline.config import GoConfig
from go_baseline.gnugo import find_gnugo
from go_baseline.pg import play_policy_games, records_to_batch, reinforce_loss
from go_baseline.replay import ReplayBuffer
from go_baseline.selfplay import GameRecord, SelfPlayStats, play_selfplay_games
from go_baseline.sgf import game_to_sgf, write_sgf
from go_baseline.train import Trainer, latest_checkpoint, load_net
from relabel_rl.config import to_yaml
from relabel_rl.rundir import RunDir, seed_everything

__all__ = ["evaluate_checkpoint", "run"]


def _record_from_disk(d: dict[str, np.ndarray], board_size: int, komi: float) -> GameRecord:
    rec = GameRecord(board_size, komi)
    rec.planes = list(d["planes"])
    rec.policy_targets = list(d["policy"])
    rec.played = [int(a) for a in d["played"]]
    rec.to_play = [int(c) for c in d["to_play"]]
    rec.moves = [int(a) for a in d["moves"]]
    rec.result = int(d["result"])
    rec.utility = float(d["utility"]) if "utility" in d else float(rec.result)
    return rec


class _GameWriter:
    """Writes each finished game (npz + SGF) and tallies resignation statistics."""

    def __init__(self, replay: ReplayBuffer, sgf_dir: Path, cfg: GoConfig) -> None:
        self.replay, self.sgf_dir, self.cfg = replay, sgf_dir, cfg
        self.records: list[GameRecord] = []

    def __call__(self, rec: GameRecord) -> None:
        number = self.replay.add(rec)
        self.records.append(rec)
        sgf = game_to_sgf(
            rec.moves,
            board_size=rec.board_size,
            komi=rec.komi,
            result=rec.result,
            score=rec.score,
            resigned=rec.resigned,
            black=f"{self.cfg.train.algo}-selfplay",
            white=f"{self.cfg.train.algo}-selfplay",
        )
        write_sgf(self.sgf_dir / f"selfplay_{number:08d}.sgf", sgf)

    def summary(self) -> dict[str, Any]:
        recs = self.records
        if not recs:
            return {}
        no_resign = [r for r in recs if r.no_resign and r.would_have_resigned]
        return {
            "games_written": len(recs),
            "black_win_rate": float(np.mean([r.result > 0 for r in recs])),
            "mean_game_length": float(np.mean([len(r.moves) for r in recs])),
            "resigned_fraction": float(np.mean([r.resigned != 0 for r in recs])),
            "false_resignations": sum(r.false_resignation for r in recs),
            "would_resign_checked": len(no_resign),
        }


def _opponents(cfg: GoConfig, run: RunDir, iteration: int) -> list[Player]:
    out: list[Player] = []
    for name in cfg.eval.opponents:
        if name == "random":
            out.append(RandomPlayer(seed=cfg.seed))
        elif name == "previous":
            prev = run.checkpoint_dir / f"ckpt_{max(0, iteration - cfg.eval.every_iterations):05d}.pt"
            if prev.exists():
                net, _ = load_net(prev)
                out.append(
                    NetPlayer(
                        net,
                        history=cfg.net.history,
                        num_simulations=cfg.eval.num_simulations,
                        name=prev.stem,
                        search=cfg.selfplay.search,
                        max_considered=cfg.selfplay.max_considered,
                        score_weight=cfg.selfplay.score_weight,
                    )
                )
        elif name == "gnugo" and find_gnugo() is not None:
            out.append(GnuGoPlayer(cfg.eval.gnugo_level, seed=cfg.seed))
    return out


def evaluate_checkpoint(
    cfg: GoConfig, run: RunDir, net: Any, iteration: int, games_played: int
) -> list[dict]:
    """Matches of ``net`` against the configured opponents; logged to metrics and returned."""
    me = NetPlayer(
        net,
        history=cfg.net.history,
        num_simulations=cfg.eval.num_simulations,
        name=f"ckpt_{iteration:05d}",
        search=cfg.selfplay.search,
        max_considered=cfg.selfplay.max_considered,
        score_weight=cfg.selfplay.score_weight,
    )
    out = []
    for opp in _opponents(cfg, run, iteration):
        try:
            res = play_match(
                me,
                opp,
                games=cfg.eval.games,
                board_size=cfg.board.size,
                komi=cfg.board.komi,
                sgf_dir=run.path / "sgf" / "eval",
                sgf_prefix=f"it{iteration:05d}_{opp.name}",
                max_game_length=cfg.board.max_game_length,
            )
        finally:
            opp.close()
        rec = {"kind": "eval", "iteration": iteration, "selfplay_games": games_played, **res.summary()}
        run.log(rec)
        out.append(rec)
    return out


def _play(
    cfg: GoConfig, net: Any, num_games: int, rng: np.random.Generator, writer: _GameWriter
) -> SelfPlayStats:
    common = dict(
        num_games=num_games,
        board_size=cfg.board.size,
        komi=cfg.board.komi,
        history=cfg.net.history,
        rng=rng,
        max_game_length=cfg.board.max_game_length,
        on_game=writer,
    )
    if cfg.train.algo == "az":
        return play_selfplay_games(net, cfg=cfg.selfplay, **common)[1]
    return play_policy_games(
        net,
        games_in_flight=cfg.selfplay.games_in_flight,
        temperature=cfg.selfplay.temperature,
        score_weight=cfg.selfplay.score_weight,
        **common,
    )[1]


def run(cfg: GoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the loop described by ``cfg``; returns the last metrics record.

    Raises:
      RuntimeError: under a multi-process launch (``WORLD_SIZE > 1``). The loop draws every game from one RNG
        stream and writes one run directory, so N processes would play the same games N times and race on the
        files; sharding self-play by game index (as ``tests/test_multiprocess.py`` does for the pieces) is not
        wired into the loop yet. One process with a GPU batches all games in flight instead.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise RuntimeError(
            f"go-baseline train runs in one process (got WORLD_SIZE={world_size}): multi-process self-play is not "
            "implemented in the loop yet; run it without `accelerate launch` (one GPU batches all games in flight)"
        )
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    run_dir = RunDir.create(cfg.run_dir, config=cfg, seeds={"seed": cfg.seed})
    (run_dir.path / "config.resolved.yaml").write_text(to_yaml(cfg))
    replay = ReplayBuffer(run_dir.path / "games", cfg.train.window_games)
    writer = _GameWriter(replay, run_dir.path / "sgf" / "selfplay", cfg)
    trainer = Trainer(cfg)
    rng = np.random.default_rng(cfg.seed)
    ckpt = latest_checkpoint(run_dir.checkpoint_dir)
    if ckpt is None:
        trainer.save(run_dir.checkpoint_dir, iteration=0, games=0, rng=rng)
        iteration = 0
        if 0 % cfg.eval.every_iterations == 0:
            evaluate_checkpoint(cfg, run_dir, trainer.model, 0, 0)
    else:
        iteration = trainer.load(ckpt, rng).iteration
    num_iterations = math.ceil(cfg.total_games / cfg.games_per_iteration)
    last: dict[str, Any] = {}
    bar = tqdm(total=num_iterations, initial=iteration, desc=f"go {cfg.train.algo}", disable=not progress)
    started = time.monotonic()
    while iteration < num_iterations:
        if cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes:
            run_dir.log(
                {
                    "kind": "stopped",
                    "reason": "max_minutes",
                    "iteration": iteration,
                    "games": replay.num_games,
                }
            )
            if iteration % cfg.eval.every_iterations != 0:
                evaluate_checkpoint(cfg, run_dir, trainer.model, iteration, replay.num_games)
            break
        first, target = (
            iteration * cfg.games_per_iteration,
            min(cfg.total_games, (iteration + 1) * cfg.games_per_iteration),
        )
        writer.records = []
        stats = SelfPlayStats()
        if cfg.train.algo == "az":
            missing = target - replay.num_games
            if missing > 0:
                stats = _play(cfg, trainer.model, missing, rng, writer)
            train_log = trainer.train_az(replay.sample, cfg.train.steps_per_iteration, rng)
        else:
            logs = []
            chunk = cfg.selfplay.games_in_flight
            for start in range(first, target, chunk):
                stop = min(target, start + chunk)
                missing = stop - replay.num_games
                if missing > 0:
                    s = _play(cfg, trainer.model, missing, rng, writer)
                    stats.moves, stats.seconds, stats.games = (
                        stats.moves + s.moves,
                        stats.seconds + s.seconds,
                        stats.games + s.games,
                    )
                records = [
                    _record_from_disk(replay.load(n), cfg.board.size, cfg.board.komi)
                    for n in range(start, stop)
                ]
                loss, parts = reinforce_loss(
                    trainer.net,
                    records_to_batch(records),
                    trainer.device,
                    baseline=cfg.train.pg_baseline,
                    value_weight=cfg.train.value_weight,
                )
                parts["grad_norm"] = trainer.update(loss)
                logs.append(parts)
            train_log = {k: float(np.mean([d[k] for d in logs])) for k in logs[0]}
        iteration += 1
        trainer.save(run_dir.checkpoint_dir, iteration=iteration, games=target, rng=rng)
        last = {
            "kind": "train",
            "iteration": iteration,
            "games": target,
            "step": trainer.step,
            "selfplay_moves": stats.moves,
            "selfplay_seconds": stats.seconds,
            "positions_per_second": stats.moves_per_second,
            "session_seconds": time.monotonic() - started,
            **writer.summary(),
            **train_log,
        }
        run_dir.log(last)
        if iteration % cfg.eval.every_iterations == 0 or iteration == num_iterations:
            evaluate_checkpoint(cfg, run_dir, trainer.model, iteration, target)
        bar.update(1)
        bar.set_postfix(games=target, step=trainer.step)
    bar.close()
    return last
