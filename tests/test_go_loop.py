"""The AlphaZero loop end to end on a tiny 5x5 setup: self-play → train → eval, the PG arm, SGFs,
determinism, and resuming after `kill -9` without losing a finished game."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from go_baseline.compare import compare
from go_baseline.config import GoConfig
from go_baseline.loop import run
from go_baseline.replay import ReplayBuffer
from go_baseline.sgf import parse_sgf_moves
from go_baseline.train import latest_checkpoint, load_net
from relabel_rl.config import ConfigError, load_config
from relabel_rl.rundir import read_metrics

TINY = {
    "total_games": 8,
    "games_per_iteration": 4,
    "net": {"history": 2, "blocks": 1, "filters": 8, "value_hidden": 16},
    "selfplay": {
        "games_in_flight": 4,
        "num_simulations": 4,
        "temperature_moves": 4,
        "no_resign_fraction": 0.5,
    },
    "train": {"batch_size": 16, "steps_per_iteration": 3},
    "eval": {"every_iterations": 2, "games": 2, "num_simulations": 2, "opponents": ["random", "previous"]},
}


def _cfg(tmp_path, name: str, **over) -> GoConfig:
    return load_config(GoConfig, data={**TINY, "run_dir": str(tmp_path / name)}, overrides=over)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny AZ run and one tiny PG run at the same game budget (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("go")
    az = run(_cfg(tmp, "az"), progress=False)
    pg = run(_cfg(tmp, "pg", **{"train.algo": "pg", "selfplay.games_in_flight": 2}), progress=False)
    return tmp, az, pg


def test_tiny_end_to_end_loop(runs):
    tmp_path, last, _ = runs
    assert last["games"] == 8 and last["step"] == 6 and last["positions_per_second"] > 0
    replay = ReplayBuffer(tmp_path / "az" / "games", 100)
    assert replay.indices() == list(range(8))
    game = replay.load(0)
    n = len(game["played"])
    assert game["planes"].shape == (n, 6, 5, 5) and game["policy"].shape == (n, 26)
    assert np.allclose(game["policy"].sum(1), 1.0)
    sgf = (tmp_path / "az" / "sgf" / "selfplay" / "selfplay_00000000.sgf").read_text()
    assert "SZ[5]" in sgf and parse_sgf_moves(sgf, 5) == [int(a) for a in game["moves"]]
    evals = [m for m in read_metrics(tmp_path / "az" / "metrics.jsonl") if m.get("kind") == "eval"]
    assert {(m["iteration"], m["opponent"]) for m in evals} >= {
        (0, "random"),
        (2, "random"),
        (2, "ckpt_00000"),
    }
    assert any((tmp_path / "az" / "sgf" / "eval").iterdir())
    net, meta = load_net(latest_checkpoint(tmp_path / "az" / "checkpoints"))
    assert meta["step"] == 6 and meta["games"] == 8 and net.cfg.board_size == 5


def test_same_seed_same_metrics(tmp_path):
    over = {
        "total_games": 2,
        "games_per_iteration": 2,
        "eval.opponents": ["random"],
        "eval.every_iterations": 5,
    }
    a = run(_cfg(tmp_path, "a", **over), progress=False)
    b = run(_cfg(tmp_path, "b", **over), progress=False)
    for key in ("loss", "policy_ce", "value_mse", "mean_game_length", "black_win_rate"):
        assert a[key] == b[key], key


def test_pg_arm_runs_at_the_same_game_budget(runs):
    _, az, pg = runs
    assert pg["games"] == az["games"] == 8 and pg["step"] == 4  # one REINFORCE step per 2 games
    assert "pg_loss" in pg


def test_compare_report(runs):
    tmp_path, _, _ = runs
    out = compare(
        [tmp_path / "az"], [tmp_path / "pg"], out_dir=tmp_path / "cmp", probe_positions=8, probe_games=8
    )
    report = (out / "report.md").read_text()
    assert "## Against random" in report and "| AZ | 1 | 8 |" in report and "| PG | 1 | 8 |" in report
    assert "Gradient-variance probe" in report
    assert (out / "winrate_vs_games_random.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variance_probe"]["az"]["samples"] == 8 and summary["variance_probe"]["pg"]["samples"] == 8
    assert summary["opponents"]["random"]["AZ"]["final_games"] == [8]


def test_bad_recipe_fails_early_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"selfplay\.num_simulation"):
        _cfg(tmp_path, "x", **{"selfplay.num_simulation": 3})
    with pytest.raises(ConfigError, match=r"eval\.opponents"):
        _cfg(tmp_path, "x", **{"eval.opponents": ["stockfish"]})
    with pytest.raises(ConfigError, match=r"board\.size"):
        _cfg(tmp_path, "x", **{"board.size": 4})


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_9_then_resume_loses_no_game(tmp_path):
    recipe = tmp_path / "r.yaml"
    import yaml

    data = {**TINY, "run_dir": str(tmp_path / "run"), "total_games": 12, "games_per_iteration": 4}
    data["eval"] = {**TINY["eval"], "every_iterations": 100, "opponents": ["random"]}
    recipe.write_text(yaml.safe_dump(data))
    games_dir = tmp_path / "run" / "games"
    cmd = [sys.executable, "-m", "go_baseline.cli", "train", str(recipe), "--quiet"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if games_dir.exists() and len(list(games_dir.glob("game_*.npz"))) >= 5:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: _digest(p) for p in games_dir.glob("game_*.npz")}
    assert 5 <= len(before) < 12
    ckpt_before = latest_checkpoint(tmp_path / "run" / "checkpoints")
    _, meta_before = load_net(ckpt_before)

    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p.name: _digest(p) for p in games_dir.glob("game_*.npz")}
    assert sorted(after) == [f"game_{i:08d}.npz" for i in range(12)]
    assert all(after[k] == v for k, v in before.items())  # every finished game kept, untouched
    _, meta_after = load_net(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert (
        meta_after["step"] == 3 * 3 and meta_after["step"] > meta_before["step"] and meta_after["games"] == 12
    )
    sessions = json.loads((tmp_path / "run" / "meta.json").read_text())["sessions"]
    assert len(sessions) == 2


def test_puct_selfplay_with_playout_cap_and_tree_reuse():
    import torch

    from go_baseline.config import SelfPlaySection
    from go_baseline.network import NetConfig, PolicyValueNet
    from go_baseline.selfplay import play_selfplay_games

    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(board_size=5, history=2, blocks=1, filters=8)).eval()
    cfg = SelfPlaySection(
        games_in_flight=3,
        search="puct",
        num_simulations=6,
        fast_simulations=2,
        playout_cap_fraction=0.5,
        dirichlet_fraction=0.25,
        temperature_moves=4,
        reuse_tree=True,
        no_resign_fraction=1.0,
    )
    seen = []
    records, stats = play_selfplay_games(
        net,
        num_games=3,
        board_size=5,
        komi=7.5,
        history=2,
        cfg=cfg,
        rng=np.random.default_rng(0),
        on_game=seen.append,
    )
    assert len(records) == 3 and seen == records and stats.moves == sum(len(r.moves) for r in records)
    for r in records:
        # playout-cap randomisation: only full searches are recorded for training
        assert 0 < r.num_positions < len(r.moves)
        assert np.allclose(np.stack(r.policy_targets).sum(1), 1.0)
        assert r.no_resign and r.resigned == 0 and r.result in (-1, 0, 1)


def test_arena_parses_gtp_scores_and_counts_colours():
    from go_baseline.arena import RandomPlayer, _parse_score, play_match

    assert _parse_score("B+17.5") == 17.5 and _parse_score("w+2.5") == -2.5 and _parse_score("0") == 0.0
    with pytest.raises(ValueError):
        _parse_score("resign")
    res = play_match(RandomPlayer(1), RandomPlayer(2), games=4, board_size=5, komi=7.5)
    s = res.summary()
    assert s["games_as_black"] == 2 and s["games_as_white"] == 2 and s["eval_games"] == 4
    assert 0.0 <= s["ci95"][0] <= s["win_rate"] <= s["ci95"][1] <= 1.0


def test_multi_process_launch_is_refused_before_any_work(tmp_path, monkeypatch):
    # Every rank would play the same games and race on one run directory: refuse early, touch nothing.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2.*not implemented"):
        run(_cfg(tmp_path, "mp"), progress=False)
    assert not (tmp_path / "mp").exists()
