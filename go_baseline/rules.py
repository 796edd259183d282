"""Scoring rules, and the cleanup rule: never pass while dead stones make the two counts disagree against you.

Two ways to count a finished game (both area scoring: stones + surrounded empty points − komi):

* ``tromp-taylor`` — every stone on the board counts; needs no judgement. OpenSpiel's terminal states and our
  search's terminal values use it.
* ``chinese`` — dead stones are removed first (decided by a :mod:`go_baseline.deadstones` judge), as GnuGo and
  Chinese-rules referees count. The default for GTP and for the arena.

The counts agree exactly when no dead stones are left on the board. An engine trained under Tromp–Taylor that
passes with dead stones on the board believes a score no referee gives (issue 14: "W+5.5" against a referee's
"B+17.5"). So every player of ours — self-play, arena, GTP — follows the **cleanup rule** (KataGo's "cleanup
before passing"; Fuego's ``TrompTaylorPassCheck`` is the same idea): a pass chosen by the search is replaced by
its best-ranked alternative when

* **cleanup** — opponent stones the judge calls dead are still on the board and one can be attacked (a legal
  move on a liberty of a dead chain): Tromp–Taylor would credit the opponent with them, so capture them first;
* **counted loss** — the board counts as a Tromp–Taylor win or draw for the mover that the dead-stones-removed
  count turns into a loss: the mover's own dead stones flatter it, and a pass invites the opponent to end a
  game the mover believes won and a referee gives away. It plays on (any legal move that does not fill its own
  eye and is not inside the opponent's pass-alive area) until the two counts agree on the winner.

When no such move exists the pass stands. In self-play both players follow the rule, so a game ends with every
dead stone captured and its Tromp–Taylor result (what the search and the value target use) is the Chinese one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from go_baseline.board import EMPTY, Position, area_score
from go_baseline.deadstones import DeadStoneJudge, diagonals, is_eye, neighbours, pass_alive, remove_dead

__all__ = [
    "RULES",
    "Rules",
    "check_rules",
    "counted_score",
    "pass_alternatives",
    "replace_premature_pass",
]

Rules = Literal["tromp-taylor", "chinese"]
RULES: tuple[str, ...] = ("tromp-taylor", "chinese")


def check_rules(rules: str) -> Rules:
    if rules not in RULES:
        raise ValueError(f"rules must be one of {', '.join(RULES)}, got {rules!r}")
    return rules  # type: ignore[return-value]


def counted_score(pos: Position, rules: Rules, judge: DeadStoneJudge | None = None) -> float:
    """Black − white − komi of ``pos``'s board under ``rules`` (``chinese`` needs a ``judge``)."""
    if check_rules(rules) == "tromp-taylor":
        return pos.score()
    if judge is None:
        raise ValueError("chinese counting needs a dead-stone judge")
    return area_score(remove_dead(pos.board, judge.dead_stones(pos)), pos.komi)


def _result(score: float) -> int:
    return 0 if score == 0 else (1 if score > 0 else -1)


def pass_alternatives(pos: Position, judge: DeadStoneJudge) -> tuple[str, list[int]] | None:
    """Why passing now would be premature, and the moves to play instead; None when passing is fine.

    Returns ``("cleanup", moves)`` or ``("counted loss", moves)`` (see the module docstring); ``moves`` is never
    empty (without an alternative the pass stands).
    """
    if pos.is_terminal:
        return None
    n, mover = pos.board_size, pos.to_play
    board = pos.board
    dead = judge.dead_stones(pos)
    legal = set(pos.legal_actions()) - {pos.pass_action}
    flat = board.reshape(-1).tolist()
    nbrs, diags = neighbours(n), diagonals(n)
    no_own_eye = {a for a in legal if not is_eye(flat, a, mover, nbrs, diags)}
    opp_dead = np.flatnonzero((dead & (board == -mover)).reshape(-1))
    if opp_dead.size:
        libs = {q for p in opp_dead for q in nbrs[p] if flat[q] == EMPTY}
        moves = sorted(libs & no_own_eye)
        if moves:
            return "cleanup", moves
    if (dead & (board == mover)).any():
        tromp_taylor = _result(area_score(board, pos.komi)) * mover
        counted = _result(area_score(remove_dead(board, dead), pos.komi)) * mover
        if counted < tromp_taylor:
            _, opponent_safe = pass_alive(board, -mover)
            moves = sorted(a for a in no_own_eye if not opponent_safe.reshape(-1)[a])
            if moves:
                return "counted loss", moves
    return None


def replace_premature_pass(
    pos: Position, actions: Sequence[int], ranking: np.ndarray, chosen: int, judge: DeadStoneJudge | None
) -> int:
    """The index (into ``actions``) to play: ``chosen``, unless it is a premature pass.

    ``ranking``: ``[len(actions)]`` preference of each action, higher first (the search's improved policy or
    visit counts, or the raw policy). A premature pass is replaced by the best-ranked allowed alternative
    (:func:`pass_alternatives`); actions outside ``actions`` are never chosen. ``judge=None`` turns the rule off.
    """
    if judge is None or int(actions[chosen]) != pos.pass_action:
        return chosen
    found = pass_alternatives(pos, judge)
    if found is None:
        return chosen
    allowed = set(found[1])
    candidates = [i for i, a in enumerate(actions) if int(a) in allowed]
    if not candidates:
        return chosen
    return max(candidates, key=lambda i: (float(ranking[i]), -i))
