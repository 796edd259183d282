"""The comparison arm: the same network trained by REINFORCE on self-play game outcomes only.

Read top to bottom, this is the whole algorithm:

1. Play a batch of self-play games with the *raw* policy (no search): every move is sampled from the softmax of
   the policy logits over the legal moves (one batched forward pass per move for all games in flight).
2. Each game yields one scalar: its outcome ``z`` (+1 / −1 / 0 for a draw; with ``selfplay.score_weight`` the
   same score-aware utility as the AlphaZero arm), which every move of the winner shares with sign +1 and every
   move of the loser with sign −1. No per-move target exists.
3. One gradient step on ``−(z − b) · log π(a_t | s_t)`` averaged over all moves of the batch of games
   (``b`` = 0, or the value head's prediction with ``train.pg_baseline``), plus the same value loss as the
   AlphaZero arm so that both nets have a value head of the same kind when evaluated with search.

Both arms follow the cleanup rule (:mod:`go_baseline.rules`): a sampled pass that would leave dead stones
distorting the count is resampled from the policy restricted to the rule's alternatives, and that restricted
set is what the move's log-probability is taken over (so the estimator stays exactly on-policy).

The games are on-policy: each batch is used for exactly one step, then discarded from training (they stay on
disk as records and SGFs). The AlphaZero arm, given the same number of games, gets a visit-count target for
every move instead of one outcome per game — that is the comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from go_baseline.board import Position, new_position
from go_baseline.deadstones import DeadStoneJudge, PlayoutJudge
from go_baseline.features import encode_batch
from go_baseline.network import PolicyValueNet
from go_baseline.replay import Batch
from go_baseline.rules import counted_score, pass_alternatives
from go_baseline.selfplay import GameRecord, SelfPlayStats, game_generators, game_utility

__all__ = ["per_sample_reinforce_loss", "pg_parts", "play_policy_games", "records_to_batch"]


def play_policy_games(
    net: PolicyValueNet,
    *,
    num_games: int,
    board_size: int,
    komi: float,
    history: int,
    games_in_flight: int,
    temperature: float,
    rng: np.random.Generator | Sequence[np.random.Generator],
    max_game_length: int | None = None,
    score_weight: float = 0.0,
    cleanup: bool = True,
    on_game: Callable[[GameRecord], None] | None = None,
) -> tuple[list[GameRecord], SelfPlayStats]:
    """Self-play with moves sampled from the policy. Records store the mask of the moves the policy was
    sampled over (the legal moves; the cleanup alternatives after a premature pass) as ``policy_targets``.

    ``rng``: one generator (spawned per game) or one per game (see :func:`go_baseline.selfplay.game_generators`).
    """
    rngs = game_generators(rng, num_games)
    judge = PlayoutJudge() if cleanup else None
    stats = SelfPlayStats()
    start = time.perf_counter()
    n_actions = board_size * board_size + 1
    finished: list[GameRecord] = []
    games: list[tuple[Any, GameRecord, np.random.Generator]] = []
    started = 0
    while started < num_games or games:
        while started < num_games and len(games) < games_in_flight:
            games.append(
                (
                    new_position(board_size, komi, history=history, max_game_length=max_game_length),
                    GameRecord(board_size, komi, game_index=started),
                    rngs[started],
                )
            )
            started += 1
        logits, _ = net.predict(encode_batch([p for p, _, _ in games], history))
        stats.evaluations += len(games)
        keep = []
        for (pos, rec, g), lg in zip(games, logits):
            legal = np.asarray(pos.legal_actions(), dtype=np.int64)
            action = _sample(lg, legal, temperature, g)
            if action == pos.pass_action and (allowed := _cleanup_moves(pos, judge)) is not None:
                legal = allowed
                action = _sample(lg, legal, temperature, g)
            mask = np.zeros(n_actions, dtype=np.float64)
            mask[legal] = 1.0
            rec.add(pos, history, mask, action)
            rec.moves.append(action)
            stats.moves += 1
            pos = pos.play(action)
            if pos.is_terminal:
                rec.result, rec.score = pos.result(), pos.score()
                if judge is not None:
                    rec.counted_score = counted_score(pos, "chinese", judge)
                rec.utility = game_utility(rec.result, rec.score, board_size, score_weight)
                finished.append(rec)
                stats.games += 1
                if on_game is not None:
                    on_game(rec)
            else:
                keep.append((pos, rec, g))
        games = keep
    stats.seconds = time.perf_counter() - start
    return finished, stats


def _sample(logits: np.ndarray, moves: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    z = logits[moves] / temperature
    p = np.exp(z - z.max())
    return int(moves[rng.choice(len(moves), p=p / p.sum())])


def _cleanup_moves(pos: Position, judge: DeadStoneJudge | None) -> np.ndarray | None:
    """The moves to sample from instead of a premature pass (:func:`go_baseline.rules.pass_alternatives`)."""
    found = None if judge is None else pass_alternatives(pos, judge)
    return None if found is None else np.asarray(found[1], dtype=np.int64)


def records_to_batch(records: list[GameRecord]) -> Batch:
    """All moves of ``records`` as one batch (outcome from the mover's view)."""
    planes = np.concatenate([np.stack(r.planes) for r in records]).astype(np.float32)
    mask = np.concatenate([np.stack(r.policy_targets) for r in records]).astype(np.float32)
    played = np.concatenate([np.asarray(r.played) for r in records]).astype(np.int64)
    outcome = np.concatenate([np.asarray(r.to_play, np.float32) * r.utility for r in records]).astype(
        np.float32
    )
    game = np.concatenate([np.full(len(r.played), i) for i, r in enumerate(records)]).astype(np.int64)
    return Batch(planes, mask, played, outcome, game)


def per_sample_reinforce_loss(
    net: PolicyValueNet, batch: Batch, device: Any, *, baseline: bool, value_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(policy term, value term)`` per move: ``−(z − b)·log π(a|s)`` over legal moves, and ``(z − v)²``."""
    planes = torch.from_numpy(batch.planes).to(device)
    legal = torch.from_numpy(batch.policy).to(device) > 0
    played = torch.from_numpy(batch.played).to(device)
    z = torch.from_numpy(batch.outcome).to(device)
    logits, value = net(planes)
    logp = F.log_softmax(logits.masked_fill(~legal, -1e9), dim=-1).gather(1, played[:, None]).squeeze(1)
    advantage = z - value.detach() if baseline else z
    return -(advantage * logp), value_weight * (value - z) ** 2


def pg_parts(
    net: PolicyValueNet, batch: Batch, device: Any, *, baseline: bool, value_weight: float
) -> dict[str, torch.Tensor]:
    """Per-move REINFORCE loss (``loss``, optimised) and its parts (logged), for ``Trainer.train_step``."""
    pg, v = per_sample_reinforce_loss(net, batch, device, baseline=baseline, value_weight=value_weight)
    return {"loss": pg + v, "pg_loss": pg, "value_mse": v / max(value_weight, 1e-12)}
