import json

import pytest

from relabel_rl.config import ConfigError
from relabel_rl.rundir import RunDir, read_metrics, seed_everything


def test_run_dir_records_config_meta_and_metrics(tmp_path):
    cfg = {"lr": 0.1, "arm": "grpo"}
    run = RunDir.create(tmp_path / "r", config=cfg, seeds={"seed": 3})
    run.log({"step": 1, "loss": 0.5})
    run.log({"step": 2, "loss": float("nan")})
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["seeds"] == {"seed": 3}
    assert meta["sessions"][0]["versions"]["torch"]
    assert "sha" in meta["sessions"][0]["git"]
    assert [m["step"] for m in run.metrics()] == [1, 2]
    assert run.metrics()[1]["loss"] is None


def test_resume_keeps_metrics_and_refuses_a_different_config(tmp_path):
    run = RunDir.create(tmp_path / "r", config={"lr": 0.1})
    run.log({"step": 1})
    again = RunDir.create(tmp_path / "r", config={"lr": 0.1})
    assert len(again.metrics()) == 1
    assert len(json.loads((again.path / "meta.json").read_text())["sessions"]) == 2
    with pytest.raises(ConfigError, match=r"different config.*lr"):
        RunDir.create(tmp_path / "r", config={"lr": 0.2})


def test_torn_last_line_is_skipped(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(p) == [{"step": 1}]


def test_seed_everything_is_deterministic():
    import torch

    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))


def test_jsonable_is_strict_json():
    """One conversion for every file: non-finite floats become null (not "inf", not 1e308)."""
    import math
    from pathlib import Path

    import numpy as np

    from relabel_rl.rundir import jsonable

    data = {1: (math.inf, -math.inf, math.nan, 0.5), "p": Path("a/b"), "n": np.float32(2.0), "i": np.int64(3)}
    assert jsonable(data) == {"1": [None, None, None, 0.5], "p": "a/b", "n": 2.0, "i": 3}
    json.dumps(jsonable(data), allow_nan=False)
