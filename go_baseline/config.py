"""The Go recipe: typed sections loaded with :func:`relabel_rl.config.load_config` (``--section.key value``).

Every knob has a documented default; the recipes in ``recipes/go/`` set the board-specific ones. Values are
checked here (``__post_init__``) so a bad recipe fails before any self-play starts, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from go_baseline.network import NetConfig

__all__ = ["BoardSection", "EvalSection", "GoConfig", "NetSection", "SelfPlaySection", "TrainSection"]


def _positive(section: str, **values: float) -> None:
    for k, v in values.items():
        if v <= 0:
            raise ValueError(f"'{section}.{k}' must be > 0, got {v}")


def _fraction(section: str, **values: float) -> None:
    for k, v in values.items():
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"'{section}.{k}' must be in [0, 1], got {v}")


@dataclass(frozen=True)
class BoardSection:
    """size: board size N (5–19). komi: white's compensation. max_game_length: OpenSpiel's cap (3*N*N if null)."""

    size: int = 5
    komi: float = 7.5
    max_game_length: int | None = None

    def __post_init__(self) -> None:
        if not 5 <= self.size <= 19:
            raise ValueError(f"'board.size' must be in [5, 19], got {self.size}")


@dataclass(frozen=True)
class NetSection:
    """history: boards in the input. blocks / filters: ResNet depth and width. value_hidden: value-head width.
    aux_heads: KataGo's ownership and score heads, trained on ``train.ownership_weight`` /
    ``train.score_target_weight`` (see :mod:`go_baseline.network`)."""

    history: int = 4
    blocks: int = 4
    filters: int = 32
    value_hidden: int = 64
    aux_heads: bool = False

    def net_config(self, board_size: int) -> NetConfig:
        return NetConfig(
            board_size, self.history, self.blocks, self.filters, self.value_hidden, aux_heads=self.aux_heads
        )


@dataclass(frozen=True)
class SelfPlaySection:
    """Self-play (AlphaZero arm; the PG arm uses ``games_in_flight`` and ``temperature`` only).

    Attributes:
      games_in_flight: games advanced together; one batched net call per search round covers all of them.
      search: ``puct`` (AlphaZero: PUCT, Dirichlet noise, target = visit distribution, temperature sampling)
        or ``gumbel`` (Gumbel AlphaZero: sequential halving over ``max_considered`` sampled root moves, target =
        the improved policy ``softmax(logits + σ(completed Q))``, move = the halving winner). Gumbel is the
        default because it improves the policy with few simulations (16–32 on a CPU), where PUCT's visit
        counts over ~26 moves stay nearly flat.
      max_considered: Gumbel's ``m``.
      num_simulations: simulations per move (a "full" search under playout-cap randomisation).
      playout_cap_fraction: KataGo's playout-cap randomisation: the probability of a full search; other moves
        use ``fast_simulations`` without noise and are not trained on. 1.0 turns it off.
      fast_simulations: simulations of a fast search.
      dirichlet_alpha / dirichlet_fraction: root noise (full searches only).
      c_puct_init: PUCT exploration constant.
      temperature_moves: moves sampled ∝ visit counts at the start of a game; later moves take the most visited.
      temperature: sampling temperature for those opening moves (and for the PG arm's moves).
      resign_threshold: resign when the root value (mover's view) is below this; −1 disables.
      resign_min_moves: never resign before this move.
      no_resign_fraction: share of games played out without resigning, to measure false resignations.
      reuse_tree: keep the chosen child's subtree for the next move (PUCT only: Gumbel's sequential-halving
        schedule needs a fresh root).
      score_weight: weight ``w`` of the score margin in the game's utility (see
        :func:`go_baseline.selfplay.game_utility`); 0 = pure win/loss (AlphaZero).
      cleanup: the cleanup rule (:mod:`go_baseline.rules`): no pass while dead stones on the board make the
        Tromp–Taylor count disagree with the dead-stones-removed count against the mover (dead stones judged by
        Benson's analysis + random playouts, :class:`go_baseline.deadstones.PlayoutJudge`). Off: plain
        Tromp–Taylor self-play, as before issue 14.
    """

    games_in_flight: int = 16
    search: Literal["puct", "gumbel"] = "gumbel"
    max_considered: int = 16
    num_simulations: int = 32
    playout_cap_fraction: float = 1.0
    fast_simulations: int = 8
    dirichlet_alpha: float = 0.4
    dirichlet_fraction: float = 0.25
    c_puct_init: float = 1.25
    temperature_moves: int = 6
    temperature: float = 1.0
    resign_threshold: float = -0.95
    resign_min_moves: int = 10
    no_resign_fraction: float = 0.2
    reuse_tree: bool = True
    score_weight: float = 0.0
    cleanup: bool = True

    def __post_init__(self) -> None:
        _positive("selfplay", games_in_flight=self.games_in_flight, num_simulations=self.num_simulations)
        _positive("selfplay", fast_simulations=self.fast_simulations, temperature=self.temperature)
        _fraction("selfplay", playout_cap_fraction=self.playout_cap_fraction, score_weight=self.score_weight)
        _fraction(
            "selfplay", dirichlet_fraction=self.dirichlet_fraction, no_resign_fraction=self.no_resign_fraction
        )
        if not -1.0 <= self.resign_threshold <= 1.0:
            raise ValueError(f"'selfplay.resign_threshold' must be in [-1, 1], got {self.resign_threshold}")


@dataclass(frozen=True)
class TrainSection:
    """Training.

    Attributes:
      algo: ``az`` (search targets) or ``pg`` (REINFORCE on game outcomes only).
      batch_size: positions per AZ step.
      steps_per_iteration: AZ optimiser steps after each batch of games (the PG arm takes one step per batch).
      lr / weight_decay / momentum: SGD with momentum (AlphaZero's optimiser).
      value_weight: weight of the value loss.
      window_games: the replay window, in most recent games.
      augment: a random board symmetry per sample.
      max_grad_norm: gradient clipping.
      pg_baseline: subtract the value head's prediction in the PG arm (still one scalar outcome per game).
      ownership_weight / score_target_weight: weights of the auxiliary ownership and score losses (used when
        ``net.aux_heads``; KataGo weighs ownership 1.5 per point-averaged cross-entropy).
      micro_batches: each optimiser step's batch is cut into this many equal micro-batches, spread over the
        processes of an ``accelerate launch`` (a multiple of their number; null = one per process). The net has
        BatchNorm, whose batch statistics are per micro-batch, so a run's numbers depend on this knob and not on
        the number of processes: 1 process with ``micro_batches: 2`` computes what 2 processes compute.
    """

    algo: Literal["az", "pg"] = "az"
    batch_size: int = 64
    steps_per_iteration: int = 40
    lr: float = 0.02
    weight_decay: float = 1e-4
    momentum: float = 0.9
    value_weight: float = 1.0
    window_games: int = 400
    augment: bool = True
    max_grad_norm: float = 5.0
    pg_baseline: bool = False
    micro_batches: int | None = None
    ownership_weight: float = 1.5
    score_target_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.micro_batches is not None:
            _positive("train", micro_batches=self.micro_batches)
            if self.micro_batches > self.batch_size:
                raise ValueError(
                    f"'train.micro_batches' ({self.micro_batches}) exceeds 'train.batch_size' ({self.batch_size})"
                )
        _positive(
            "train", batch_size=self.batch_size, steps_per_iteration=self.steps_per_iteration, lr=self.lr
        )
        _positive("train", window_games=self.window_games, max_grad_norm=self.max_grad_norm)
        for k in ("ownership_weight", "score_target_weight"):
            if getattr(self, k) < 0:
                raise ValueError(f"'train.{k}' must be >= 0, got {getattr(self, k)}")


@dataclass(frozen=True)
class EvalSection:
    """Evaluation during the loop (and defaults of ``go-baseline eval``).

    Attributes:
      every_iterations: evaluate after every this many iterations (and at the end).
      games: games per opponent (colours alternate).
      num_simulations: search simulations per move of the evaluated net (0 = play the raw policy's argmax); the
        search is Gumbel without noise (the halving winner) or PUCT (most visited), as ``selfplay.search``.
      opponents: any of ``random``, ``previous`` (the checkpoint from the last evaluation), ``gnugo``.
      gnugo_level: GnuGo's level for the ``gnugo`` opponent.
      rules: how games are counted (:mod:`go_baseline.rules`): ``chinese`` (dead stones removed: GnuGo's own
        verdict in games GnuGo plays, else ``dead_stones``'s) or ``tromp-taylor`` (every stone on the board).
      dead_stones: the judge of games without GnuGo: ``playout`` (Benson + random playouts; the same on every
        machine), ``gnugo`` (GnuGo's ``final_status_list dead``) or ``auto`` (GnuGo when installed).
    """

    every_iterations: int = 2
    games: int = 20
    num_simulations: int = 16
    opponents: list[str] = field(default_factory=lambda: ["random", "previous"])
    gnugo_level: int = 1
    rules: Literal["chinese", "tromp-taylor"] = "chinese"
    dead_stones: Literal["auto", "playout", "gnugo"] = "playout"

    def __post_init__(self) -> None:
        bad = [o for o in self.opponents if o not in ("random", "previous", "gnugo")]
        if bad:
            raise ValueError(f"'eval.opponents': unknown {bad}; choose from random, previous, gnugo")
        _positive("eval", every_iterations=self.every_iterations, games=self.games)
        if self.rules not in ("chinese", "tromp-taylor"):
            raise ValueError(f"'eval.rules' must be chinese or tromp-taylor, got {self.rules!r}")
        if self.dead_stones not in ("auto", "playout", "gnugo"):
            raise ValueError(f"'eval.dead_stones' must be auto, playout or gnugo, got {self.dead_stones!r}")


@dataclass(frozen=True)
class GoConfig:
    """A Go run: ``total_games`` self-play games in iterations of ``games_per_iteration``.

    Attributes:
      run_dir: the run directory (re-running the same command resumes it).
      seed: seeds self-play sampling, noise, training batches and the initial weights.
      total_games: self-play games to play in all (the budget both arms are compared at).
      games_per_iteration: games between training phases / checkpoints.
      threads: torch CPU threads.
      max_minutes: stop at the first iteration boundary after this much wall time in this session (null: none);
        a time-boxed run ("30 minutes on 2 cores") records the games it reached.
    """

    run_dir: str = "runs/go"
    seed: int = 0
    total_games: int = 400
    games_per_iteration: int = 32
    threads: int = 1
    max_minutes: float | None = None
    board: BoardSection = field(default_factory=BoardSection)
    net: NetSection = field(default_factory=NetSection)
    selfplay: SelfPlaySection = field(default_factory=SelfPlaySection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        _positive("<root>", total_games=self.total_games, games_per_iteration=self.games_per_iteration)
        _positive("<root>", threads=self.threads)
