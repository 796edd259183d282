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


def _trainer_and_batch(micro_batches: int | None):
    import torch

    from go_baseline.replay import Batch
    from go_baseline.train import Trainer

    cfg = load_config(
        GoConfig,
        data={**TINY, "train": {**TINY["train"], "micro_batches": micro_batches, "augment": False}},
    )
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    rng = np.random.default_rng(0)
    n, a = 8, 26
    policy = rng.random((n, a)).astype(np.float32)
    planes = rng.integers(0, 2, (n, 6, 5, 5)).astype(np.float32)
    planes[n // 2 :] = 0.0  # the halves differ, so their BatchNorm statistics do
    batch = Batch(
        planes=planes,
        policy=policy / policy.sum(1, keepdims=True),
        played=rng.integers(0, a, n),
        outcome=rng.choice([-1.0, 1.0], n).astype(np.float32),
        game=np.zeros(n, dtype=np.int64),
    )
    return trainer, batch


def _state(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_micro_batches_are_order_free_and_change_only_batchnorm_statistics():
    """A step on micro-batches: each starts from the same BatchNorm statistics, so their order does not matter
    (what lets processes take them in parallel); the logged loss is the mean over all samples."""
    import functools

    import torch

    from go_baseline.train import az_parts, split_batch

    loss = functools.partial(az_parts, value_weight=1.0)
    states, logs = [], []
    for order in ((0, 1), (1, 0)):
        trainer, batch = _trainer_and_batch(2)
        halves = split_batch(batch, trainer.micro_batches())
        assert [len(h.played) for h in halves] == [4, 4]
        logs.append(trainer.train_step([halves[i] for i in order], loss))
        states.append(_state(trainer))
    for k in states[0]:
        assert torch.allclose(states[0][k].double(), states[1][k].double(), atol=1e-6), k
    assert logs[0]["loss"] == pytest.approx(logs[1]["loss"], rel=1e-6)
    assert logs[0]["loss"] == pytest.approx(logs[0]["policy_ce"] + logs[0]["value_mse"], rel=1e-6)

    whole, batch = _trainer_and_batch(None)  # one process: one micro-batch, one forward over the batch
    before = _state(whole)
    with torch.no_grad():
        expected = az_parts(whole.net.train(), batch, whole.device, value_weight=1.0)["loss"].mean().item()
    whole.model.load_state_dict(before)  # (that forward moved the running statistics)
    out = whole.train_step(split_batch(batch, whole.micro_batches()), loss)
    after = _state(whole)
    assert out["loss"] == pytest.approx(expected, rel=1e-6)
    # The first BatchNorm sees the same inputs either way: the mean of the halves' means is the batch mean, so
    # its running mean agrees with one forward pass, its running variance (within-half spread) does not.
    assert torch.allclose(states[0]["stem.1.running_mean"], after["stem.1.running_mean"], atol=1e-6)
    var = "stem.1.running_var"  # compare the updates (momentum 0.1 keeps them small next to the start)
    assert not torch.allclose(states[0][var] - before[var], after[var] - before[var], rtol=1e-2, atol=0)
    assert all(int(after[k]) == int(before[k]) + 1 for k in before if k.endswith("num_batches_tracked"))


def test_micro_batches_are_validated():
    with pytest.raises(ConfigError, match=r"train\.micro_batches"):
        load_config(GoConfig, data={"train": {"batch_size": 4, "micro_batches": 8}})
    with pytest.raises(ConfigError, match=r"train\.micro_batches"):
        load_config(GoConfig, data={"train": {"micro_batches": 0}})
    from go_baseline.replay import Batch
    from go_baseline.train import split_batch

    tiny = Batch(np.zeros((1, 1, 5, 5)), np.zeros((1, 26)), np.zeros(1), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="1 positions cannot be cut into 2 micro-batches"):
        split_batch(tiny, 2)
