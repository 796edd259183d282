"""The warm start says how it is doing (issue #16): a labelled bar of held-out pass@1 against the target (not bare
SFT steps, no TRL log dicts), a loud warning when the target is missed, recorded in ``warm_start.json`` for the
report, and repeated whenever a run starts from that warm start."""

from __future__ import annotations

import json

import pytest

from llm_rl.config import ExperimentConfig
from llm_rl.model import resolve_model_path
from llm_rl.warm_start import warm_start
from relabel_rl import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**warm) -> ExperimentConfig:
    data = {
        "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
        "task": {"difficulty": {"min_steps": 2, "max_steps": 2}, "max_completion_tokens": 24},
        "warm_start": {"max_steps": 4, "eval_every": 2, "batch_size": 4, "eval_examples": 4, **warm},
    }
    return load_config(ExperimentConfig, data=data)


def test_a_missed_target_shows_on_the_bar_warns_loudly_and_is_recorded(tmp_path, capsys):
    cfg = _cfg(target_pass_rate=1.0)  # out of reach in 4 steps of an untrained tiny model
    base = resolve_model_path(cfg.model, tmp_path)
    result = warm_start(cfg, base, tmp_path / "ws", seed=0, progress=True)
    err = capsys.readouterr().err
    assert "warm start: held-out pass@1" in err and "(target 1)" in err and "SFT step 4/4" in err
    assert "'loss'" not in err and "train_runtime" not in err  # no TRL log dicts
    assert "WARNING: the warm start MISSED its target" in err and "warm_start.target_pass_rate 1" in err
    assert result.missed_target
    record = json.loads((tmp_path / "ws" / "warm_start.json").read_text())
    assert record["missed_target"] is True and record["warning"].startswith(
        "the warm start MISSED its target"
    )
    # a run that starts from the cached warm start is told again
    assert warm_start(cfg, base, tmp_path / "ws", seed=0, progress=True) == result
    assert "WARNING: the warm start MISSED its target" in capsys.readouterr().err


def test_a_reached_target_or_no_target_gives_no_warning(tmp_path, capsys):
    cfg = _cfg(target_pass_rate=0.0)
    base = resolve_model_path(cfg.model, tmp_path)
    assert not warm_start(cfg, base, tmp_path / "reached", seed=0, progress=False).missed_target
    untargeted = _cfg(target_pass_rate=None)
    assert not warm_start(untargeted, base, tmp_path / "untargeted", seed=0, progress=True).missed_target
    err = capsys.readouterr().err
    assert "WARNING" not in err and "(no target)" in err
    record = json.loads((tmp_path / "untargeted" / "warm_start.json").read_text())
    assert record["missed_target"] is False and record["warning"] is None
