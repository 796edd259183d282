"""`go-baseline train` under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo) reproduces one
process with the same global batch — the user's own command, end to end.

Self-play is sharded by game number (game ``g`` seeded by ``g``) and each optimiser step by micro-batch
(``train.micro_batches: 2``: one per process, or both in one process; see `go_baseline.train`). Checked, for the
AlphaZero arm and the outcome-only PG arm:

* every game is the same game (identical moves), whichever process played it;
* every metrics record (train losses, game statistics, evaluations) matches, written once (by the main process);
* the final checkpoint (weights *and* BatchNorm running statistics, step counter) matches.

And a 2-process run killed with ``kill -9`` mid-run, then relaunched, ends where the uninterrupted 1-process run
ends: the games it had finished are kept untouched and the missing ones replayed exactly.

Tolerance: 1e-5 (absolute on the checkpoint's tensors, relative on losses); moves and counts must be identical.
Float summation order differs (gradients and statistics are summed across processes by all-reduce).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from _procs import kill_tree, launch  # tests/ is on sys.path (pytest's default import mode)
from test_go_loop import TINY

from go_baseline.config import GoConfig
from go_baseline.loop import run
from go_baseline.replay import ReplayBuffer
from go_baseline.train import latest_checkpoint
from relabel_rl.config import load_config
from relabel_rl.rundir import read_metrics

TOL = 1e-5
TIMING = {"selfplay_seconds", "positions_per_second", "session_seconds", "seconds", "elapsed_seconds"}
RECIPE = {**TINY, "train": {**TINY["train"], "micro_batches": 2}}  # test_go_loop's tiny run, cut in two


def _recipe(tmp_path: Path, name: str, **changes) -> Path:
    data = {**RECIPE, **changes, "run_dir": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _launch(recipe: Path) -> subprocess.Popen:
    return launch(["-m", "go_baseline.cli", "train", str(recipe), "--quiet"])


def _finish(proc: subprocess.Popen) -> None:
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    assert proc.returncode == 0, output[-4000:]


def _reference(recipe: Path, run_dir: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config(GoConfig, path=recipe, overrides={"run_dir": str(run_dir)})
    run(cfg, progress=False)


def _assert_same_run(got: Path, want: Path, *, games: int, all_records: bool = True) -> None:
    """Same games, same metrics (all records, or the last train record after a kill), same final checkpoint."""
    a, b = ReplayBuffer(got / "games", 1000), ReplayBuffer(want / "games", 1000)
    assert a.indices() == b.indices() == list(range(games))
    for g in b.indices():
        assert a.load(g)["moves"].tolist() == b.load(g)["moves"].tolist(), f"game {g}"
    got_m, want_m = read_metrics(got / "metrics.jsonl"), read_metrics(want / "metrics.jsonl")
    if not all_records:  # a kill can fall between a checkpoint and its record: compare where both runs ended
        got_m, want_m = ([[m for m in ms if m["kind"] == "train"][-1]] for ms in (got_m, want_m))
    assert [m["kind"] for m in got_m] == [m["kind"] for m in want_m]
    for g, w in zip(got_m, want_m):
        assert g.keys() == w.keys()
        for k, v in w.items():
            if k in TIMING:
                continue
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=TOL, abs=1e-7), (w["kind"], k)
            else:
                assert g[k] == v, (w["kind"], k, g[k], v)
    ca = torch.load(latest_checkpoint(got / "checkpoints"), weights_only=False)
    cb = torch.load(latest_checkpoint(want / "checkpoints"), weights_only=False)
    assert (ca["iteration"], ca["step"], ca["games"]) == (cb["iteration"], cb["step"], cb["games"])
    assert ca["model"].keys() == cb["model"].keys()
    for k in cb["model"]:  # weights and BatchNorm statistics alike
        diff = (ca["model"][k].double() - cb["model"][k].double()).abs().max().item()
        assert diff <= TOL, (k, diff)


@pytest.mark.parametrize("algo", ["az", "pg"])
def test_two_processes_match_one(tmp_path, algo):
    changes = {} if algo == "az" else {"train": {**RECIPE["train"], "algo": "pg"}}
    recipe = _recipe(tmp_path, "two", **changes)
    proc = _launch(recipe)
    _reference(recipe, tmp_path / "one")  # while the launch runs
    _finish(proc)
    _assert_same_run(tmp_path / "two", tmp_path / "one", games=8)
    trains = [m for m in read_metrics(tmp_path / "one" / "metrics.jsonl") if m["kind"] == "train"]
    assert trains[-1]["games"] == 8 and trains[-1]["step"] == (6 if algo == "az" else 2)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path):
    recipe = _recipe(tmp_path, "two", total_games=12)
    games = tmp_path / "two" / "games"
    proc = _launch(recipe)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(games.glob("game_*.npz"))) < 5:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.02)
    kill_tree(proc)
    before = {p.name: _digest(p) for p in games.glob("game_*.npz")}
    assert 5 <= len(before) < 12
    time.sleep(1.0)
    assert len(list(games.glob("game_*.npz"))) == len(before), "a worker outlived the kill"
    _finish(_launch(recipe))
    after = {p.name: _digest(p) for p in games.glob("game_*.npz")}
    assert all(after[k] == v for k, v in before.items())  # every finished game kept, untouched
    assert len(after) == 12 and len(json.loads((tmp_path / "two" / "meta.json").read_text())["sessions"]) == 2
    _reference(_recipe(tmp_path, "ref", total_games=12), tmp_path / "one")
    _assert_same_run(tmp_path / "two", tmp_path / "one", games=12, all_records=False)
