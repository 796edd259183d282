"""The driver: iterate self-play → train → checkpoint → evaluate, in a run directory that survives ``kill -9``.

State lives on disk only: finished games (``games/``, written as each game ends), checkpoints (``checkpoints/``,
written after each iteration's training) and ``metrics.jsonl``. On restart the latest checkpoint gives the
iteration, step counter, optimiser and RNG state; games already on disk for the current iteration are kept and
only the missing ones are played. So no finished game is lost and the step counter continues. Game ``g`` of the
run draws all its randomness from ``default_rng([seed, g])``, so a game replayed after a resume, or played by
another process, is the game it would have been.

Both arms run here (``train.algo``): ``az`` trains ``steps_per_iteration`` steps on the replay window after each
iteration's games; ``pg`` (see :mod:`go_baseline.pg`) plays the iteration in chunks of ``games_in_flight``
games and takes one REINFORCE step per chunk. After a resume in the middle of a PG iteration, chunks played
before the kill are trained on by the checkpointed policy (slightly off-policy; it affects at most one
iteration).

Multi-process (``accelerate launch``, see :func:`run`): self-play is sharded by game number, each optimiser step
by micro-batch; a run's numbers depend on ``train.micro_batches``, not on the number of processes
(``tests/test_multiprocess_go.py`` checks 2 processes against 1).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from tqdm import tqdm

from go_baseline.arena import GnuGoPlayer, NetPlayer, Player, RandomPlayer, play_match
from go_baseline.config import GoConfig
from go_baseline.deadstones import make_judge
from go_baseline.gnugo import find_gnugo
from go_baseline.pg import pg_parts, play_policy_games, records_to_batch
from go_baseline.replay import ReplayBuffer
from go_baseline.selfplay import GameRecord, SelfPlayStats, play_selfplay_games
from go_baseline.sgf import game_to_sgf, write_sgf
from go_baseline.train import Trainer, latest_checkpoint, load_net, split_batch
from relabel_rl.config import to_yaml
from relabel_rl.rundir import RunDir, seed_everything

__all__ = ["evaluate_checkpoint", "games_summary", "run"]


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
    """Writes each finished game (npz + SGF) under its number in the run (``numbers[rec.game_index]``)."""

    def __init__(self, replay: ReplayBuffer, sgf_dir: Path, cfg: GoConfig, numbers: list[int]) -> None:
        self.replay, self.sgf_dir, self.cfg, self.numbers = replay, sgf_dir, cfg, numbers

    def __call__(self, rec: GameRecord) -> None:
        number = self.replay.add(rec, self.numbers[rec.game_index])
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


def games_summary(replay: ReplayBuffer, numbers: range) -> dict[str, Any]:
    """Outcome and resignation statistics of the games ``numbers`` (read from disk, so whole after a resume)."""
    games = [replay.load(n) for n in numbers]
    if not games:
        return {}
    no_resign = [g for g in games if bool(g["no_resign"]) and int(g["would_have_resigned"]) != 0]
    counted = [g for g in games if np.isfinite(g.get("counted_score", np.nan)) and np.isfinite(g["score"])]
    return {
        "iteration_games": len(games),
        "black_win_rate": float(np.mean([int(g["result"]) > 0 for g in games])),
        "mean_game_length": float(np.mean([len(g["moves"]) for g in games])),
        "resigned_fraction": float(np.mean([int(g["resigned"]) != 0 for g in games])),
        "false_resignations": sum(int(g["would_have_resigned"]) == int(g["result"]) for g in no_resign),
        "would_resign_checked": len(no_resign),
        # games whose Tromp–Taylor count differs from the count with dead stones removed (0 when cleaned up)
        "counts_disagree": sum(float(g["counted_score"]) != float(g["score"]) for g in counted),
        "counts_compared": len(counted),
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
    judge = make_judge(cfg.eval.dead_stones)
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
                rules=cfg.eval.rules,
                judge=judge,
            )
        finally:
            opp.close()
        rec = {"kind": "eval", "iteration": iteration, "selfplay_games": games_played, **res.summary()}
        run.log(rec)
        out.append(rec)
    judge.close()
    return out


def _self_play(
    cfg: GoConfig, trainer: Trainer, replay: ReplayBuffer, sgf_dir: Path, numbers: range
) -> SelfPlayStats:
    """Play this process's share of games ``numbers`` (``g % processes == rank``) that are not on disk yet.

    Game ``g`` draws from ``default_rng([seed, g])``: the same game on any number of processes, and after a
    resume. Returns the throughput summed over processes (wall seconds: the slowest process's).
    """
    acc = trainer.accelerator
    mine = [g for g in numbers if g % acc.num_processes == acc.process_index and not replay.path(g).exists()]
    common = dict(
        num_games=len(mine),
        board_size=cfg.board.size,
        komi=cfg.board.komi,
        history=cfg.net.history,
        rng=[np.random.default_rng([cfg.seed, g]) for g in mine],
        max_game_length=cfg.board.max_game_length,
        on_game=_GameWriter(replay, sgf_dir, cfg, mine),
    )
    if not mine:
        stats = SelfPlayStats()
    elif cfg.train.algo == "az":
        stats = play_selfplay_games(trainer.model, cfg=cfg.selfplay, **common)[1]
    else:
        stats = play_policy_games(
            trainer.model,
            games_in_flight=cfg.selfplay.games_in_flight,
            temperature=cfg.selfplay.temperature,
            score_weight=cfg.selfplay.score_weight,
            cleanup=cfg.selfplay.cleanup,
            **common,
        )[1]
    acc.wait_for_everyone()  # every process's games are on disk
    parts = gather_object([(stats.games, stats.moves, stats.evaluations, stats.seconds)])
    return SelfPlayStats(
        games=sum(p[0] for p in parts),
        moves=sum(p[1] for p in parts),
        evaluations=sum(p[2] for p in parts),
        seconds=max(p[3] for p in parts),
    )


def run(cfg: GoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the loop described by ``cfg``; returns the last metrics record.

    Under ``accelerate launch`` the processes share self-play by game number and each optimiser step by
    micro-batch (``train.micro_batches``; see :mod:`go_baseline.train`); the main process writes checkpoints
    and metrics and evaluates. Every process reads and writes games in the run directory, so it must be on a
    file system they share (any single machine).

    Raises:
      ValueError: when ``train.micro_batches`` is not a multiple of the number of processes.
    """
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    trainer = Trainer(cfg)  # its Accelerator joins the process group under `accelerate launch`
    acc, main = trainer.accelerator, trainer.is_main_process
    micro_batches = trainer.micro_batches()  # validated before any game is played
    if main:
        run_dir = RunDir.create(
            cfg.run_dir, config=cfg, seeds={"seed": cfg.seed}, extra_meta={"processes": acc.num_processes}
        )
        (run_dir.path / "config.resolved.yaml").write_text(to_yaml(cfg))
    acc.wait_for_everyone()
    run_dir = RunDir(Path(cfg.run_dir))
    replay = ReplayBuffer(run_dir.path / "games", cfg.train.window_games)
    sgf_dir = run_dir.path / "sgf" / "selfplay"
    rng = np.random.default_rng(cfg.seed)  # training batches; identical on every process
    ckpt = latest_checkpoint(run_dir.checkpoint_dir)
    acc.wait_for_everyone()  # every process has looked before the main one writes the first checkpoint
    if ckpt is None:
        iteration = 0
        if main:
            trainer.save(run_dir.checkpoint_dir, iteration=0, games=0, rng=rng)
            evaluate_checkpoint(cfg, run_dir, trainer.model, 0, 0)
    else:
        iteration = trainer.load(ckpt, rng).iteration
    num_iterations = math.ceil(cfg.total_games / cfg.games_per_iteration)
    last: dict[str, Any] = {}
    bar = tqdm(
        total=num_iterations, initial=iteration, desc=f"go {cfg.train.algo}", disable=not progress or not main
    )
    started = time.monotonic()
    while iteration < num_iterations:
        out_of_time = cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes
        if broadcast_object_list([out_of_time])[0]:  # the main process's clock decides for all
            if main:
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
        stats = SelfPlayStats()
        if cfg.train.algo == "az":
            stats = _self_play(cfg, trainer, replay, sgf_dir, range(first, target))
            train_log = trainer.train_az(replay.sample, cfg.train.steps_per_iteration, rng)
        else:
            logs = []
            pg_loss = functools.partial(
                pg_parts, baseline=cfg.train.pg_baseline, value_weight=cfg.train.value_weight
            )
            for start in range(first, target, cfg.selfplay.games_in_flight):
                stop = min(target, start + cfg.selfplay.games_in_flight)
                s = _self_play(cfg, trainer, replay, sgf_dir, range(start, stop))
                stats.games, stats.moves, stats.seconds = (
                    stats.games + s.games,
                    stats.moves + s.moves,
                    stats.seconds + s.seconds,
                )
                records = [
                    _record_from_disk(replay.load(n), cfg.board.size, cfg.board.komi)
                    for n in range(start, stop)
                ]
                batches = split_batch(records_to_batch(records), micro_batches)
                logs.append(trainer.train_step(batches, pg_loss))
            train_log = {k: float(np.mean([d[k] for d in logs])) for k in logs[0]}
        iteration += 1
        if main:
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
                **games_summary(replay, range(first, target)),
                **train_log,
            }
            run_dir.log(last)
            if iteration % cfg.eval.every_iterations == 0 or iteration == num_iterations:
                evaluate_checkpoint(cfg, run_dir, trainer.model, iteration, target)
        bar.update(1)
        bar.set_postfix(games=target, step=trainer.step)
    bar.close()
    return broadcast_object_list([last])[0]
