"""GTP: the engine's commands, fuzzing with malformed input (a `?` reply, never a crash), a subprocess
round-trip, and a short 5x5 game of our engine against GnuGo through GTP."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from go_baseline.arena import GnuGoPlayer, GtpPlayer, play_game
from go_baseline.board import format_score
from go_baseline.gnugo import GtpClient, find_gnugo
from go_baseline.gtp import GtpEngine
from go_baseline.network import NetConfig, PolicyValueNet

needs_gnugo = pytest.mark.skipif(find_gnugo() is None, reason="gnugo not installed (apt-get install gnugo)")


def _engine(sims: int = 4) -> GtpEngine:
    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(board_size=5, history=2, blocks=1, filters=8)).eval()
    return GtpEngine(net, num_simulations=sims, komi=7.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = NetConfig(board_size=5, history=2, blocks=1, filters=8)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt_00000.pt"
    torch.save(
        {
            "model": PolicyValueNet(cfg).state_dict(),
            "net_config": cfg.__dict__,
            "board": {"size": 5, "komi": 7.5},
        },
        path,
    )
    return path


def test_required_commands_and_ids():
    e = _engine()
    assert e.handle("protocol_version") == "= 2\n\n"
    assert e.handle("7 name") == "=7 relabel-rl\n\n"
    listed = e.handle("list_commands")[2:].split()
    for cmd in (
        "protocol_version",
        "name",
        "version",
        "known_command",
        "list_commands",
        "quit",
        "boardsize",
        "clear_board",
        "komi",
        "play",
        "genmove",
        "final_score",
        "showboard",
    ):
        assert cmd in listed
        assert e.handle(f"known_command {cmd}") == "= true\n\n"
    assert e.handle("known_command frobnicate") == "= false\n\n"
    assert e.handle("boardsize 5") == "=\n\n"
    assert e.handle("boardsize 9").startswith("? unacceptable size")
    assert e.handle("komi 0.5") == "=\n\n"
    assert e.handle("play b c3") == "=\n\n"
    assert e.handle("play w c3").startswith("? illegal move")  # occupied
    reply = e.handle("genmove w")
    assert reply.startswith("= ") and reply.endswith("\n\n")
    assert "X" in e.handle("showboard")
    e.handle("clear_board")
    assert e.handle("final_score") == f"= {format_score(-0.5)}\n\n"
    assert e.handle("quit") == "=\n\n" and e.done


def test_ko_recapture_is_refused_over_gtp():
    e = _engine()
    for mv in ("b b3", "w c3", "b a2", "w d2", "b b1", "w c1", "b e5", "w b2", "b c2"):
        assert e.handle(f"play {mv}") == "=\n\n", mv
    assert e.handle("play w b2").startswith("? illegal move")


def test_fuzz_malformed_input_never_crashes():
    e = _engine(sims=1)
    rng = np.random.default_rng(0)
    words = [
        "play",
        "genmove",
        "komi",
        "boardsize",
        "known_command",
        "clear_board",
        "b",
        "w",
        "white",
        "x",
        "A1",
        "Z99",
        "pass",
        "PASS",
        "i3",
        "e6",
        "c3",
        "-1",
        "nan",
        "inf",
        "1e400",
        "0",
        "5",
        "19",
        "",
        "\x00",
        "é",
        "#",
        "\t",
        "showboard",
        "final_score",
        "99999999999999999999",
        "resign",
        "=",
        "?",
    ]
    for _ in range(600):
        line = " ".join(rng.choice(words, size=int(rng.integers(0, 5))).tolist())
        if rng.random() < 0.1:
            line = "".join(chr(int(c)) for c in rng.integers(0, 300, size=int(rng.integers(1, 20))))
        if line.strip().lower().startswith("quit"):
            continue
        reply = e.handle(line)
        if reply is not None:
            assert reply[0] in "=?" and reply.endswith("\n\n"), (line, reply)
            assert "internal error" not in reply, (line, reply)
    assert e.handle("protocol_version") == "= 2\n\n"


def test_gtp_subprocess_round_trip(checkpoint):
    with GtpClient(
        [
            sys.executable,
            "-m",
            "go_baseline.cli",
            "gtp",
            "--checkpoint",
            str(checkpoint),
            "--simulations",
            "2",
        ]
    ) as c:
        assert c.send("protocol_version") == "2"
        assert c.send_raw("play b z9")[0] is False
        c.send("boardsize 5")
        c.send("play b c3")
        move = c.send("genmove w")
        assert move.lower() == "pass" or len(move) == 2
        assert c.send_raw("genmove purple") == (False, "invalid color")


@needs_gnugo
def test_short_game_against_gnugo_through_gtp(checkpoint):
    ours = GtpPlayer(
        GtpClient(
            [
                sys.executable,
                "-m",
                "go_baseline.cli",
                "gtp",
                "--checkpoint",
                str(checkpoint),
                "--simulations",
                "2",
            ]
        ),
        "relabel-rl",
    )
    gnugo = GnuGoPlayer(level=1, seed=1)
    try:
        game = play_game(ours, gnugo, board_size=5, komi=7.5, max_game_length=60)
        assert game.ended_by in ("score", "resign")
        assert len(game.moves) >= 2
        if game.ended_by == "score":
            # our engine, told every move, scores the final board exactly as the arena does
            assert ours.final_score() == format_score(game.score)
    finally:
        ours.close()
        gnugo.close()
