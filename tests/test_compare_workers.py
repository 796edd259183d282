"""`llm-rl compare --workers N`: runs and variance-probe shards in N processes give the metrics one process gives;
a failing job stops the others and names itself; the probe resumes from its saved shards."""

import json
import math
from pathlib import Path

import pytest
from test_compare_e2e import _cfg

import llm_rl.analysis.variance_probe as variance_probe
from llm_rl.compare import run_compare
from llm_rl.experiment import FINAL_METRICS
from llm_rl.workers import Job, resolve_workers, run_jobs
from relabel_rl.config import ConfigError


def _finals(out: Path) -> dict[str, dict]:
    timeless = lambda d: {k: v for k, v in d.items() if "time" not in k}  # noqa: E731 - wall time differs
    return {
        p.parent.name: timeless(json.loads(p.read_text()))
        for p in sorted(out.glob(f"runs/*/{FINAL_METRICS}"))
    }


def _probe_records(out: Path) -> dict[str, list]:
    var = json.loads((out / "variance.json").read_text())
    return {arm: data["per_prompt"] for arm, data in var["arms"].items()}


def test_two_workers_give_the_metrics_one_gives_and_the_probe_resumes(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    run_compare(_cfg(one), progress=False, workers=1)
    run_compare(_cfg(two), progress=False, workers=2)
    assert _finals(one) == _finals(two) and set(_finals(one)) == {"grpo-seed0", "relabel-seed0"}
    assert _probe_records(one) == _probe_records(two)
    assert json.loads((two / "meta.json").read_text())["workers"] == 2
    assert len(list((two / variance_probe.PARTS).glob("*.json"))) == 4  # 2 arms x 2 lengths

    # the probe's finished shards are kept: with variance.json gone, it is rebuilt from them, nothing re-probed
    before = (two / "variance.json").read_text()
    (two / "variance.json").unlink()

    def no_probing(*args, **kwargs):
        raise AssertionError("a saved shard was probed again")

    monkeypatch.setattr(variance_probe, "probe_shard", no_probing)
    run_compare(_cfg(two), progress=False, workers=1)
    assert json.loads((two / "variance.json").read_text()) == json.loads(before)


def test_a_failing_job_stops_the_pool_and_names_itself():
    jobs = [Job("fine", math.sqrt, (4.0,)), Job("negative root", math.sqrt, (-1.0,))]
    with pytest.raises(
        RuntimeError, match=r"negative root failed in a worker process(.|\n)*math domain error"
    ):
        list(run_jobs(jobs, workers=2))
    assert [r for _, r, _ in run_jobs(jobs[:1], workers=2)] == [2.0]  # one job: no pool


def test_workers_resolve_or_are_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_workers("auto", single_threaded=False) == 1  # multi-threaded runs already fill the cores
    assert resolve_workers("auto", single_threaded=True) >= 1
    assert resolve_workers("3", single_threaded=False) == 3
    for bad in ("0", "two", -1):
        with pytest.raises(ConfigError, match="--workers must be a positive integer or 'auto'"):
            resolve_workers(bad, single_threaded=True)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under accelerate launch
    assert resolve_workers("auto", single_threaded=True) == 1
    with pytest.raises(ConfigError, match="accelerate launch"):
        resolve_workers(2, single_threaded=True)
