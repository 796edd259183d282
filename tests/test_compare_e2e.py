"""End to end: `llm-rl compare` on a minuscule recipe — warm start, arms x seeds, probe, report; rerun skips
finished runs; an unfinished run resumes without losing its counters; `llm-rl eval` reproduces a run's pass@1;
seeds added to a finished comparison extend it; variants and a length sweep run like arms."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from llm_rl.compare import run_compare
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import FINAL_METRICS
from relabel_rl.config import ConfigError, load_config
from relabel_rl.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]

MINUSCULE = {
    "model": {"name_or_path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
    "task": {
        "verifier": "chain_arithmetic",
        "train_size": 32,
        "test_size": 8,
        "difficulty": {"min_steps": 1, "max_steps": 2},
        "max_steps": 3,
        "max_step_tokens": 12,
        "max_completion_tokens": 40,
    },
    "warm_start": {
        "target_pass_rate": None,
        "max_steps": 4,
        "eval_every": 4,
        "batch_size": 8,
        "eval_examples": 4,
    },
    "budget": {"axis": "generated_tokens", "limit": 300, "eval_every": 150},
    "eval": {"num_examples": 4, "pass_k": 2},
    "optim": {"prompts_per_step": 2, "checkpoint_every": 1},
    "grpo": {
        "trl": {"num_generations": 2, "per_device_train_batch_size": 2, "learning_rate": 0.001, "beta": 0.0}
    },
    "relabel": {"puct": {"num_simulations": 2}, "gumbel": {"num_simulations": 2}, "num_candidates": 2},
    "mc_value": {"num_samples": 2, "num_rollouts": 2},
    "compare": {"arms": ["grpo", "relabel"], "seeds": [0], "pass_threshold": 0.5},
    "probe": {"lengths": [1, 2], "prompts_per_length": 1, "repeats": 2},
}


def _cfg(out: Path, **over) -> ExperimentConfig:
    data = json.loads(json.dumps(MINUSCULE))
    for k, v in over.items():
        data[k] = {**data[k], **v}
    data["output_dir"] = str(out)
    return load_config(ExperimentConfig, data=data)


def _check_outputs(out: Path, arms, seeds):
    md = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    for arm in arms:
        assert arm in summary["groups"]["single"]["variants"]
        for seed in seeds:
            evals = [
                r
                for r in read_metrics(out / "runs" / f"{arm}-seed{seed}" / "metrics.jsonl")
                if r["kind"] == "eval"
            ]
            assert evals[0]["step"] == 0 and evals[0]["generated_tokens"] == 0
            assert evals[-1]["generated_tokens"] >= 300  # spent the budget
            assert {"pass@1", "pass@k", "verifier_calls", "wall_time", "prefill_tokens"} <= set(evals[-1])
            assert len(evals[-1]["item_pass@1"]) == 4 and len(evals[-1]["item_successes"]) == 4  # per item
    assert "## Results" in md and "## Gradient variance vs task length" in md
    assert summary["variance"]["verdict"] in {
        "supported", "contradicted", "partly supported", "not supported", "inconclusive"
    }  # fmt: skip
    for name in summary["plots"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG"
        assert (out / name).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    var = json.loads((out / "variance.json").read_text())
    assert set(var["arms"]) == set(arms) and var["repeats"] == 2
    return summary


def test_compare_end_to_end_resume_and_eval(tmp_path, capsys):
    out = tmp_path / "cmp"
    cfg = _cfg(out)
    run_compare(cfg, progress=False)
    _check_outputs(out, ["grpo", "relabel"], [0])
    relabel_run = out / "runs" / "relabel-seed0"
    final = json.loads((relabel_run / FINAL_METRICS).read_text())
    n_records = len(read_metrics(relabel_run / "metrics.jsonl"))

    # a rerun skips finished runs (nothing appended) and re-renders the report
    run_compare(cfg, progress=False)
    assert len(read_metrics(relabel_run / "metrics.jsonl")) == n_records
    assert "Contrasts" in (out / "report.md").read_text()

    # an unfinished run (no final_metrics.json) is resumed from its checkpoint, counters intact, not restarted
    (relabel_run / FINAL_METRICS).unlink()
    run_compare(cfg, progress=False)
    again = json.loads((relabel_run / FINAL_METRICS).read_text())
    assert again["generated_tokens"] == final["generated_tokens"]
    evals = [r for r in read_metrics(relabel_run / "metrics.jsonl") if r["kind"] == "eval"]
    assert sum(r["step"] == 0 for r in evals) == 1  # the step-0 evaluation was not redone

    # `llm-rl eval` on the run directory reproduces the final greedy pass@1; `--report-only` prints the report path
    from llm_rl.cli import main

    capsys.readouterr()
    assert main(["eval", str(relabel_run)]) == 0
    assert json.loads(capsys.readouterr().out)["pass@1"] == pytest.approx(final["pass@1"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**MINUSCULE, "output_dir": str(out)}))
    assert main(["compare", str(recipe), "--report-only"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_all_three_arms_two_seeds(tmp_path):
    out = tmp_path / "cmp3"
    cfg = _cfg(out, compare={"arms": ["grpo", "relabel", "mc_value"], "seeds": [0, 1]})
    run_compare(cfg, progress=False)
    summary = _check_outputs(out, ["grpo", "relabel", "mc_value"], [0, 1])
    verdicts = {(s.get("a"), s.get("b")) for s in summary["contrasts"]}
    assert (
        ("relabel", "grpo") in verdicts
        and ("mc_value", "grpo") in verdicts
        and ("relabel", "mc_value") in verdicts
    )


def test_compare_low_pass_rate_regime(tmp_path):
    """One warm start per target pass rate, every arm from each, and the regime section in the report."""
    out = tmp_path / "regime"
    cfg = _cfg(
        out,
        compare={
            "arms": ["relabel"],
            "seeds": [0],
            "warm_start_pass_rates": [0.0, 0.5],
            "probe_variance": False,
        },
    )
    summary = run_compare(cfg, progress=False)
    assert (out / "warm_start" / "ws0" / "warm_start.json").exists()
    assert (out / "warm_start" / "ws0.5" / "warm_start.json").exists()
    for target in ("0", "0.5"):
        assert (out / "runs" / f"ws{target}" / "relabel-seed0" / FINAL_METRICS).exists()
        assert "relabel" in summary["groups"][f"ws{target}"]["variants"]
    assert [w["target"] for w in summary["warm_starts"]] == [0.0, 0.5]
    assert "gain_vs_warm_start.png" in summary["plots"]
    md = (out / "report.md").read_text()
    assert "## Low-pass-rate regime" in md and "variance.json" not in md  # the probe was off
    child = yaml.safe_load((out / "runs" / "ws0.5" / "relabel-seed0" / "config.yaml").read_text())
    assert child["warm_start"]["target_pass_rate"] == 0.5


def test_seeds_added_to_a_finished_compare_extend_it(tmp_path):
    """A finished comparison takes more seeds: the report-only view accepts the new recipe at once, the new run
    is made, the old one is untouched, and the report covers both seeds."""
    out = tmp_path / "grow"
    base = {"arms": ["relabel"], "seeds": [0], "probe_variance": False}
    run_compare(_cfg(out, compare=base), progress=False)
    old = out / "runs" / "relabel-seed0" / "metrics.jsonl"
    before = old.read_text()
    more = _cfg(out, compare={**base, "seeds": [0, 1]})
    summary = run_compare(more, report_only=True, progress=False)  # nothing refused, nothing trained
    assert summary["groups"]["single"]["variants"]["relabel"]["seeds"] == [0]
    assert not (out / "runs" / "relabel-seed1").exists()
    summary = run_compare(more, progress=False)
    assert (out / "runs" / "relabel-seed1" / FINAL_METRICS).exists() and old.read_text() == before
    assert summary["groups"]["single"]["variants"]["relabel"]["seeds"] == [0, 1]
    assert yaml.safe_load((out / "config.yaml").read_text())["compare"]["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match=r"budget\.limit"):  # anything but the grid is still refused
        run_compare(_cfg(out, compare=base, budget={"limit": 400}), progress=False)


def test_variants_and_a_length_sweep_run_like_arms(tmp_path):
    """Two lengths x (an arm + a variant of it): each cell in its own run directory, the variant's override in its
    runs only, one warm start on the sweep's whole range, the headline figure and tables written."""
    out = tmp_path / "sweep"
    cfg = _cfg(
        out,
        compare={
            "arms": ["relabel"],
            "variants": {
                "relabel_novalue": {"arm": "relabel", "overrides": {"relabel.value_loss_coef": 0.0}}
            },
            "seeds": [0],
            "sweep": {"knob": "length", "values": [1, 2]},
            "probe_variance": False,
        },
    )
    summary = run_compare(cfg, progress=False)
    for length in (1, 2):
        for name, coef in (("relabel", 0.5), ("relabel_novalue", 0.0)):
            run = out / "runs" / f"length{length}" / f"{name}-seed0"
            child = yaml.safe_load((run / "config.yaml").read_text())
            assert child["relabel"]["value_loss_coef"] == coef
            assert (
                child["task"]["difficulty"]["min_steps"] == child["task"]["difficulty"]["max_steps"] == length
            )
            meta = json.loads((run / "meta.json").read_text())
            assert meta["cell"]["variant"] == name and meta["cell"]["sweep"]["value"] == length
    ws = json.loads((out / "warm_start" / "warm_start.json").read_text())
    assert ws["difficulty"] == {"min_steps": 1, "max_steps": 2}  # one warm start covering both lengths
    assert set(summary["groups"]) == {"length1", "length2"}
    assert (out / "headline.png").exists() and (out / "headline.pdf").exists()
    for ext in ("md", "csv", "tex"):
        assert (out / "tables" / f"headline.{ext}").exists()
    kinds = {(c["a"], c["b"], c["kind"]) for c in summary["contrasts"]}
    assert ("relabel_novalue", "relabel", "ablation") in kinds
