"""The replay buffer on disk: one ``.npz`` per finished game, training samples from the last ``window`` games.

Every game is written the moment it finishes (temp file + rename, so a ``kill -9`` leaves either the whole game
or nothing). The files are the buffer: a resumed run counts them and goes on, losing no finished game. The loop
numbers games by their index in the run (game ``g`` is seeded by ``g``, whichever process plays it), so they
may land out of order; the window is the ``window_games`` highest numbers.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from go_baseline.selfplay import GameRecord

__all__ = ["Batch", "ReplayBuffer"]

_NAME = re.compile(r"^game_(\d{8})\.npz$")


@dataclass(frozen=True)
class Batch:
    """Training samples: planes ``[B, C, N, N]`` float32, policy targets ``[B, A]``, played moves ``[B]``,
    outcomes ``[B]`` (the game's utility from the mover's view: ±1 for win/loss, plus the score term when
    ``selfplay.score_weight`` > 0), and the game each sample came from.

    The auxiliary targets (KataGo's; None unless asked for): ``ownership`` ``[B, N, N]`` the final owner of every
    point from the mover's view (+1 / −1 / 0), ``score`` ``[B]`` the final margin / N² from the mover's view
    (clipped to [−1, 1]), and ``aux_mask`` ``[B]`` 1 where the game was counted (0 after a resignation).
    """

    planes: np.ndarray
    policy: np.ndarray
    played: np.ndarray
    outcome: np.ndarray
    game: np.ndarray
    ownership: np.ndarray | None = None
    score: np.ndarray | None = None
    aux_mask: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Batch:
        """The samples at ``index`` (the optional fields follow when present)."""
        return Batch(**{k: None if v is None else v[index] for k, v in self.__dict__.items()})


class ReplayBuffer:
    """Games under ``directory``; :meth:`sample` draws positions uniformly from the last ``window_games``."""

    def __init__(self, directory: str | Path, window_games: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.window_games = int(window_games)
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def indices(self) -> list[int]:
        """Numbers of the games on disk, ascending (stray temp files of a killed run are ignored)."""
        out = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    @property
    def num_games(self) -> int:
        return len(self.indices())

    def path(self, number: int) -> Path:
        return self.directory / f"game_{number:08d}.npz"

    def add(self, rec: GameRecord, number: int | None = None) -> int:
        """Write ``rec`` as game ``number`` (default: the next after the highest on disk); returns its number."""
        if number is None:
            idx = self.indices()
            number = (idx[-1] + 1) if idx else 0
        planes = np.stack(rec.planes) if rec.planes else np.zeros((0,), np.uint8)
        to_play = np.asarray(rec.to_play, dtype=np.int8)
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            planes=planes,
            policy=np.stack(rec.policy_targets) if rec.policy_targets else np.zeros((0,), np.float32),
            played=np.asarray(rec.played, dtype=np.int64),
            to_play=to_play,
            outcome=(to_play * rec.utility).astype(np.float32),
            moves=np.asarray(rec.moves, dtype=np.int64),
            result=np.int64(rec.result),
            utility=np.float64(rec.utility),
            score=np.float64(rec.score),
            counted_score=np.float64(rec.counted_score),
            ownership=np.zeros((0,), np.int8) if rec.ownership is None else rec.ownership.astype(np.int8),
            resigned=np.int64(rec.resigned),
            no_resign=np.bool_(rec.no_resign),
            would_have_resigned=np.int64(rec.would_have_resigned),
        )
        target = self.path(number)
        tmp = self.directory / f".game_{number:08d}.npz.tmp"
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)
        return number

    def load(self, number: int) -> dict[str, np.ndarray]:
        if number not in self._cache:
            with np.load(self.path(number)) as z:
                self._cache[number] = {k: z[k] for k in z.files}
        return self._cache[number]

    def window(self) -> list[int]:
        """Numbers of the games in the training window (the most recent ``window_games``)."""
        idx = self.indices()[-self.window_games :]
        for k in list(self._cache):
            if k not in idx:
                del self._cache[k]
        return idx

    def sample(self, batch_size: int, rng: np.random.Generator, *, aux: bool = False) -> Batch:
        """``batch_size`` positions drawn uniformly from all recorded positions of the window's games; with
        ``aux``, the ownership and score targets too (see :class:`Batch`)."""
        games = [g for g in self.window() if len(self.load(g)["played"]) > 0]
        if not games:
            raise ValueError(f"the replay buffer under {self.directory} has no positions to train on")
        sizes = np.array([len(self.load(g)["played"]) for g in games])
        flat = rng.integers(0, sizes.sum(), size=batch_size)
        bounds = np.cumsum(sizes)
        which = np.searchsorted(bounds, flat, side="right")
        offsets = flat - (bounds[which] - sizes[which])
        planes, policy, played, outcome, targets = [], [], [], [], []
        for w, o in zip(which, offsets):
            d = self.load(games[w])
            planes.append(d["planes"][o])
            policy.append(d["policy"][o])
            played.append(d["played"][o])
            outcome.append(d["outcome"][o])
            if aux:
                targets.append(_aux_targets(d, o))
        batch = Batch(
            planes=np.stack(planes).astype(np.float32),
            policy=np.stack(policy).astype(np.float32),
            played=np.asarray(played, dtype=np.int64),
            outcome=np.asarray(outcome, dtype=np.float32),
            game=np.asarray([games[w] for w in which], dtype=np.int64),
        )
        if not aux:
            return batch
        own, score, mask = zip(*targets)
        extra = {"ownership": np.stack(own), "score": np.asarray(score, np.float32)}
        return Batch(**{**batch.__dict__, **extra, "aux_mask": np.asarray(mask, np.float32)})

    def games(self, numbers: list[int]) -> list[dict[str, np.ndarray]]:
        return [self.load(n) for n in numbers]


def _aux_targets(game: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, float, float]:
    """``(ownership [N, N], score, valid)`` of position ``i`` from its mover's view (zeros, 0 when the game
    has no count: a resignation, or a game written before these targets existed)."""
    n = game["planes"].shape[-1]
    own = game["ownership"] if "ownership" in game else np.zeros((0,), np.int8)
    score = float(game["score"]) if "score" in game else float("nan")
    if own.shape != (n, n) or not np.isfinite(score):
        return np.zeros((n, n), np.float32), 0.0, 0.0
    mover = float(game["to_play"][i])
    return (own * mover).astype(np.float32), float(np.clip(score / (n * n), -1, 1) * mover), 1.0
