"""The arena: games between players (network, random, earlier checkpoints, GnuGo), win rates with Wilson
intervals, Elo differences, and an SGF of every game.

Colours alternate game by game. Games are played to the end under OpenSpiel's rules (two passes, a repeated
position, or the move cap) and counted under the match's ``rules`` (:mod:`go_baseline.rules`): ``chinese``
(the default) removes the dead stones first — GnuGo's own ``final_status_list dead`` when GnuGo plays in the
game, else the match's dead-stone judge — and ``tromp-taylor`` counts the board as it stands. A ``resign`` from
GnuGo or an illegal move by a player ends the game as a loss for that player. Our network players follow the
cleanup rule (no pass while dead stones distort the count against them), as in self-play.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from go_baseline.board import BLACK, Position, action_to_vertex, area_score, new_position, vertex_to_action
from go_baseline.deadstones import DeadStoneJudge, PlayoutJudge, parse_vertex_list, remove_dead
from go_baseline.gnugo import GnuGo, GtpClient
from go_baseline.network import PolicyValueNet
from go_baseline.rules import Rules, check_rules, replace_premature_pass
from go_baseline.selfplay import GoSearchEnv, search_config
from go_baseline.sgf import game_to_sgf, write_sgf
from relabel_rl.report import wilson_interval
from tree_search import search

__all__ = [
    "GameOutcome",
    "GnuGoPlayer",
    "GtpPlayer",
    "MatchResult",
    "NetPlayer",
    "Player",
    "RandomPlayer",
    "elo_from_rate",
    "play_game",
    "play_match",
]


class Player(Protocol):
    name: str

    def new_game(self, board_size: int, komi: float) -> None: ...

    def observe(self, color: int, action: int) -> None:
        """The opponent (or anyone) played ``action`` as ``color``."""

    def genmove(self, pos: Position) -> int | None:
        """A move for the side to move in ``pos``; None means resign."""

    def close(self) -> None: ...


class RandomPlayer:
    """Uniform over legal board moves (passes only when no board move is legal)."""

    def __init__(self, seed: int = 0) -> None:
        self.name = "random"
        self.rng = np.random.default_rng(seed)

    def new_game(self, board_size: int, komi: float) -> None:
        pass

    def observe(self, color: int, action: int) -> None:
        pass

    def genmove(self, pos: Position) -> int:
        legal = [a for a in pos.legal_actions() if a != pos.pass_action]
        return int(self.rng.choice(legal)) if legal else pos.pass_action

    def close(self) -> None:
        pass


class NetPlayer:
    """A network with ``num_simulations`` of search per move (0: the raw policy's most likely move).

    ``search="gumbel"``: Gumbel search without noise, playing the sequential-halving winner (strong with few
    simulations); ``"puct"``: PUCT, playing the most visited move. ``score_weight`` must match training (the
    terminal rewards of the search are on the value net's scale). ``cleanup``: follow the cleanup rule, with
    ``judge`` deciding dead stones (default: a :class:`~go_baseline.deadstones.PlayoutJudge`).
    """

    def __init__(
        self,
        net: PolicyValueNet,
        *,
        history: int,
        num_simulations: int = 16,
        name: str = "net",
        c_puct_init: float = 1.25,
        search: str = "gumbel",
        max_considered: int = 16,
        score_weight: float = 0.0,
        cleanup: bool = True,
        judge: DeadStoneJudge | None = None,
    ) -> None:
        if search not in ("gumbel", "puct"):
            raise ValueError(f"search must be 'gumbel' or 'puct', got {search!r}")
        self.judge = (judge or PlayoutJudge()) if cleanup else None
        self.net, self.history, self.num_simulations, self.name = net, history, num_simulations, name
        # the search, built once; None: play the raw policy
        self.config = (
            search_config(search, num_simulations, c_puct_init=c_puct_init, max_considered=max_considered)
            if num_simulations > 0
            else None
        )
        self.env = GoSearchEnv(net, history, score_weight=score_weight)

    def new_game(self, board_size: int, komi: float) -> None:
        if board_size != self.net.cfg.board_size:
            raise ValueError(
                f"{self.name} was trained on {self.net.cfg.board_size}x{self.net.cfg.board_size}"
            )

    def observe(self, color: int, action: int) -> None:
        pass

    def genmove(self, pos: Position) -> int:
        if self.config is None:
            exp = self.env.expand([pos])[0]
            chosen = replace_premature_pass(
                pos, exp.actions, exp.prior, int(np.argmax(exp.prior)), self.judge
            )
            return int(exp.actions[chosen])
        (res,) = search([pos], self.env, self.config, two_player=True, value_bounds=(-1.0, 1.0), rng=0)
        return self._cleaned(pos, res, int(res.selected_index))

    def _cleaned(self, pos: Position, res, index: int) -> int:
        """The searched move, or the best-ranked alternative to a premature pass (:mod:`go_baseline.rules`)."""
        return int(
            res.actions[replace_premature_pass(pos, res.actions, res.improved_policy, index, self.judge)]
        )

    def close(self) -> None:
        pass


class GtpPlayer:
    """Any GTP engine (a :class:`GtpClient`) as a player; kept in sync by sending every move with ``play``."""

    def __init__(self, client: GtpClient, name: str) -> None:
        self.engine, self.name, self.board_size = client, name, 0

    def new_game(self, board_size: int, komi: float) -> None:
        self.board_size = board_size
        self.engine.send(f"boardsize {board_size}")
        self.engine.send("clear_board")
        self.engine.send(f"komi {komi:g}")

    def observe(self, color: int, action: int) -> None:
        self.engine.send(f"play {'B' if color == BLACK else 'W'} {action_to_vertex(action, self.board_size)}")

    def genmove(self, pos: Position) -> int | None:
        reply = self.engine.send(f"genmove {'B' if pos.to_play == BLACK else 'W'}")
        if reply.lower() == "resign":
            return None
        return vertex_to_action(reply, self.board_size)

    def final_score(self) -> str:
        return self.engine.send("final_score")

    def dead_stones(self) -> np.ndarray:
        """The engine's ``final_status_list dead`` for the game it was told, as a boolean ``[N, N]`` mask."""
        return parse_vertex_list(self.engine.send("final_status_list dead"), self.board_size)

    def close(self) -> None:
        self.engine.close()


class GnuGoPlayer(GtpPlayer):
    """GnuGo over GTP with Chinese rules at ``level``.

    GnuGo is deterministic for a given random seed, and so is our evaluated net (search without noise), so a
    match of identical games would measure one game many times. Game ``k`` therefore runs under GnuGo seed
    ``seed + k`` (``set_random_seed``); :func:`play_match` reports how many distinct games were played.
    """

    def __init__(self, level: int = 10, *, seed: int | None = None) -> None:
        super().__init__(GnuGo(level, seed=seed), f"gnugo-L{level}")
        self.level = level
        self.seed = 0 if seed is None else int(seed)
        self.games_started = 0

    def new_game(self, board_size: int, komi: float) -> None:
        super().new_game(board_size, komi)
        self.engine.send(f"set_random_seed {self.seed + self.games_started}")
        self.games_started += 1


@dataclass(frozen=True)
class GameOutcome:
    """One arena game.

    Attributes:
      result: +1 black won / −1 white / 0 draw, by ``score``.
      score: black − white − komi of the final board under ``rules`` (NaN after a resignation or forfeit).
      ended_by: ``score``, ``resign`` or ``illegal``.
      referee_score: GnuGo's own ``final_score`` (Chinese counting, its dead stones removed) when GnuGo played;
        NaN otherwise. Under ``chinese`` rules ``score`` uses GnuGo's dead stones, so the two agree (a check).
      rules: ``chinese`` or ``tromp-taylor``.
      tromp_taylor_score: the board counted as it stands (every stone alive); equals ``score`` once the dead
        stones have been captured (NaN after a resignation or forfeit).
    """

    black: str
    white: str
    moves: tuple[int, ...]
    result: int
    score: float
    ended_by: str
    referee_score: float = float("nan")
    rules: str = "tromp-taylor"
    tromp_taylor_score: float = float("nan")


def play_game(
    black: Player,
    white: Player,
    *,
    board_size: int,
    komi: float,
    max_game_length: int | None = None,
    rules: Rules = "chinese",
    judge: DeadStoneJudge | None = None,
) -> GameOutcome:
    """Play one game to the end; both players are told every move.

    Under ``chinese`` rules the dead stones are GnuGo's when GnuGo plays, else ``judge``'s (default: a
    :class:`~go_baseline.deadstones.PlayoutJudge`).
    """
    check_rules(rules)
    pos = new_position(board_size, komi, history=16, max_game_length=max_game_length)
    for p in (black, white):
        p.new_game(board_size, komi)
    moves: list[int] = []
    while not pos.is_terminal:
        mover, other = (black, white) if pos.to_play == BLACK else (white, black)
        action = mover.genmove(pos)
        if action is None or not pos.is_legal(action):
            ended = "resign" if action is None else "illegal"
            nan = float("nan")
            return GameOutcome(black.name, white.name, tuple(moves), -pos.to_play, nan, ended, rules=rules)
        color = pos.to_play
        pos = pos.play(action)
        moves.append(action)
        other.observe(color, action)
    gnugo = next((p for p in (black, white) if isinstance(p, GnuGoPlayer)), None)
    referee = _parse_score(gnugo.final_score()) if gnugo is not None else float("nan")
    score = tromp_taylor = pos.score()
    if rules == "chinese":
        dead = gnugo.dead_stones() if gnugo is not None else (judge or PlayoutJudge()).dead_stones(pos)
        score = area_score(remove_dead(pos.board, dead), komi)
    result = 0 if score == 0 else (1 if score > 0 else -1)
    return GameOutcome(
        black.name, white.name, tuple(moves), result, score, "score", referee, rules, tromp_taylor
    )


def _parse_score(text: str) -> float:
    """``"B+17.5"`` → 17.5, ``"W+2.5"`` → −2.5, ``"0"`` → 0 (GTP final_score)."""
    t = text.strip().upper()
    if t in ("0", "DRAW", "JIGO"):
        return 0.0
    if len(t) < 3 or t[0] not in "BW" or t[1] != "+":
        raise ValueError(f"unparseable final_score {text!r}")
    return float(t[2:]) * (1 if t[0] == "B" else -1)


def elo_from_rate(rate: float, n: int) -> float:
    """Elo difference implied by a win rate, clipped to what half a game out of ``n`` would imply (finite, for
    plotting learning curves; the report's intervals use :func:`relabel_rl.report.elo_difference`)."""
    eps = 0.5 / max(n, 1)
    p = min(max(rate, eps), 1 - eps)
    return 400.0 * math.log10(p / (1 - p))


@dataclass
class MatchResult:
    """``player`` against ``opponent``: wins/losses/draws from ``player``'s view, with 95% intervals."""

    player: str
    opponent: str
    wins: int = 0
    losses: int = 0
    draws: int = 0
    games: list[GameOutcome] = field(default_factory=list)
    player_was_black: list[bool] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.draws

    @property
    def win_rate(self) -> float:
        return (self.wins + 0.5 * self.draws) / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        r = wilson_interval(self.wins + 0.5 * self.draws, self.n)
        return r.low, r.high

    @property
    def elo(self) -> float:
        return elo_from_rate(self.win_rate, self.n)

    def summary(self) -> dict:
        lo, hi = self.ci
        return {
            "player": self.player,
            "opponent": self.opponent,
            "eval_games": self.n,
            "wins": self.wins,
            "losses": self.losses,
            "draws": self.draws,
            "win_rate": self.win_rate,
            "ci95": [lo, hi],
            "elo": self.elo,
            "elo_ci95": [elo_from_rate(lo, self.n), elo_from_rate(hi, self.n)],
            "rules": self.games[0].rules if self.games else None,
            "scores": [g.score for g in self.games],
            "tromp_taylor_scores": [g.tromp_taylor_score for g in self.games],
            "referee_scores": [g.referee_score for g in self.games],
            "distinct_games": len({g.moves for g in self.games}),
            **self._by_colour(),
        }

    def _by_colour(self) -> dict:
        out = {}
        for colour, sign in (("black", 1), ("white", -1)):
            mine = [g for g, b in zip(self.games, self.player_was_black) if b == (sign == 1)]
            score = sum(1.0 if g.result == sign else 0.5 if g.result == 0 else 0.0 for g in mine)
            out[f"games_as_{colour}"] = len(mine)
            out[f"win_rate_as_{colour}"] = score / len(mine) if mine else float("nan")
        return out


def play_match(
    player: Player,
    opponent: Player,
    *,
    games: int,
    board_size: int,
    komi: float,
    sgf_dir: str | Path | None = None,
    sgf_prefix: str = "eval",
    max_game_length: int | None = None,
    player_colors: str = "alternate",
    rules: Rules = "chinese",
    judge: DeadStoneJudge | None = None,
) -> MatchResult:
    """``games`` games, colours alternating (``player`` black first) or fixed (``"black"`` / ``"white"``),
    counted under ``rules`` (see :func:`play_game`)."""
    out = MatchResult(player.name, opponent.name)
    for g in range(games):
        player_black = {"alternate": g % 2 == 0, "black": True, "white": False}[player_colors]
        black, white = (player, opponent) if player_black else (opponent, player)
        game = play_game(
            black,
            white,
            board_size=board_size,
            komi=komi,
            max_game_length=max_game_length,
            rules=rules,
            judge=judge,
        )
        out.games.append(game)
        out.player_was_black.append(player_black)
        mine = game.result * (1 if player_black else -1)
        if mine > 0:
            out.wins += 1
        elif mine < 0:
            out.losses += 1
        else:
            out.draws += 1
        if sgf_dir is not None:
            sgf = game_to_sgf(
                game.moves,
                board_size=board_size,
                komi=komi,
                result=game.result,
                score=game.score,
                resigned=(-game.result if game.ended_by != "score" else 0),
                black=black.name,
                white=white.name,
                comment=f"ended by {game.ended_by}",
                rules=rules,
            )
            write_sgf(Path(sgf_dir) / f"{sgf_prefix}_{g:04d}.sgf", sgf)
    return out
