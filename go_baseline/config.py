"""The Go recipe: typed sections loaded with :func:`relabel_rl.config.load_config` (``--section.key value``).

Every knob has a documented default; the recipes in ``recipes/go/`` set the board-specific ones. Each field
declares its range and help with :func:`relabel_rl.config.knob`: the loader checks every field together before any
self-play starts, naming the key, and ``go-baseline train --help`` lists them. Rules that tie two fields together
are in the sections' ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from go_baseline.network import NetConfig
from relabel_rl.config import DISTINCT, NONEMPTY, knob

__all__ = ["BoardSection", "EvalSection", "GoConfig", "NetSection", "SelfPlaySection", "TrainSection"]


@dataclass(frozen=True)
class BoardSection:
    """size: board size N (5–19). komi: white's compensation. max_game_length: OpenSpiel's cap (3*N*N if null)."""

    size: int = knob(5, ge=5, le=19, help="board size N (N x N)")
    komi: float = knob(7.5, help="white's compensation in points; |komi| at most N*N")
    max_game_length: int | None = knob(None, ge=1, help="OpenSpiel's cap on moves per game (null: 3*N*N)")

    def __post_init__(self) -> None:
        if abs(self.komi) > self.size * self.size:
            raise ValueError(
                f"'board.komi' ({self.komi:g}) exceeds the board's {self.size * self.size} points: "
                "the winner would be fixed before the first move"
            )


@dataclass(frozen=True)
class NetSection:
    """history: boards in the input. blocks / filters: ResNet depth and width. value_hidden: value-head width.
    aux_heads: KataGo's ownership and score heads, trained on ``train.ownership_weight`` /
    ``train.score_target_weight`` (see :mod:`go_baseline.network`)."""

    history: int = knob(
        4, ge=1, help="board positions in the network's input (this one and the previous ones)"
    )
    blocks: int = knob(4, ge=1, help="residual blocks of the ResNet")
    filters: int = knob(32, ge=1, help="convolution channels of the ResNet")
    value_hidden: int = knob(64, ge=1, help="width of the value head's hidden layer")
    aux_heads: bool = knob(
        False, help="KataGo's auxiliary ownership and score heads (trained only; the search never reads them)"
    )

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

    games_in_flight: int = knob(
        16, ge=1, help="games advanced together (one batched net call per search round)"
    )
    search: Literal["puct", "gumbel"] = knob(
        "gumbel",
        help="puct (AlphaZero: visit-count targets) or gumbel (Gumbel AlphaZero: improved-policy targets)",
    )
    max_considered: int = knob(16, ge=1, help="Gumbel's m: root moves sampled for sequential halving")
    num_simulations: int = knob(32, ge=1, help="simulations per move of a full search")
    playout_cap_fraction: float = knob(
        1.0, gt=0.0, le=1.0, help="probability of a full search (KataGo's playout cap); 1.0 turns it off"
    )
    fast_simulations: int = knob(8, ge=1, help="simulations of a fast (untrained-on) search")
    dirichlet_alpha: float = knob(0.4, gt=0.0, help="root Dirichlet noise concentration (full searches)")
    dirichlet_fraction: float = knob(0.25, ge=0.0, le=1.0, help="share of the root prior replaced by noise")
    c_puct_init: float = knob(1.25, gt=0.0, help="PUCT exploration constant")
    temperature_moves: int = knob(
        6, ge=0, help="opening moves sampled from the search policy; later ones are greedy"
    )
    temperature: float = knob(
        1.0, gt=0.0, help="sampling temperature of those opening moves (and of the PG arm)"
    )
    resign_threshold: float = knob(
        -0.95, ge=-1.0, le=1.0, help="resign below this root value (mover's view); -1 disables"
    )
    resign_min_moves: int = knob(10, ge=0, help="never resign before this move")
    no_resign_fraction: float = knob(
        0.2, ge=0.0, le=1.0, help="share of games played out without resigning (measures false resignations)"
    )
    reuse_tree: bool = knob(True, help="keep the chosen child's subtree for the next move (PUCT only)")
    score_weight: float = knob(
        0.0, ge=0.0, le=1.0, help="weight of the score margin in the game's utility; 0 = win/loss (AlphaZero)"
    )
    cleanup: bool = knob(
        True, help="never pass while dead opponent stones can be captured or the counted score would lose"
    )


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

    algo: Literal["az", "pg"] = knob("az", help="az (search targets) or pg (REINFORCE on game outcomes only)")
    batch_size: int = knob(64, ge=1, help="positions per AZ optimiser step")
    steps_per_iteration: int = knob(40, ge=1, help="AZ optimiser steps after each batch of games")
    lr: float = knob(0.02, gt=0.0, help="SGD learning rate")
    weight_decay: float = knob(1e-4, ge=0.0, help="SGD weight decay")
    momentum: float = knob(0.9, ge=0.0, lt=1.0, help="SGD momentum")
    value_weight: float = knob(1.0, ge=0.0, help="weight of the value loss")
    window_games: int = knob(400, ge=1, help="the replay window, in most recent games")
    augment: bool = knob(True, help="a random board symmetry per sample")
    max_grad_norm: float = knob(5.0, gt=0.0, help="gradient clipping norm")
    pg_baseline: bool = knob(False, help="PG arm: subtract the value head's prediction")
    micro_batches: int | None = knob(
        None, ge=1, help="micro-batches per optimiser step, spread over processes (null: one per process)"
    )
    ownership_weight: float = knob(1.5, ge=0.0, help="weight of the ownership loss (with net.aux_heads)")
    score_target_weight: float = knob(0.5, ge=0.0, help="weight of the score loss (with net.aux_heads)")

    def __post_init__(self) -> None:
        if self.micro_batches is not None and self.micro_batches > self.batch_size:
            raise ValueError(
                f"'train.micro_batches' ({self.micro_batches}) exceeds 'train.batch_size' ({self.batch_size})"
            )


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

    every_iterations: int = knob(2, ge=1, help="evaluate after every this many iterations (and at the end)")
    games: int = knob(20, ge=1, help="games per opponent (colours alternate)")
    num_simulations: int = knob(
        16, ge=0, help="search simulations per move of the evaluated net (0: raw policy)"
    )
    opponents: list[str] = knob(
        ["random", "previous"],
        choices=("random", "previous", "gnugo"),
        check=DISTINCT,
        help="opponents to evaluate against: random, previous (the last evaluated checkpoint), gnugo",
    )
    gnugo_level: int = knob(1, ge=0, le=10, help="GnuGo's level for the gnugo opponent")
    rules: Literal["chinese", "tromp-taylor"] = knob(
        "chinese",
        help="how matches are counted: chinese (dead stones removed) or tromp-taylor (as they stand)",
    )
    dead_stones: Literal["auto", "playout", "gnugo"] = knob(
        "playout", help="who decides dead stones: playout (our judge), gnugo, or auto (gnugo when installed)"
    )


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

    run_dir: str = knob(
        "runs/go", check=NONEMPTY, help="the run directory (re-running the same command resumes it)"
    )
    seed: int = knob(
        0, ge=0, lt=2**63, help="seeds self-play, noise, training batches and the initial weights"
    )
    total_games: int = knob(400, ge=1, help="self-play games in all (the budget both arms are compared at)")
    games_per_iteration: int = knob(32, ge=1, help="games between training phases / checkpoints")
    threads: int = knob(1, ge=1, help="torch CPU threads")
    max_minutes: float | None = knob(
        None, gt=0.0, help="stop at the first iteration boundary after this much wall time (null: none)"
    )
    board: BoardSection = field(default_factory=BoardSection)
    net: NetSection = field(default_factory=NetSection)
    selfplay: SelfPlaySection = field(default_factory=SelfPlaySection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
