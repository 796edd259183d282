"""A GTP v2 engine around a checkpoint: ``go-baseline gtp --checkpoint PATH`` (Sabaki, GoGui, GnuGo matches).

Commands: protocol_version, name, version, known_command, list_commands, quit, boardsize, clear_board, komi,
play, genmove, final_score, final_status_list, showboard. Every malformed, unknown or illegal command gets a
``?`` reply and the engine keeps running; only ``quit`` (or end of input) stops it. Command ids (``12 genmove
b``) are echoed. Input is read as bytes: a line that is not valid UTF-8 gets ``? invalid UTF-8``, whatever the
locale or ``PYTHONIOENCODING``; numbers and vertices take ASCII digits only (``boardsize ٥`` is an error).

The network is trained for one board size; ``boardsize`` to another size is refused with ``? unacceptable size``
(what GTP prescribes). ``genmove`` runs the checkpoint's search (Gumbel or PUCT, as trained) and never
resigns; it follows the cleanup rule of :mod:`go_baseline.rules` (no pass while dead stones make the two counts
disagree against it). ``final_score`` counts under the engine's ``rules``: ``chinese`` (the default: dead stones
removed, decided by the engine's dead-stone judge — GnuGo's ``final_status_list dead`` when GnuGo is installed,
else Benson + random playouts; see :mod:`go_baseline.deadstones`) or ``tromp-taylor`` (every stone counts).
``final_status_list dead|alive|seki`` reports that judge's verdict (it marks no seki).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO

import numpy as np

from go_baseline.arena import NetPlayer
from go_baseline.board import (
    BLACK,
    GTP_COLUMNS,
    WHITE,
    Position,
    action_to_vertex,
    format_score,
    new_position,
    vertex_to_action,
)
from go_baseline.deadstones import DeadStoneJudge, PlayoutJudge, make_judge
from go_baseline.network import PolicyValueNet
from go_baseline.rules import Rules, check_rules, counted_score

__all__ = ["GtpEngine", "GtpFailure"]

VERSION = "0.2.0"
_ASCII_INT = re.compile(r"[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class GtpFailure(Exception):
    """A command failed; its message becomes the ``?`` reply."""


def _color(arg: str) -> int:
    c = arg.strip().lower()
    if c in ("b", "black"):
        return BLACK
    if c in ("w", "white"):
        return WHITE
    raise GtpFailure("invalid color")


class GtpEngine:
    """The engine's state: one game, the net, the search budget per move, the rules and the dead-stone judge.

    ``judge`` (default: a :class:`~go_baseline.deadstones.PlayoutJudge`) decides dead stones for ``final_score``
    under ``chinese`` rules and for the cleanup rule; the engine closes it on :meth:`close`.
    """

    def __init__(
        self,
        net: PolicyValueNet,
        *,
        num_simulations: int = 32,
        komi: float = 7.5,
        search: str = "gumbel",
        max_considered: int = 16,
        score_weight: float = 0.0,
        rules: Rules = "chinese",
        judge: DeadStoneJudge | None = None,
    ) -> None:
        if num_simulations < 1:
            raise ValueError(f"num_simulations must be >= 1, got {num_simulations}")
        self.rules = check_rules(rules)
        self.judge = judge if judge is not None else PlayoutJudge()
        self.net = net
        self.history = net.cfg.history
        self.board_size = net.cfg.board_size
        self.num_simulations = num_simulations
        self.komi = komi
        self.player = NetPlayer(
            net,
            history=self.history,
            num_simulations=num_simulations,
            search=search,
            max_considered=max_considered,
            score_weight=score_weight,
            judge=self.judge,
        )
        self.pos = new_position(self.board_size, komi, history=self.history)
        self.moves: list[int] = []
        self.done = False
        self.commands: dict[str, Callable[[list[str]], str]] = {
            "protocol_version": lambda a: "2",
            "name": lambda a: "relabel-rl",
            "version": lambda a: VERSION,
            "known_command": self._known_command,
            "list_commands": lambda a: "\n".join(sorted(self.commands)),
            "quit": self._quit,
            "boardsize": self._boardsize,
            "clear_board": self._clear_board,
            "komi": self._komi,
            "play": self._play,
            "genmove": self._genmove,
            "final_score": lambda a: format_score(counted_score(self.pos, self.rules, self.judge)),
            "final_status_list": self._final_status_list,
            "showboard": self._showboard,
        }

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        *,
        num_simulations: int = 32,
        threads: int = 1,
        rules: Rules = "chinese",
        dead_stones: str = "auto",
    ) -> GtpEngine:
        """The engine for a checkpoint file. Raises ValueError (with a one-line message) for bad arguments,
        FileNotFoundError for a missing checkpoint, before any heavy work."""
        import torch

        from go_baseline.train import load_net

        if num_simulations < 1:
            raise ValueError(f"--simulations must be >= 1, got {num_simulations}")
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        check_rules(rules)
        torch.set_num_threads(threads)
        net, meta = load_net(path)
        return cls(
            net,
            num_simulations=num_simulations,
            komi=float(meta.get("board", {}).get("komi", 7.5)),
            rules=rules,
            judge=make_judge(dead_stones),  # type: ignore[arg-type]
            **meta.get("search", {}),
        )

    def close(self) -> None:
        self.judge.close()

    # -- commands ---------------------------------------------------------------------------------------------
    def _known_command(self, args: list[str]) -> str:
        return "true" if args and args[0] in self.commands else "false"

    def _quit(self, args: list[str]) -> str:
        self.done = True
        return ""

    def _boardsize(self, args: list[str]) -> str:
        if len(args) != 1 or not _ASCII_INT.fullmatch(args[0]):
            raise GtpFailure("syntax error")
        if int(args[0]) != self.board_size:
            raise GtpFailure("unacceptable size")
        self._clear_board([])
        return ""

    def _clear_board(self, args: list[str]) -> str:
        self.pos = new_position(self.board_size, self.komi, history=self.history)
        self.moves = []
        return ""

    def _komi(self, args: list[str]) -> str:
        if len(args) != 1 or not _ASCII_FLOAT.fullmatch(args[0]):
            raise GtpFailure("syntax error")
        komi = float(args[0])
        if not np.isfinite(komi) or abs(komi) > 1000:
            raise GtpFailure("syntax error")
        self.komi = komi
        # komi changes the rules object; replay the game so far under the new komi
        moves = list(self.moves)
        self._clear_board([])
        for a in moves:
            self._apply(a)
        return ""

    def _apply(self, action: int) -> None:
        if self.pos.is_terminal:
            # the OpenSpiel game ended (two passes / repetition / cap); GTP clients may still send moves
            raise GtpFailure("illegal move")
        if not self.pos.is_legal(action):
            raise GtpFailure("illegal move")
        self.pos = self.pos.play(action)
        self.moves.append(action)

    def _align_color(self, color: int) -> None:
        """GTP lets either colour move; a move out of turn is preceded by a pass of the other colour."""
        if self.pos.to_play != color:
            self._apply(self.pos.pass_action)

    def _play(self, args: list[str]) -> str:
        if len(args) != 2:
            raise GtpFailure("syntax error")
        color = _color(args[0])
        try:
            action = vertex_to_action(args[1], self.board_size)
        except ValueError:
            raise GtpFailure("syntax error") from None
        if self.pos.is_terminal or (
            self.pos.to_play != color and self.moves and self.moves[-1] == self.pos.pass_action
        ):
            raise GtpFailure("illegal move")
        if not (self.pos.to_play == color and self.pos.is_legal(action)):
            if self.pos.to_play == color:
                raise GtpFailure("illegal move")
            trial = self.pos.play(self.pos.pass_action)
            if trial.is_terminal or not trial.is_legal(action):
                raise GtpFailure("illegal move")
        self._align_color(color)
        self._apply(action)
        return ""

    def _genmove(self, args: list[str]) -> str:
        if len(args) != 1:
            raise GtpFailure("syntax error")
        color = _color(args[0])
        if self.pos.is_terminal:
            return "pass"
        if self.pos.to_play != color:
            if self.moves and self.moves[-1] == self.pos.pass_action:
                return "pass"  # aligning would end the game with a second pass
            self._align_color(color)
        action = self.best_move(self.pos)
        self._apply(action)
        return action_to_vertex(action, self.board_size)

    def best_move(self, pos: Position) -> int:
        return self.player.genmove(pos)

    def _final_status_list(self, args: list[str]) -> str:
        if len(args) != 1 or args[0].lower() not in ("dead", "alive", "seki"):
            raise GtpFailure("syntax error")
        if args[0].lower() == "seki":
            return ""
        dead = self.judge.dead_stones(self.pos)
        stones = (self.pos.board != 0) & (dead if args[0].lower() == "dead" else ~dead)
        return " ".join(action_to_vertex(int(a), self.board_size) for a in np.flatnonzero(stones.reshape(-1)))

    def _showboard(self, args: list[str]) -> str:
        n = self.board_size
        rows = []
        for r in reversed(range(n)):
            line = " ".join({BLACK: "X", WHITE: "O"}.get(int(v), ".") for v in self.pos.board[r])
            rows.append(f"{r + 1:2d} {line}")
        rows.append("   " + " ".join(GTP_COLUMNS[:n]))
        return "\n" + "\n".join(rows)

    # -- protocol ---------------------------------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        """The full reply (``= ...`` / ``? ...``, ending in a blank line) to one input line; None for blanks."""
        line = "".join(ch for ch in line if ch == "\t" or ch == "\n" or 32 <= ord(ch) < 127 or ord(ch) > 127)
        line = line.split("#", 1)[0].replace("\t", " ").strip()
        if not line:
            return None
        parts = line.split()
        cmd_id = ""
        if _ASCII_INT.fullmatch(parts[0]):
            cmd_id, parts = parts[0], parts[1:]
            if not parts:
                return f"?{cmd_id} syntax error\n\n"
        name, args = parts[0].lower(), parts[1:]
        handler = self.commands.get(name) if parts[0].isascii() else None
        if handler is None:
            return f"?{cmd_id} unknown command\n\n"
        try:
            text = handler(args)
        except GtpFailure as e:
            return f"?{cmd_id} {e}\n\n"
        except Exception as e:  # a bug must not kill a GUI session: report it as a failure
            return f"?{cmd_id} internal error: {type(e).__name__}: {e}\n\n"
        return f"={cmd_id} {text}\n\n" if text else f"={cmd_id}\n\n"

    def handle_bytes(self, raw: bytes) -> str | None:
        """:meth:`handle` for one raw input line: invalid UTF-8 gets ``? invalid UTF-8`` (its id echoed)."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            head = raw.lstrip(b" \t")
            digits = re.match(rb"[0-9]+", head)
            has_id = digits is not None and head[digits.end() : digits.end() + 1] in (b" ", b"\t")
            cmd_id = digits.group().decode("ascii") if has_id and digits is not None else ""
            return f"?{cmd_id} invalid UTF-8\n\n"
        return self.handle(line)

    def serve(self, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        """Read command lines as bytes until ``quit`` or end of input; replies go out as UTF-8 bytes, so neither
        the locale nor ``PYTHONIOENCODING`` can make a line undecodable or a reply unwritable."""
        for raw in stdin:
            reply = self.handle_bytes(raw)
            if reply is None:
                continue
            stdout.write(reply.encode("utf-8", errors="replace"))
            stdout.flush()
            if self.done:
                break
