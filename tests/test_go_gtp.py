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


# ---------------------------------------------------------------------------------------------------------------
# Input robustness (issue 14): bytes in, any locale; ASCII numbers only; bad arguments refused at start


def _fuzz_lines(rng: np.random.Generator, count: int) -> list[bytes]:
    words = [
        b"play",
        b"genmove",
        b"komi",
        b"boardsize",
        b"final_score",
        b"b",
        b"w",
        b"C3",
        b"pass",
        b"5",
        b"7",
    ]
    odd = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc3\xa9", "٥".encode(), b"\x00", b"\t", b"#"]
    out = []
    for _ in range(count):
        parts = [words[i] if i < len(words) else odd[i - len(words)] for i in rng.integers(0, 20, size=4)]
        line = b" ".join(parts)
        if rng.random() < 0.3:
            line = bytes(rng.integers(1, 256, size=int(rng.integers(1, 12))).tolist()).replace(b"\n", b"")
        if line.strip().lower().startswith(b"quit"):
            continue
        out.append(line)
    return out


def test_fuzz_bytes_never_crash_and_invalid_utf8_gets_a_failure():
    e = _engine(sims=1)
    for line in _fuzz_lines(np.random.default_rng(1), 300):
        reply = e.handle_bytes(line + b"\n")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            assert reply is not None and reply.startswith("?") and "invalid UTF-8" in reply, (line, reply)
            continue
        if reply is not None:
            assert reply[0] in "=?" and reply.endswith("\n\n") and "internal error" not in reply, (
                line,
                reply,
            )
    assert e.handle_bytes(b"12 \xff\n") == "?12 invalid UTF-8\n\n"
    assert e.handle("protocol_version") == "= 2\n\n"


def test_non_ascii_digits_are_not_numbers():
    e = _engine()
    assert e.handle("boardsize ٥") == "? syntax error\n\n"  # an Arabic-Indic five is not 5
    assert e.handle("komi ٥.٥") == "? syntax error\n\n"
    assert e.handle("play b C٣").startswith("? syntax error")
    assert e.handle("play b paſs").startswith("? syntax error")  # 'ſ'.upper() == 'S'
    assert e.handle("١ name") == "? unknown command\n\n"
    assert e.handle("\u212anown_command name") == "? unknown command\n\n"  # KELVIN SIGN lowercases to k
    assert e.handle("komi 6.5") == "=\n\n" and e.handle("boardsize 5") == "=\n\n"


def test_gtp_process_survives_fuzz_under_a_strict_ascii_locale(checkpoint):
    import os
    import subprocess

    lines = _fuzz_lines(np.random.default_rng(2), 300)
    data = b"\n".join([*lines, b"protocol_version", b"quit"]) + b"\n"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C", "LANG": "C"}
    argv = [sys.executable, "-m", "go_baseline.cli", "gtp", "--checkpoint", str(checkpoint)]
    for extra in ([], ["--simulations", "1"]):
        env_used = env if extra else {**env, "PYTHONIOENCODING": "ascii:strict"}
        proc = subprocess.run(
            [*argv, *extra, "--dead-stones", "playout"],
            input=data,
            capture_output=True,
            env=env_used,
            timeout=300,
        )
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-2000:]
        replies = [r for r in proc.stdout.split(b"\n\n") if r.strip()]
        assert all(r.lstrip()[:1] in (b"=", b"?") for r in replies)
        invalid = sum(1 for ln in lines if not _utf8(ln))
        assert sum(r.count(b"invalid UTF-8") for r in replies) == invalid > 20
        assert replies[-2:] == [b"= 2", b"="]


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--simulations", "0"], "--simulations must be >= 1"),
        (["--simulations", "-3"], "--simulations must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_gtp_arguments_get_one_line(checkpoint, capsys, args, message):
    from go_baseline.cli import main

    assert main(["gtp", "--checkpoint", str(checkpoint), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}, got {args[1]}"


def test_missing_or_broken_checkpoint_gets_one_line(tmp_path, capsys):
    from go_baseline.cli import main

    assert main(["gtp", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err == f"error: checkpoint not found: {tmp_path / 'nope.pt'}\n"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["gtp", "--checkpoint", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read checkpoint {broken}") and err.count("\n") == 1
