"""Damaged and hostile Go checkpoints (issue #15): a rerun of `go-baseline train` verifies the checkpoint it
resumes from, falls back past bad ones (naming each, setting it aside as ``.corrupt``), never logs an iteration
twice, and never runs code planted in a pickle; nor does `go-baseline gtp --checkpoint`."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from go_baseline.config import GoConfig
from go_baseline.loop import run
from go_baseline.replay import ReplayBuffer
from go_baseline.train import list_checkpoints, load_net
from relabel_rl.config import load_config
from relabel_rl.rundir import read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "total_games": 6,
    "games_per_iteration": 2,
    "threads": 1,
    "net": {"history": 2, "blocks": 1, "filters": 8, "value_hidden": 16},
    "selfplay": {"games_in_flight": 2, "num_simulations": 4, "fast_simulations": 2, "temperature_moves": 4},
    "train": {"batch_size": 8, "steps_per_iteration": 1},
    "eval": {"every_iterations": 100, "games": 2, "num_simulations": 2, "opponents": ["random"]},
}
# what depends on the wall clock or on whether the games were played in this session
TIMING = {"session_seconds", "selfplay_seconds", "selfplay_moves", "positions_per_second"}


class RunsCode:
    """Unpickling this calls ``os.system`` (the issue's attack): it would create ``sentinel``."""

    def __init__(self, sentinel) -> None:
        self.command = f"touch {sentinel}"

    def __reduce__(self):
        return (os.system, (self.command,))


def _cfg(run_dir) -> GoConfig:
    return load_config(GoConfig, data={**TINY, "run_dir": str(run_dir)})


def _records(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-iteration run (checkpoints 0..3), kept pristine; each test gets a fresh copy of it."""
    tmp = tmp_path_factory.mktemp("gockpt")
    run(_cfg(tmp / "run"), progress=False)
    shutil.copytree(tmp / "run", tmp / "pristine")
    return tmp


@pytest.fixture
def run_dir(finished):
    """The finished run, restored at the path its config records (a copy elsewhere would be another run)."""
    path = finished / "run"
    shutil.rmtree(path)
    shutil.copytree(finished / "pristine", path)
    return path


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(run_dir, capsys):
    before = _records(run_dir)
    newest = run_dir / "checkpoints" / "ckpt_00003.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    last = run(_cfg(run_dir), progress=False)

    err = capsys.readouterr().err
    assert f"{newest} does not load safely" in err and "falling back to ckpt_00002.pt" in err
    assert (run_dir / "checkpoints" / "ckpt_00003.pt.corrupt").exists()  # set aside, never picked again
    _, meta = load_net(newest)  # written again by the resumed iteration
    assert meta["iteration"] == 3 and meta["step"] == 3 and last["iteration"] == 3
    # iteration 3 retrained from checkpoint 2 on the same games: the same records, each iteration once
    assert _records(run_dir) == before
    assert ReplayBuffer(run_dir / "games", 100).indices() == list(range(6))


def test_a_pickle_that_runs_code_is_refused_on_resume_and_later_iterations_are_redone(run_dir, capsys):
    before = _records(run_dir)
    games = run_dir / "games"
    played = {p.name: p.read_bytes() for p in games.glob("game_*.npz")}
    sentinel = run_dir.parent / "PWNED"
    sentinel.unlink(missing_ok=True)
    ckpts = run_dir / "checkpoints"
    blob = torch.load(ckpts / "ckpt_00003.pt", weights_only=True)
    torch.save({**blob, "step": RunsCode(sentinel)}, ckpts / "ckpt_00003.pt")
    (ckpts / "ckpt_00002.pt").write_bytes(b"not a checkpoint")

    last = run(_cfg(run_dir), progress=False)

    assert not sentinel.exists()  # refused before anything ran
    err = capsys.readouterr().err
    assert f"{ckpts / 'ckpt_00003.pt'} does not load safely (UnpicklingError" in err
    assert f"{ckpts / 'ckpt_00002.pt'} does not load safely" in err and "falling back to ckpt_00001.pt" in err
    # iteration 2's games (played by the discarded net) are deleted and played again by checkpoint 1's net;
    # its train record and iteration 3's train and eval records are dropped and logged again
    assert "deleted 2 later games, dropped 3 later metrics records" in err
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "ckpt_00000.pt",
        "ckpt_00001.pt",
        "ckpt_00002.pt",
        "ckpt_00002.pt.corrupt",
        "ckpt_00003.pt",
        "ckpt_00003.pt.corrupt",
    ]
    # same seed, same checkpoint 1: the redone iterations are the ones the first session ran
    assert last["step"] == 3 and _records(run_dir) == before
    assert {p.name: p.read_bytes() for p in games.glob("game_*.npz")} == played


def test_with_no_usable_checkpoint_the_run_starts_from_scratch(run_dir, capsys):
    before = _records(run_dir)
    for ckpt in list_checkpoints(run_dir / "checkpoints"):
        ckpt.write_bytes(ckpt.read_bytes()[:100])

    run(_cfg(run_dir), progress=False)

    err = capsys.readouterr().err
    assert err.count("warning: checkpoint unusable") == 4 and "falling back to the start of training" in err
    assert _records(run_dir) == before  # iteration 0's evaluation included: nothing logged twice


def test_gtp_refuses_a_checkpoint_whose_pickle_runs_code(tmp_path, capsys):
    from go_baseline.cli import main

    sentinel = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"model": RunsCode(sentinel)}, evil)
    assert main(["gtp", "--checkpoint", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read checkpoint {evil}: UnpicklingError") and err.count("\n") == 1
    assert not sentinel.exists()
