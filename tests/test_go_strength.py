"""`go-baseline eval --run`: the strength curve of a tiny run against GnuGo levels — CSV, PNG and PDF in the run
directory, both colours, Wilson intervals, resumable; bad input gets one line before any game."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from go_baseline.cli import main
from go_baseline.config import GoConfig
from go_baseline.gnugo import find_gnugo
from go_baseline.loop import run
from go_baseline.strength import STRENGTH_JSONL, choose_checkpoints, wall_hours_by_iteration
from relabel_rl.config import load_config
from relabel_rl.report import wilson_interval
from relabel_rl.rundir import read_metrics

needs_gnugo = pytest.mark.skipif(find_gnugo() is None, reason="gnugo not installed (apt-get install gnugo)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from test_go_loop import TINY

    out = tmp_path_factory.mktemp("strength") / "run"
    data = {
        **TINY,
        "run_dir": str(out),
        "eval": {**TINY["eval"], "opponents": ["random"], "every_iterations": 9},
    }
    run(load_config(GoConfig, data=data), progress=False)
    return out


def test_choose_checkpoints_keeps_first_and_last():
    assert choose_checkpoints(list("abcdefg"), 3) == list("adg")
    assert choose_checkpoints(list("abcde"), 3) == list("ade")
    assert choose_checkpoints(list("ab"), 5) == list("ab")
    with pytest.raises(ValueError):
        choose_checkpoints(list("ab"), 0)


def test_wall_hours_add_up_over_resumed_sessions(tmp_path):
    lines = [(1, 10.0), (2, 20.0), (3, 5.0), (4, 9.0)]  # a resume before iteration 3: the clock restarted
    (tmp_path / "metrics.jsonl").write_text(
        "".join(f'{{"kind": "train", "iteration": {i}, "session_seconds": {s}}}\n' for i, s in lines)
    )
    hours = wall_hours_by_iteration(tmp_path)
    assert [round(hours[i] * 3600, 6) for i in (0, 1, 2, 3, 4)] == [0.0, 10.0, 20.0, 25.0, 29.0]


@needs_gnugo
def test_strength_curve_of_a_tiny_run(tiny_run, capsys):
    argv = ["eval", "--run", str(tiny_run), "--gnugo-levels", "1", "10", "--games", "2", "--every", "2"]
    assert main([*argv, "--simulations", "2"]) == 0
    with open(tiny_run / "strength.csv") as f:
        rows = list(csv.DictReader(f))
    # checkpoints 0 and 2 (the first and the last), each against levels 1 and 10, both colours
    assert [(r["iteration"], r["gnugo_level"]) for r in rows] == [
        ("0", "1"),
        ("2", "1"),
        ("0", "10"),
        ("2", "10"),
    ]
    for r in rows:
        assert r["games"] == "2" and r["games_as_black"] == "1" and r["games_as_white"] == "1"
        assert int(r["wins"]) + int(r["losses"]) + int(r["draws"]) == 2 and r["rules"] == "chinese"
        ci = wilson_interval(int(r["wins"]) + 0.5 * int(r["draws"]), 2)
        assert float(r["ci95_low"]) == pytest.approx(ci.low) and float(r["ci95_high"]) == pytest.approx(
            ci.high
        )
        assert r["selfplay_games"] in ("0", "8") and float(r["wall_hours"]) >= 0
    with Image.open(tiny_run / "strength.png") as im:
        assert im.format == "PNG"
    assert (tiny_run / "strength.pdf").read_bytes()[:5] == b"%PDF-"
    assert any((tiny_run / "sgf" / "strength").iterdir())
    # resumable: a second call plays nothing new
    capsys.readouterr()
    assert main([*argv, "--simulations", "2"]) == 0
    assert "vs GnuGo" not in capsys.readouterr().out
    assert len(read_metrics(tiny_run / STRENGTH_JSONL)) == 4


def test_strength_curve_bad_input_gets_one_line(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} has no checkpoints")
    assert main(["eval"]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "x.pt"]) == 2
    assert "needs the recipe" in capsys.readouterr().err
