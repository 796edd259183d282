"""SGF (FF[4]) for every self-play and evaluation game, readable by Sabaki, GoGui and GnuGo.

Written by hand because the format is a few lines for a linear game record and no well-kept Python SGF library
is already a dependency. SGF coordinates are letters ``a``… from the *top-left*; OpenSpiel's row 0 is rank 1
(the bottom), so the row is flipped. Pass is the empty move ``B[]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from go_baseline.board import format_score

__all__ = ["game_to_sgf", "parse_sgf_moves", "write_sgf"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_RULES = {"chinese": "Chinese", "tromp-taylor": "Tromp-Taylor"}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("]", "\\]")


def _coord(action: int, n: int) -> str:
    if action == n * n:
        return ""
    row, col = divmod(action, n)
    return _LETTERS[col] + _LETTERS[n - 1 - row]


def game_to_sgf(
    moves: Sequence[int],
    *,
    board_size: int,
    komi: float,
    result: int,
    score: float = float("nan"),
    resigned: int = 0,
    black: str = "relabel-rl",
    white: str = "relabel-rl",
    comment: str = "",
    rules: str = "chinese",
) -> str:
    """The game as an SGF string. ``result``: +1 black won, −1 white, 0 draw; ``score`` the area margin;
    ``rules``: ``chinese`` (``RU[Chinese]``) or ``tromp-taylor`` (``RU[Tromp-Taylor]``), how it was counted."""
    if resigned:
        res = "W+R" if resigned == 1 else "B+R"
    elif not math.isnan(score):
        res = format_score(score)
    else:
        res = {1: "B+", -1: "W+", 0: "0"}[int(result)]
    head = (
        f"(;GM[1]FF[4]CA[UTF-8]AP[relabel-rl:go_baseline]RU[{_RULES.get(rules, rules)}]SZ[{board_size}]KM[{komi:g}]"
        f"PB[{_escape(black)}]PW[{_escape(white)}]RE[{res}]"
    )
    if comment:
        head += f"C[{_escape(comment)}]"
    body = "".join(f";{'BW'[i % 2]}[{_coord(a, board_size)}]" for i, a in enumerate(moves))
    return head + body + ")\n"


def write_sgf(path: str | Path, sgf: str) -> Path:
    """Write atomically (temp file + rename), so a killed run never leaves half an SGF."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".sgf.tmp")
    tmp.write_text(sgf)
    tmp.replace(p)
    return p


def parse_sgf_moves(sgf: str, board_size: int) -> list[int]:
    """The main-line moves of a linear SGF written by :func:`game_to_sgf` (for tests and tools)."""
    out = []
    for chunk in sgf.split(";")[2:]:
        chunk = chunk.strip().rstrip(")").strip()
        if len(chunk) < 3 or chunk[0] not in "BW" or chunk[1] != "[":
            continue
        coord = chunk[2 : chunk.index("]")]
        if coord == "":
            out.append(board_size * board_size)
        else:
            col, row = _LETTERS.index(coord[0]), board_size - 1 - _LETTERS.index(coord[1])
            out.append(row * board_size + col)
    return out
