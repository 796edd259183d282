"""Acceptance (issue 14): our GTP engine against GnuGo level 10 on 5x5, every move replayed into a separate GnuGo
``--chinese-rules`` referee that is then asked for the score: no illegal move, and our ``final_score`` equals the
referee's in every game — with GnuGo deciding our dead stones (``--dead-stones auto``, the default where GnuGo
is installed) and with our own Benson + playout judge (``--dead-stones playout``, what runs without GnuGo)."""

from __future__ import annotations

import sys

import pytest

from go_baseline.arena import GnuGoPlayer, GtpPlayer, play_game
from go_baseline.board import action_to_vertex, format_score
from go_baseline.config import GoConfig
from go_baseline.gnugo import GnuGo, GtpClient, find_gnugo
from go_baseline.loop import run
from go_baseline.train import latest_checkpoint
from relabel_rl.config import load_config

pytestmark = pytest.mark.skipif(find_gnugo() is None, reason="gnugo not installed (apt-get install gnugo)")


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A tiny checkpoint from the training loop itself (8 self-play games, 6 SGD steps)."""
    from test_go_loop import TINY

    out = tmp_path_factory.mktemp("referee") / "run"
    data = {
        **TINY,
        "run_dir": str(out),
        "eval": {**TINY["eval"], "opponents": ["random"], "every_iterations": 9},
    }
    run(load_config(GoConfig, data=data), progress=False)
    return latest_checkpoint(out / "checkpoints")


def _referee_score(referee: GnuGo, moves: tuple[int, ...], board_size: int, komi: float) -> str:
    """Replay every move into the referee (a GTP failure on an illegal one) and ask for its count."""
    referee.send(f"boardsize {board_size}")
    referee.send("clear_board")
    referee.send(f"komi {komi:g}")
    for i, a in enumerate(moves):
        referee.send(f"play {'BW'[i % 2]} {action_to_vertex(a, board_size)}")
    return referee.send("final_score")


@pytest.mark.parametrize("dead_stones", ["auto", "playout"])
def test_final_score_equals_a_chinese_rules_referee(trained_checkpoint, dead_stones):
    argv = [sys.executable, "-m", "go_baseline.cli", "gtp", "--checkpoint", str(trained_checkpoint)]
    ours = GtpPlayer(GtpClient([*argv, "--simulations", "8", "--dead-stones", dead_stones]), "relabel-rl")
    gnugo = GnuGoPlayer(level=10, seed=0)
    referee = GnuGo(10)  # a separate process: it sees only the moves
    try:
        for g in range(4):
            black, white = (ours, gnugo) if g % 2 == 0 else (gnugo, ours)
            game = play_game(black, white, board_size=5, komi=7.5)
            assert game.ended_by == "score", game  # nobody played an illegal move (GnuGo never resigns here)
            counted = _referee_score(referee, game.moves, 5, 7.5)
            assert ours.final_score() == counted, (g, game.moves)
            assert gnugo.final_score() == counted and format_score(game.score) == counted
    finally:
        for p in (ours, gnugo, referee):
            p.close()
