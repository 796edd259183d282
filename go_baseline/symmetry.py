"""The 8 symmetries of the square board (dihedral group D4), for planes and for move vectors.

Used for data augmentation in training (a random symmetry per sample) and, optionally, for evaluation. A move
vector has ``N * N + 1`` entries: the board points in OpenSpiel order (``row * N + col``) and then pass, which
every symmetry leaves in place.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["NUM_SYMMETRIES", "action_permutation", "transform_planes", "transform_policy"]

NUM_SYMMETRIES = 8


def _apply(x: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` (0 = identity) on the last two axes: ``k % 4`` quarter turns, then a transpose if ``k >= 4``."""
    if not 0 <= k < NUM_SYMMETRIES:
        raise ValueError(f"symmetry index must be in [0, 8), got {k}")
    y = np.rot90(x, k % 4, axes=(-2, -1))
    if k >= 4:
        y = np.swapaxes(y, -1, -2)
    return np.ascontiguousarray(y)


def transform_planes(planes: np.ndarray, k: int) -> np.ndarray:
    """Apply symmetry ``k`` to ``[..., N, N]`` planes."""
    return _apply(planes, k)


@functools.lru_cache(maxsize=256)
def action_permutation(board_size: int, k: int) -> np.ndarray:
    """``perm[a]`` = the action that ``a`` becomes under symmetry ``k`` (pass maps to pass)."""
    n = board_size
    ids = np.arange(n * n).reshape(n, n)
    moved = _apply(ids, k)  # moved[r, c] = the original point that lands on (r, c)
    perm = np.empty(n * n + 1, dtype=np.int64)
    perm[moved.reshape(-1)] = np.arange(n * n)
    perm[n * n] = n * n
    perm.setflags(write=False)
    return perm


def transform_policy(policy: np.ndarray, board_size: int, k: int) -> np.ndarray:
    """Apply symmetry ``k`` to a ``[..., N * N + 1]`` move vector, consistently with :func:`transform_planes`."""
    perm = action_permutation(board_size, k)
    out = np.empty_like(policy)
    out[..., perm] = policy
    return out
