"""Go positions on OpenSpiel's rules engine: ASCII ↔ position, GTP vertex ↔ action, exact area scoring.

OpenSpiel's ``go`` (C++) is the rules engine: legal moves, captures, ko, and the end of the game. This module adds
what it does not expose and what the rest of ``go_baseline`` needs:

* :class:`Position` — an immutable wrapper around a pyspiel state that also keeps the last few board arrays, so
  the network's history planes cost nothing to build (replaying the pyspiel history for every leaf would);
* ASCII boards (tests describe positions as pictures) — set up by *playing* the stones, with passes in between,
  because pyspiel has no "place stone" API; the result is checked against the picture;
* GTP vertices (``"C3"``, ``"pass"``; columns skip ``I``) ↔ OpenSpiel actions (``row * N + col``, row 0 = rank 1,
  pass = ``N * N``);
* :func:`area_score` — Tromp–Taylor area scoring (stones + empty regions reached by one colour only − komi). The
  pyspiel state only reports ±1 returns; the score margin is what ``final_score`` and "B+17.5" need.

Where OpenSpiel's rules differ from Tromp–Taylor, and why that is acceptable here:

* **Suicide** is illegal (Tromp–Taylor allows multi-stone suicide). Suicide is never a good move in practice and
  GnuGo, Sabaki and KGS Chinese rules also forbid it, so GTP interop is *better* for it.
* **Superko**: Tromp–Taylor forbids recreating any earlier position (positional superko). OpenSpiel enforces only
  simple ko in its legal-move list, and instead *ends the game* (scored as it stands) when a whole-board position
  repeats. Long cycles (triple ko, …) are vanishingly rare on small boards, a repetition still terminates the
  game (no infinite self-play), and Chinese rules as played by GnuGo also use a superko variant.
* **Game length cap**: OpenSpiel ends a game after ``max_game_length`` moves and scores it; we set the cap well
  above the length of real games (``3 * N * N`` by default).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyspiel
from open_spiel.python.observation import make_observation

__all__ = [
    "BLACK",
    "EMPTY",
    "GTP_COLUMNS",
    "WHITE",
    "Position",
    "action_to_vertex",
    "area_score",
    "board_to_ascii",
    "format_score",
    "from_ascii",
    "load_game",
    "new_position",
    "vertex_to_action",
]

BLACK, WHITE, EMPTY = 1, -1, 0
GTP_COLUMNS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # GTP skips I
MIN_SIZE, MAX_SIZE = 5, 19


@functools.lru_cache(maxsize=32)
def load_game(board_size: int, komi: float, max_game_length: int | None = None) -> pyspiel.Game:
    """OpenSpiel's Go for ``board_size`` (5–19) and ``komi``; ``max_game_length`` defaults to ``3 * N * N``."""
    if not MIN_SIZE <= board_size <= MAX_SIZE:
        raise ValueError(f"board_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {board_size}")
    if max_game_length is None:
        max_game_length = 3 * board_size * board_size
    return pyspiel.load_game(
        "go", {"board_size": int(board_size), "komi": float(komi), "max_game_length": int(max_game_length)}
    )


@functools.lru_cache(maxsize=16)
def _observation(board_size: int):
    """OpenSpiel's observation buffer for Go boards of this size (planes: black, white, empty, to-play)."""
    return make_observation(load_game(board_size, 0.0))


def _board_of(state: pyspiel.State, n: int) -> np.ndarray:
    """The board as an ``[N, N]`` int8 array (+1 black, −1 white), row 0 = rank 1.

    Read through OpenSpiel's observation API, which writes into a NumPy buffer in place (``observation_tensor()``
    returns a Python list of ``4 * N * N`` floats: converting it cost 5x more); the buffer is shared, so the
    board is copied out at once.
    """
    obs = _observation(n)
    obs.set_from(state, 0)
    planes = obs.tensor
    nn = n * n
    return (planes[:nn] - planes[nn : 2 * nn]).astype(np.int8).reshape(n, n)


@dataclass(frozen=True, eq=False, slots=True)  # slots: the search makes one per node
class Position:
    """An immutable Go position.

    Attributes:
      state: the pyspiel ``GoState`` (never mutated once wrapped; :meth:`play` clones).
      board_size: N.
      komi: komi (white's compensation).
      boards: the current board followed by earlier ones, most recent first (``[N, N]`` int8, +1 black);
        at most ``history`` entries, fewer early in the game.
      history: how many boards to keep (the network's history length).
    """

    state: pyspiel.State
    board_size: int
    komi: float
    boards: tuple[np.ndarray, ...]
    history: int = 8

    @property
    def board(self) -> np.ndarray:
        return self.boards[0]

    @property
    def to_play(self) -> int:
        """BLACK (+1) or WHITE (−1); pyspiel players are 0 = black, 1 = white."""
        return BLACK if self.state.current_player() in (0, pyspiel.PlayerId.TERMINAL) else WHITE

    @property
    def is_terminal(self) -> bool:
        return bool(self.state.is_terminal())

    @property
    def pass_action(self) -> int:
        return self.board_size * self.board_size

    @property
    def num_actions(self) -> int:
        return self.board_size * self.board_size + 1

    @property
    def move_number(self) -> int:
        return len(self.state.history())

    def legal_actions(self) -> list[int]:
        return self.state.legal_actions()  # a fresh list; empty once the game is over

    def is_legal(self, action: int) -> bool:
        return action in self.state.legal_actions()

    def play(self, action: int, *, checked: bool = True) -> Position:
        """The position after ``action`` by the side to move; raises ValueError when illegal.

        ``checked=False`` skips listing the legal moves when the caller knows ``action`` is one (the search's
        actions are the legal moves); OpenSpiel still refuses an occupied point (``SpielError``).
        """
        if checked and not self.is_legal(action):
            raise ValueError(f"illegal move {action_to_vertex(action, self.board_size)} in\n{self}")
        child = self.state.child(int(action))
        boards = (_board_of(child, self.board_size), *self.boards)[: self.history]
        return Position(child, self.board_size, self.komi, boards, self.history)

    def score(self) -> float:
        """Area score, black minus white minus komi (exact Tromp–Taylor count of the current board)."""
        return area_score(self.board, self.komi)

    def result(self) -> int:
        """The game result for black by area score: +1 black wins, −1 white wins, 0 a draw (integer komi)."""
        s = self.score()
        return 0 if s == 0 else (BLACK if s > 0 else WHITE)

    def __str__(self) -> str:
        return board_to_ascii(self.board)


def new_position(
    board_size: int, komi: float, *, history: int = 8, max_game_length: int | None = None
) -> Position:
    """The empty board, black to play."""
    game = load_game(board_size, komi, max_game_length)
    state = game.new_initial_state()
    return Position(state, board_size, float(komi), (_board_of(state, board_size),), history)


# ---------------------------------------------------------------------------------------------------------------
# Vertices


def action_to_vertex(action: int, board_size: int) -> str:
    """OpenSpiel action → GTP vertex (``"pass"`` for the pass action)."""
    if action == board_size * board_size:
        return "pass"
    if not 0 <= action < board_size * board_size:
        raise ValueError(f"action {action} out of range for a {board_size}x{board_size} board")
    row, col = divmod(int(action), board_size)
    return f"{GTP_COLUMNS[col]}{row + 1}"


def vertex_to_action(vertex: str, board_size: int) -> int:
    """GTP vertex (case-insensitive, ``"pass"``) → OpenSpiel action; ValueError for anything malformed."""
    if not vertex.isascii():  # "C٣" or "paſs" must not become C3 or PASS through isdigit() / upper()
        raise ValueError(f"invalid vertex {vertex!r}: not ASCII")
    v = vertex.strip().upper()
    if v == "PASS":
        return board_size * board_size
    if len(v) < 2 or v[0] not in GTP_COLUMNS[:board_size] or not v[1:].isdigit():
        raise ValueError(f"invalid vertex {vertex!r} for a {board_size}x{board_size} board")
    col, row = GTP_COLUMNS.index(v[0]), int(v[1:]) - 1
    if not 0 <= row < board_size:
        raise ValueError(f"vertex {vertex!r} is off a {board_size}x{board_size} board")
    return row * board_size + col


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def area_score(board: np.ndarray, komi: float) -> float:
    """Tromp–Taylor area score of ``board`` (+1 black, −1 white): black area − white area − komi.

    A point counts for a colour if it holds a stone of that colour, or it is empty and every empty region it
    belongs to reaches stones of that colour only. Dead stones are not removed (Tromp–Taylor): games are played
    out until they are captured.
    """
    n = board.shape[0]
    black = int((board == BLACK).sum())
    white = int((board == WHITE).sum())
    seen = np.zeros_like(board, dtype=bool)
    for r in range(n):
        for c in range(n):
            if board[r, c] != EMPTY or seen[r, c]:
                continue
            stack, region, borders = [(r, c)], 0, set()
            seen[r, c] = True
            while stack:
                y, x = stack.pop()
                region += 1
                for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= yy < n and 0 <= xx < n:
                        v = board[yy, xx]
                        if v == EMPTY and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
                        elif v != EMPTY:
                            borders.add(int(v))
            if borders == {BLACK}:
                black += region
            elif borders == {WHITE}:
                white += region
    return black - white - float(komi)


def format_score(score: float) -> str:
    """GTP/SGF result string: ``B+17.5``, ``W+2.5`` or ``0``."""
    if score == 0:
        return "0"
    return f"B+{score:g}" if score > 0 else f"W+{-score:g}"


# ---------------------------------------------------------------------------------------------------------------
# ASCII


def board_to_ascii(board: np.ndarray) -> str:
    """``X`` black, ``O`` white, ``.`` empty; top line is the highest rank, as a human reads a diagram."""
    sym = {BLACK: "X", WHITE: "O", EMPTY: "."}
    return "\n".join("".join(sym[int(v)] for v in board[r]) for r in reversed(range(board.shape[0])))


def _parse_ascii(text: str) -> np.ndarray:
    rows = [ln.strip().replace(" ", "") for ln in text.strip().splitlines() if ln.strip()]
    n = len(rows)
    if not MIN_SIZE <= n <= MAX_SIZE or any(len(r) != n for r in rows):
        raise ValueError(f"an ASCII board must be N lines of N characters (N in 5..19), got {rows}")
    board = np.zeros((n, n), dtype=np.int8)
    for i, line in enumerate(rows):
        for c, ch in enumerate(line):
            if ch not in "XO.+":
                raise ValueError(f"unknown board character {ch!r} (use X, O, . or +)")
            board[n - 1 - i, c] = {"X": BLACK, "O": WHITE}.get(ch, EMPTY)
    return board


def from_ascii(
    text: str,
    *,
    to_play: int = BLACK,
    komi: float = 7.5,
    history: int = 8,
    max_game_length: int | None = None,
) -> Position:
    """Set up the pictured position (``X`` black, ``O`` white, ``.`` empty; top line = highest rank).

    pyspiel has no stone-placing API, so stones are *played*: black and white alternate, a side with no stones
    left passes (never two passes in a row), trailing passes are trimmed and one pass fixes the side to move.
    Raises ValueError when the picture is not a legal position (a group without liberties).
    """
    board = _parse_ascii(text)
    n = board.shape[0]
    if max_game_length is None:
        max_game_length = max(3 * n * n, 4 * int((board != EMPTY).sum()) + 8)
    blacks = [int(a) for a in np.flatnonzero(board.reshape(-1) == BLACK)]
    whites = [int(a) for a in np.flatnonzero(board.reshape(-1) == WHITE)]
    pass_action = n * n
    moves: list[int] = []
    queues = {BLACK: list(blacks), WHITE: list(whites)}
    color = BLACK
    while queues[BLACK] or queues[WHITE]:
        moves.append(queues[color].pop(0) if queues[color] else pass_action)
        color = -color
    while moves and moves[-1] == pass_action:
        moves.pop()
        color = -color
    if color != to_play:
        moves.append(pass_action)
    pos = new_position(n, komi, history=history, max_game_length=max_game_length)
    for a in moves:
        if not pos.is_legal(a):
            raise ValueError(f"the pictured position is not legal (cannot place {action_to_vertex(a, n)})")
        pos = pos.play(a)
    if not np.array_equal(pos.board, board):
        raise ValueError("the pictured position is not legal (a group has no liberties)")
    # The setup moves are not real history: the position starts with the picture only.
    return Position(pos.state, n, float(komi), (pos.board,), history)


def play_moves(pos: Position, vertices: Sequence[str]) -> Position:
    """Play GTP vertices in order from ``pos`` (a test and GTP convenience)."""
    for v in vertices:
        pos = pos.play(vertex_to_action(v, pos.board_size))
    return pos
