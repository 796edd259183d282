"""The gradient-variance probe for Go: per-position AlphaZero gradients against per-game REINFORCE gradients.

At one checkpoint, for each estimator, collect single-sample gradients ``g_i`` of all network parameters and
report the relative variance ``E‖g − ḡ‖² / ‖ḡ‖²`` (scale-free: it is the noise-to-signal ratio a step averages
away), binned by game length:

* AlphaZero: one sample = one position from the replay window, gradient of ``CE(visits, π) + (z − v)²``;
* REINFORCE: one sample = one game played with the raw policy, gradient of ``−Σ_t z_t log π(a_t | s_t)`` —
  the game's single outcome spread over its moves, which is all the outcome-only arm learns from.

The claim under test predicts the REINFORCE variance to be far larger and to grow with game length, the
AlphaZero one not. Batch norm runs in eval mode (running statistics) so per-sample gradients are well defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from go_baseline.network import PolicyValueNet
from go_baseline.pg import per_sample_reinforce_loss, play_policy_games, records_to_batch
from go_baseline.replay import ReplayBuffer
from go_baseline.train import per_sample_az_loss

__all__ = ["gradient_variance_probe", "relative_variance"]


def relative_variance(grads: np.ndarray) -> float:
    """``mean_i ‖g_i − ḡ‖² / ‖ḡ‖²`` for ``grads [n, P]``; NaN for fewer than two samples."""
    if len(grads) < 2:
        return float("nan")
    mean = grads.mean(0)
    return float(((grads - mean) ** 2).sum(1).mean() / max((mean**2).sum(), 1e-30))


def _flat_grad(net: PolicyValueNet, loss: torch.Tensor) -> np.ndarray:
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    ).numpy()


def _bins(lengths: Sequence[int], edges: Sequence[int]) -> list[str]:
    out = []
    for n in lengths:
        lo = max([e for e in edges if e <= n], default=0)
        hi = min([e for e in edges if e > n], default=None)
        out.append(f"{lo}-{hi - 1}" if hi is not None else f"{lo}+")
    return out


def gradient_variance_probe(
    net: PolicyValueNet,
    replay: ReplayBuffer,
    *,
    num_positions: int = 64,
    num_games: int = 64,
    komi: float,
    value_weight: float = 1.0,
    bin_edges: Sequence[int] = (0, 10, 20, 30, 40),
    seed: int = 0,
) -> dict[str, Any]:
    """Relative gradient variance of both estimators at ``net``'s parameters, overall and per game-length bin."""
    rng = np.random.default_rng(seed)
    net.eval()
    cfg = net.cfg
    # AlphaZero: positions from the replay window (their game's length is the bin key)
    games = [g for g in replay.window() if len(replay.load(g)["played"]) > 0]
    az_grads, az_len = [], []
    if games:
        batch = replay.sample(num_positions, rng)
        for i in range(len(batch.played)):
            total, _, _ = per_sample_az_loss(
                net,
                torch.from_numpy(batch.planes[i : i + 1]),
                torch.from_numpy(batch.policy[i : i + 1]),
                torch.from_numpy(batch.outcome[i : i + 1]),
                value_weight,
            )
            az_grads.append(_flat_grad(net, total.sum()))
            az_len.append(len(replay.load(int(batch.game[i]))["moves"]))
    # REINFORCE: fresh on-policy games, one gradient per game
    records, _ = play_policy_games(
        net,
        num_games=num_games,
        board_size=cfg.board_size,
        komi=komi,
        history=cfg.history,
        games_in_flight=min(32, num_games),
        temperature=1.0,
        rng=rng,
    )
    pg_grads, pg_len = [], []
    for rec in records:
        b = records_to_batch([rec])
        pg, _ = per_sample_reinforce_loss(net, b, "cpu", baseline=False, value_weight=0.0)
        pg_grads.append(_flat_grad(net, pg.sum()))
        pg_len.append(len(rec.moves))

    def summarise(grads: list[np.ndarray], lengths: list[int], unit: str) -> dict[str, Any]:
        if not grads:
            return {"samples": 0}
        g = np.stack(grads)
        labels = _bins(lengths, bin_edges)
        by_bin = {}
        for lab in sorted(set(labels), key=lambda s: int(s.split("-")[0].rstrip("+"))):
            idx = [i for i, lb in enumerate(labels) if lb == lab]
            by_bin[lab] = {
                "samples": len(idx),
                "relative_variance": relative_variance(g[idx]),
                "mean_length": float(np.mean([lengths[i] for i in idx])),
            }
        return {
            "unit": unit,
            "samples": len(g),
            "relative_variance": relative_variance(g),
            "by_game_length": by_bin,
        }

    return {
        "az": summarise(az_grads, az_len, "position"),
        "pg": summarise(pg_grads, pg_len, "game"),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
