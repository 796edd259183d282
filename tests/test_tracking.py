"""`--logging.report_to tensorboard`: every record the harness writes to metrics.jsonl reaches TensorBoard, with the
same numbers at the same steps; a tracker that is not installed is refused before any work."""

from __future__ import annotations

from collections import defaultdict

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from llm_rl.config import ExperimentConfig
from llm_rl.experiment import validate_experiment
from llm_rl.harness.run import train_arm
from llm_rl.harness.tracking import tracker_scalars
from llm_rl.model import build_tiny_model
from relabel_rl import RunDir, load_config
from relabel_rl.config import ConfigError

RECIPE = {
    "arm": "reinforce_arm:Reinforce",
    "task": {"train_size": 16, "test_size": 4, "max_completion_tokens": 12},
    "warm_start": {"enabled": False},
    "budget": {"axis": "optimizer_steps", "limit": 3, "eval_every": 2},
    "eval": {"num_examples": 2, "pass_k": 2},
    "optim": {"prompts_per_step": 2, "checkpoint_every": 2},
}


def test_tensorboard_scalars_equal_the_metrics_records(tmp_path):
    model = str(build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2))
    cfg = load_config(ExperimentConfig, data=RECIPE, overrides=["--logging.report_to", "tensorboard"])
    assert cfg.logging.report_to == ["tensorboard"]
    run = RunDir.create(tmp_path / "run", config=cfg)
    train_arm(cfg, run, init_model=model, progress=False)

    want: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in run.metrics():
        for tag, value in tracker_scalars(record).items():
            want[tag].append((record["step"], value))
    assert {"train/loss", "eval/pass@1", "eval/verifier_stats/calls", "verifier/calls"} <= set(want)

    (events,) = [
        p for p in (run.path / "trackers").rglob("events.out.tfevents.*") if p.parent.name == "relabel-rl"
    ]
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


def test_tracker_scalars_flatten_numbers_and_skip_the_rest():
    record = {"kind": "eval", "step": 3, "pass@1": 0.5, "k": 4, "ok": True, "name": "x", "v": {"calls": 7}}
    assert tracker_scalars(record) == {"eval/pass@1": 0.5, "eval/k": 4.0, "eval/v/calls": 7.0}


def test_a_tracker_that_is_not_installed_is_refused_naming_the_key(monkeypatch):
    import llm_rl.harness.tracking as tracking

    monkeypatch.setattr(tracking, "get_available_trackers", lambda: ["tensorboard"])
    cfg = load_config(ExperimentConfig, data={**RECIPE, "logging": {"report_to": ["tensorboard", "wandb"]}})
    with pytest.raises(ConfigError, match=r"'logging\.report_to\[1\]' = 'wandb'"):
        validate_experiment(cfg, arms=[cfg.arm])
