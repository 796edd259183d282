"""Checkpoints attacked: a pickle that would run code is refused without running it, a truncated or missing newest
checkpoint falls back to the newest good one with a one-line warning naming the bad file, only the newest two are
kept, and a rerun after a lost checkpoint never writes a step's records twice."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from llm_rl.config import ExperimentConfig
from llm_rl.harness.checkpoints import STATE_FILE, CheckpointError, read_loop_checkpoint, verify
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model
from relabel_rl import RunDir, load_config

RECIPE = {
    "arm": "reinforce_arm:Reinforce",
    "task": {"train_size": 16, "test_size": 4, "max_completion_tokens": 12},
    "warm_start": {"enabled": False},
    "budget": {"axis": "optimizer_steps", "limit": 4, "eval_every": 2},
    "eval": {"num_examples": 2, "pass_k": 2},
    "optim": {"learning_rate": 0.01, "prompts_per_step": 2, "checkpoint_every": 1},
}


class _RunsCode:
    """Unpickling this calls ``os.system`` (what a malicious checkpoint would do)."""

    def __init__(self, sentinel: Path) -> None:
        self.command = f"touch {sentinel}"

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=1, num_heads=2)
    )


def _run(path: Path, model: str) -> tuple[dict, list[dict]]:
    cfg = load_config(ExperimentConfig, data=RECIPE)
    run = RunDir.create(path, config=cfg)
    final = train_arm(cfg, run, init_model=model, progress=False)
    return final, run.metrics()


def _comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records if r["kind"] != "resume"]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "run"
    final, records = _run(path, tiny)
    return path, final, records


def _copy(reference, tmp_path: Path) -> Path:
    """The finished reference run, with its final checkpoint (step 4) as the one a resume would pick."""
    path = tmp_path / "run"
    shutil.copytree(reference[0], path)
    shutil.rmtree(path / "final")
    return path


def _plant_code_in_optimizer_state(checkpoint: Path, sentinel: Path) -> None:
    torch.save({"state": {}, "param_groups": [], "payload": _RunsCode(sentinel)}, checkpoint / "optimizer.pt")
    state = json.loads(
        (checkpoint / STATE_FILE).read_text()
    )  # a consistent manifest: only the content is bad
    state["files"]["optimizer.pt"] = (checkpoint / "optimizer.pt").stat().st_size
    (checkpoint / STATE_FILE).write_text(json.dumps(state))


def test_only_the_newest_two_checkpoints_are_kept(reference):
    names = sorted(p.name for p in (reference[0] / "checkpoints").iterdir())
    assert names == ["checkpoint-3", "checkpoint-4"]


def test_a_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(reference, tiny, tmp_path, capsys):
    path = _copy(reference, tmp_path)
    sentinel = tmp_path / "pwned"
    _plant_code_in_optimizer_state(path / "checkpoints" / "checkpoint-4", sentinel)
    with pytest.raises(CheckpointError, match=r"checkpoint-4/optimizer\.pt does not load safely"):
        read_loop_checkpoint(path / "checkpoints" / "checkpoint-4")
    with pytest.raises(CheckpointError, match=r"optimizer\.pt does not load safely"):
        verify(path / "checkpoints" / "checkpoint-4")  # the TRL-side check refuses it too
    assert not sentinel.exists()

    final, records = _run(path, tiny)  # resumes from checkpoint-3 instead, and retraces step 4
    assert not sentinel.exists()
    warning = [line for line in capsys.readouterr().err.splitlines() if "checkpoint unusable" in line]
    assert len(warning) == 1 and "checkpoint-4/optimizer.pt" in warning[0] and "checkpoint-3" in warning[0]
    assert (path / "checkpoints" / "checkpoint-4.corrupt").is_dir()  # set aside, not deleted
    assert [r["step"] for r in records if r["kind"] == "resume"] == [3]
    assert _comparable(records) == _comparable(reference[2])
    assert {k: v for k, v in final.items() if k != "wall_time"} == {
        k: v for k, v in reference[1].items() if k != "wall_time"
    }


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(reference, tiny, tmp_path, capsys):
    path = _copy(reference, tmp_path)
    weights = path / "checkpoints" / "checkpoint-4" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _, records = _run(path, tiny)
    warning = [line for line in capsys.readouterr().err.splitlines() if "checkpoint unusable" in line]
    assert (
        len(warning) == 1 and "checkpoint-4/trainable.safetensors" in warning[0] and "truncated" in warning[0]
    )
    assert [r["step"] for r in records if r["kind"] == "resume"] == [3]
    assert _comparable(records) == _comparable(reference[2])


def test_a_rerun_after_the_checkpoints_are_lost_never_duplicates_records(reference, tiny, tmp_path):
    path = _copy(reference, tmp_path)
    shutil.rmtree(path / "checkpoints")  # (with a torn state file the newest would be set aside instead)
    _, records = _run(path, tiny)  # starts over: the records of the lost session are replaced, not appended
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)) == len(reference[2])
    assert _comparable(records) == _comparable(reference[2])
