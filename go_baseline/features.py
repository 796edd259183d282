"""Network input planes: stone history from the side to move's view, plus colour and board-edge planes.

AlphaGo Zero's encoding, shortened: for each of the last ``history`` boards, one plane of the mover's stones and
one of the opponent's (zeros before the game started), then a plane that is 1 when black is to move (komi makes
the colours asymmetric) and a plane of ones (so zero padding in the convolutions marks the board edge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from go_baseline.board import Position

__all__ = ["encode", "encode_batch", "num_planes"]


def num_planes(history: int) -> int:
    """Input channels for ``history`` boards: ``2 * history + 2``."""
    return 2 * history + 2


def encode(pos: Position, history: int) -> np.ndarray:
    """``[2 * history + 2, N, N]`` float32 planes for ``pos`` (see the module docstring)."""
    n = pos.board_size
    planes = np.zeros((num_planes(history), n, n), dtype=np.float32)
    me = pos.to_play
    for i, b in enumerate(pos.boards[:history]):
        planes[2 * i] = b == me
        planes[2 * i + 1] = b == -me
    planes[-2] = 1.0 if me == 1 else 0.0
    planes[-1] = 1.0
    return planes


def encode_batch(positions: Sequence[Position], history: int) -> np.ndarray:
    """``[B, C, N, N]`` planes for a batch of positions of one board size (equal to stacking :func:`encode`).

    Vectorised over the batch (the search encodes every leaf of a round in one call): the boards go into one
    ``[B, history, N, N]`` array, then each plane kind is one NumPy operation.
    """
    if not positions:
        return np.zeros((0,), np.float32)
    n = positions[0].board_size
    boards = np.zeros((len(positions), history, n, n), dtype=np.int8)  # zeros before the game started
    for i, p in enumerate(positions):
        past = p.boards[:history]
        boards[i, : len(past)] = past
    me = np.array([p.to_play for p in positions], dtype=np.int8).reshape(-1, 1, 1, 1)
    planes = np.empty((len(positions), num_planes(history), n, n), dtype=np.float32)
    planes[:, 0 : 2 * history : 2] = boards == me
    planes[:, 1 : 2 * history : 2] = boards == -me
    planes[:, -2] = me[:, 0] == 1
    planes[:, -1] = 1.0
    return planes
