"""AlphaZero self-play: many games in flight, one batched network call per search round for all of them.

:class:`GoSearchEnv` is the :class:`tree_search.SearchEnv` for Go: ``expand`` encodes every leaf of every game in
flight and runs one forward pass; ``step`` plays a move on the OpenSpiel state and scores finished games exactly
(area scoring). Values are the mover's view, terminal rewards the view of the player who moved (tree_search's
two-player convention).

The policy target is the root visit distribution (AlphaZero, ``search: puct``) or Gumbel AlphaZero's improved
policy (``search: gumbel``, the default: with 16–32 simulations on ~26 moves PUCT's visit counts are nearly flat
and teach little; Danihelka et al. 2022 show the Gumbel target still improves the policy there). Options:

* PUCT: Dirichlet noise at the root of full searches; visit-proportional sampling for the first
  ``temperature_moves``. Gumbel: the root Gumbel noise does the exploring; the move is the halving winner.
* Resignation below ``resign_threshold``; a ``no_resign_fraction`` of games never resign, and in those we record
  whether the player that *would* have resigned went on to win (a false resignation).
* KataGo's playout-cap randomisation: most moves get a cheap search and are not trained on.
* The cleanup rule (:mod:`go_baseline.rules`, ``cleanup``): a searched pass is replaced while dead stones would
  make the Tromp–Taylor count disagree with the dead-stones-removed one against the mover (the pass leaves the
  recorded target too). Both players follow it, so games end with the dead stones captured and their
  Tromp–Taylor result is the one a Chinese-rules referee would give; ``counted_score`` records that count.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from go_baseline.board import Position, new_position
from go_baseline.config import SelfPlaySection
from go_baseline.deadstones import DeadStoneJudge, PlayoutJudge, area_ownership
from go_baseline.features import encode, encode_batch
from go_baseline.network import PolicyValueNet, masked_policy
from go_baseline.rules import counted_score, replace_premature_pass
from tree_search import Expansion, GumbelConfig, Node, PuctConfig, SearchConfig, Transition, advance, search

__all__ = [
    "GameRecord",
    "GoSearchEnv",
    "SelfPlayStats",
    "game_generators",
    "game_utility",
    "legal_priors",
    "play_selfplay_games",
    "search_config",
]


def game_utility(result: int, score: float, board_size: int, score_weight: float) -> float:
    """The game's value for black: ``(1 − w)·result + w·clip(score / N², −1, 1)``.

    ``w = 0`` is AlphaZero's win/loss. ``w > 0`` adds a score term (KataGo's score utility, simplified): a win
    still always beats a loss, but among wins a larger margin is better. Without it, a 5x5 net that wins by 2.5
    is as happy as one that takes all 25 points, and white, lost in almost every self-play game at komi 7.5,
    sees all moves as equally bad and learns nothing. After a resignation (no score) the utility is ``result``.
    """
    if score_weight == 0.0 or math.isnan(score):
        return float(result)
    margin = max(-1.0, min(1.0, score / (board_size * board_size)))
    return (1.0 - score_weight) * float(result) + score_weight * margin


class GoSearchEnv:
    """``tree_search.SearchEnv`` over :class:`Position`: batched net evaluation, exact terminal scoring.

    Terminal rewards are :func:`game_utility` from the view of the player who moved. ``expand`` is one call per
    search round for every leaf of every game in flight, so its per-leaf work is batched too: one forward pass,
    and one masked softmax over all the leaves' legal moves (:func:`legal_priors`).
    """

    def __init__(self, net: PolicyValueNet, history: int, *, score_weight: float = 0.0) -> None:
        self.net = net
        self.history = history
        self.score_weight = score_weight
        self.positions_evaluated = 0

    def expand(self, states: Sequence[Position]) -> list[Expansion]:
        if not states:
            return []
        logits, values = self.net.predict(encode_batch(states, self.history))
        self.positions_evaluated += len(states)
        legal = [pos.legal_actions() for pos in states]
        priors = legal_priors(logits, legal)
        return [
            Expansion(tuple(actions), prior, value)
            for actions, prior, value in zip(legal, priors, values.tolist())
        ]

    def step(self, state: Position, action: int) -> Transition:
        child = state.play(action, checked=False)  # the search only plays the legal moves expand listed
        if child.is_terminal:
            u = game_utility(child.result(), child.score(), child.board_size, self.score_weight)
            return Transition(child, reward=u * state.to_play, terminal=True)
        return Transition(child, 0.0, False)


def legal_priors(logits: np.ndarray, legal: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """``softmax(logits[i, legal[i]])`` for every row ``i`` (:func:`masked_policy` row by row), in a few NumPy calls.

    A row without legal moves (a finished game) gets an empty prior.
    """
    counts = np.fromiter(map(len, legal), dtype=np.intp, count=len(legal))
    if counts.min() == 0:
        return [
            masked_policy(row, np.asarray(a, dtype=np.intp)) if len(a) else np.zeros(0)
            for row, a in zip(logits, legal)
        ]
    starts = np.zeros(len(legal), dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    rows = np.repeat(np.arange(len(legal)), counts)
    z = logits[
        rows, np.fromiter(itertools.chain.from_iterable(legal), dtype=np.intp, count=int(counts.sum()))
    ]
    z -= np.maximum.reduceat(z, starts)[rows]
    p = np.exp(z, out=z)
    p /= np.add.reduceat(p, starts)[rows]
    bounds = [*starts.tolist(), len(p)]
    return [p[bounds[i] : bounds[i + 1]] for i in range(len(legal))]


def search_config(
    kind: str,
    num_simulations: int,
    *,
    c_puct_init: float = 1.25,
    max_considered: int = 16,
    dirichlet_alpha: float = 0.3,
    dirichlet_fraction: float = 0.0,
    temperature: float = 0.0,
    gumbel_scale: float = 0.0,
) -> SearchConfig:
    """The ``tree_search`` config a Go recipe's ``search: puct|gumbel`` names (the one place the name becomes one).

    The defaults play the best move (the arena, GTP): PUCT without noise takes the most visited move, Gumbel
    without noise the sequential-halving winner. Self-play passes its exploration knobs.
    """
    if kind == "gumbel":
        return GumbelConfig(
            num_simulations, max_num_considered_actions=max_considered, gumbel_scale=gumbel_scale
        )
    if kind == "puct":
        return PuctConfig(
            num_simulations,
            c_puct_init=c_puct_init,
            dirichlet_alpha=dirichlet_alpha,
            dirichlet_fraction=dirichlet_fraction,
            temperature=temperature,
        )
    raise ValueError(f"search must be 'gumbel' or 'puct', got {kind!r}")


def _selfplay_configs(cfg: SelfPlaySection) -> dict[tuple[bool, bool], SearchConfig]:
    """``(full search, opening move) -> config``: full searches get the root noise (PUCT's Dirichlet; Gumbel's
    noise is always on), fast ones fewer simulations; opening moves are sampled with ``cfg.temperature``."""
    return {
        (full, opening): search_config(
            cfg.search,
            cfg.num_simulations if full else cfg.fast_simulations,
            c_puct_init=cfg.c_puct_init,
            max_considered=cfg.max_considered,
            dirichlet_alpha=cfg.dirichlet_alpha,
            dirichlet_fraction=cfg.dirichlet_fraction if full else 0.0,
            temperature=cfg.temperature if opening else 0.0,
            gumbel_scale=1.0,
        )
        for full in (True, False)
        for opening in (True, False)
    }


@dataclass
class GameRecord:
    """One finished game, as written to the replay buffer.

    Attributes:
      board_size / komi: the game.
      moves: every move played (OpenSpiel actions), black first.
      planes: ``[T, C, N, N]`` uint8 input planes of the *recorded* positions (full searches; all moves in PG).
      policy_targets: ``[T, N*N+1]`` float32 visit distributions (AZ) or one-hot played moves (PG).
      played: ``[T]`` the move played at each recorded position.
      to_play: ``[T]`` int8 colour to move at each recorded position (+1 black).
      result: +1 black won, −1 white won, 0 draw (by resignation or by area score).
      utility: black's :func:`game_utility` of the game (the value target, from black's view; = result when
        ``score_weight`` is 0).
      score: the area score (black − white − komi) of the final board (NaN after a resignation).
      counted_score: the same board counted with dead stones removed by the self-play judge (Chinese counting;
        NaN after a resignation or with ``cleanup`` off). Equal to ``score`` when the game was cleaned up.
      ownership: ``[N, N]`` int8 owner of every point of the final board (Tromp–Taylor: +1 black, −1 white, 0
        neutral), the target of the ownership head; None after a resignation.
      resigned: the colour that resigned, or 0.
      no_resign: the game was in the no-resign set.
      would_have_resigned: in a no-resign game, the first colour whose root value fell below the threshold (0 if
        none); a false resignation when that colour won.
      game_index: the game's position in the list of games of the call that played it (games finish out of
        order; the loop maps it to the game's number).
    """

    board_size: int
    komi: float
    moves: list[int] = field(default_factory=list)
    planes: list[np.ndarray] = field(default_factory=list)
    policy_targets: list[np.ndarray] = field(default_factory=list)
    played: list[int] = field(default_factory=list)
    to_play: list[int] = field(default_factory=list)
    result: int = 0
    utility: float = 0.0
    score: float = float("nan")
    counted_score: float = float("nan")
    ownership: np.ndarray | None = None
    resigned: int = 0
    no_resign: bool = False
    would_have_resigned: int = 0
    game_index: int = -1

    @property
    def num_positions(self) -> int:
        return len(self.played)

    @property
    def false_resignation(self) -> bool:
        return self.no_resign and self.would_have_resigned != 0 and self.would_have_resigned == self.result

    def add(self, pos: Position, history: int, target: np.ndarray, action: int) -> None:
        self.planes.append(encode(pos, history).astype(np.uint8))
        self.policy_targets.append(target.astype(np.float32))
        self.played.append(int(action))
        self.to_play.append(int(pos.to_play))


@dataclass
class SelfPlayStats:
    """Throughput of a self-play call: moves played, positions the net evaluated, wall seconds."""

    games: int = 0
    moves: int = 0
    evaluations: int = 0
    seconds: float = 0.0

    @property
    def moves_per_second(self) -> float:
        return self.moves / self.seconds if self.seconds > 0 else 0.0


def game_generators(
    rng: np.random.Generator | Sequence[np.random.Generator], num_games: int
) -> list[np.random.Generator]:
    """One generator per game: ``rng`` itself when it is a sequence of them, else ``num_games`` spawned children.

    Every random draw of a game (resign set, playout cap, search noise, move sampling) comes from its own
    generator, so a game depends only on its generator and the net, not on which games share its batch. That
    is what lets the loop shard self-play over processes: game ``g`` seeded ``default_rng([seed, g])`` is the
    same game whichever process plays it, and alongside whichever others.
    """
    if isinstance(rng, np.random.Generator):
        return list(rng.spawn(num_games))
    rngs = list(rng)
    if len(rngs) != num_games:
        raise ValueError(f"rng: got {len(rngs)} generators for {num_games} games")
    return rngs


def apply_cleanup(
    pos: Position, actions: Sequence[int], index: int, policy: np.ndarray, judge: DeadStoneJudge | None
) -> tuple[int, np.ndarray]:
    """The cleanup rule on a searched move: a premature pass becomes the best-ranked alternative (by ``policy``,
    the search's target over ``actions``), and the pass is taken out of the target."""
    new = replace_premature_pass(pos, actions, policy, index, judge)
    if new == index:
        return index, policy
    policy = np.array(policy, dtype=np.float64)
    policy[list(actions).index(pos.pass_action)] = 0.0
    if policy.sum() <= 0:
        policy[new] = 1.0
    return new, policy / policy.sum()


@dataclass
class _Slot:
    pos: Position
    root: Position | Node
    record: GameRecord
    rng: np.random.Generator


def play_selfplay_games(
    net: PolicyValueNet,
    *,
    num_games: int,
    board_size: int,
    komi: float,
    history: int,
    cfg: SelfPlaySection,
    rng: np.random.Generator | Sequence[np.random.Generator],
    max_game_length: int | None = None,
    on_game: Callable[[GameRecord], None] | None = None,
) -> tuple[list[GameRecord], SelfPlayStats]:
    """Play ``num_games`` AlphaZero self-play games, ``cfg.games_in_flight`` at a time.

    ``rng`` is one generator (each game gets a spawned child) or one per game (see :func:`game_generators`).
    ``on_game`` is called as soon as each game finishes (the loop writes it to disk there, so a killed run loses
    no finished game). Returns the records (in finishing order) and throughput statistics.
    """
    env = GoSearchEnv(net, history, score_weight=cfg.score_weight)
    judge = PlayoutJudge() if cfg.cleanup else None
    stats = SelfPlayStats()
    start = time.perf_counter()
    finished: list[GameRecord] = []
    started = 0
    slots: list[_Slot] = []
    num_actions = board_size * board_size + 1
    rngs = game_generators(rng, num_games)
    configs = _selfplay_configs(cfg)

    def new_slot(index: int) -> _Slot:
        g = rngs[index]
        pos = new_position(board_size, komi, history=history, max_game_length=max_game_length)
        rec = GameRecord(
            board_size, komi, no_resign=bool(g.random() < cfg.no_resign_fraction), game_index=index
        )
        return _Slot(pos, pos, rec, g)

    def finish(slot: _Slot, result: int, resigned: int = 0) -> None:
        rec = slot.record
        rec.result, rec.resigned = result, resigned
        rec.score = float("nan") if resigned else slot.pos.score()
        if not resigned:
            rec.ownership = area_ownership(slot.pos.board)
        if judge is not None and not resigned:
            rec.counted_score = counted_score(slot.pos, "chinese", judge)
        rec.utility = game_utility(result, rec.score, board_size, cfg.score_weight)
        finished.append(rec)
        stats.games += 1
        if on_game is not None:
            on_game(rec)

    while started < num_games or slots:
        while started < num_games and len(slots) < cfg.games_in_flight:
            slots.append(new_slot(started))
            started += 1
        full = [bool(s.rng.random() < cfg.playout_cap_fraction) for s in slots]
        groups: dict[SearchConfig, list[int]] = {}  # one batched search per config, full searches first
        for i, (slot, is_full) in enumerate(zip(slots, full)):
            opening = slot.pos.move_number < cfg.temperature_moves
            groups.setdefault(configs[is_full, opening], []).append(i)
        results: list = [None] * len(slots)
        for config, idx in sorted(groups.items(), key=lambda item: not full[item[1][0]]):
            roots = [slots[i].root for i in idx]
            searched = search(
                roots, env, config, two_player=True, value_bounds=(-1.0, 1.0), rng=[slots[i].rng for i in idx]
            )
            for i, r in zip(idx, searched):
                results[i] = r
        keep: list[_Slot] = []
        for slot, res, is_full in zip(slots, results, full):
            pos, rec = slot.pos, slot.record
            mover = pos.to_play
            if res.root_value < cfg.resign_threshold and pos.move_number >= cfg.resign_min_moves:
                if not rec.no_resign:
                    finish(slot, result=-mover, resigned=mover)
                    continue
                if rec.would_have_resigned == 0:
                    rec.would_have_resigned = mover
            index, policy = int(res.selected_index), np.asarray(res.improved_policy, dtype=np.float64)
            index, policy = apply_cleanup(pos, res.actions, index, policy, judge)
            action = int(res.actions[index])
            if is_full:
                target = np.zeros(num_actions, dtype=np.float64)
                target[list(res.actions)] = policy
                rec.add(pos, history, target, action)
            rec.moves.append(action)
            stats.moves += 1
            node = advance(res, index, env=env)  # the searched child (its Position is already played)
            child: Position = node.state
            slot.pos = child
            if child.is_terminal:
                finish(slot, result=child.result())
                continue
            # Gumbel's sequential-halving schedule assumes a fresh root (inherited visits would break it)
            slot.root = node if cfg.reuse_tree and cfg.search == "puct" else child
            keep.append(slot)
        slots = keep
    stats.evaluations = env.positions_evaluated
    stats.seconds = time.perf_counter() - start
    return finished, stats
