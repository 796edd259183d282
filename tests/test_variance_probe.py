"""The gradient-variance probe: the statistics on synthetic gradients with a known variance, and the whole probe
pipeline (prompts per length, repeats, binning, trend) with stand-in arms whose noise is known."""

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

import verifiers
from llm_rl.analysis import variance_probe
from llm_rl.analysis.variance_probe import (
    GradientAccumulator,
    examples_for_length,
    gradient_statistics,
    probe_gradient_variance,
    summarise_probe,
)
from llm_rl.analysis.variance_report import plot_variance
from llm_rl.config import ExperimentConfig, ProbeConfig


def test_gradient_statistics_by_hand():
    s = gradient_statistics([torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])])
    # mean (2, 0): ‖ḡ‖² = 4; Σ‖g − ḡ‖² = 1 + 1 = 2, / (R − 1) = 2; relative variance 0.5; SNR √(4/2)
    assert s.num_samples == 2 and s.mean_norm_sq == pytest.approx(4.0)
    assert s.trace_cov == pytest.approx(2.0) and s.relative_variance == pytest.approx(0.5)
    assert s.snr == pytest.approx(math.sqrt(2.0)) and s.zero_fraction == 0.0
    three = gradient_statistics(
        [torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0]), torch.tensor([4.0, 0.0])]
    )
    # mean (2, 0); deviations (−1, 1), (−1, −1), (2, 0): 2 + 2 + 4 = 8, / 2 = 4; relvar 4 / 4 = 1
    assert three.trace_cov == pytest.approx(4.0) and three.relative_variance == pytest.approx(1.0)


def test_gradient_statistics_degenerate():
    zeros = gradient_statistics([torch.zeros(3)] * 4)
    assert math.isnan(zeros.relative_variance) and zeros.zero_fraction == 1.0 and zeros.trace_cov == 0.0
    assert not zeros.noise_dominated  # no signal and no noise: counted as zero, not as noise
    same = gradient_statistics([torch.ones(3)] * 3)
    assert same.relative_variance == 0.0 and same.snr == math.inf and same.deterministic
    rounding = gradient_statistics([torch.ones(3), torch.ones(3) * (1 + 1e-7)])
    assert rounding.deterministic and 0 < rounding.relative_variance < 1e-9
    assert not gradient_statistics([torch.ones(2), torch.ones(2) * 1.1]).deterministic
    half = gradient_statistics([torch.zeros(2), torch.ones(2)])
    assert half.zero_fraction == 0.5
    assert math.isnan(gradient_statistics([torch.ones(2)]).trace_cov)
    # mean indistinguishable from noise: ‖ḡ‖² = 0.25 <= tr Σ̂ / R = 4.5 / 2
    noisy = gradient_statistics([torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.0])])
    assert noisy.noise_dominated and not gradient_statistics([torch.ones(2)] * 2).noise_dominated
    acc = GradientAccumulator()
    acc.add(torch.ones(2))
    with pytest.raises(ValueError):
        acc.add(torch.ones(3))


def test_gradient_statistics_known_gaussian_variance():
    # g = μ + σ·ε in d dims: tr Σ = d σ², relative variance d σ² / ‖μ‖² = 10 · 0.25 / 4 = 0.625
    gen = torch.Generator().manual_seed(0)
    d, sigma = 10, 0.5
    mu = torch.zeros(d)
    mu[0] = 2.0
    s = gradient_statistics(mu + sigma * torch.randn(d, generator=gen) for _ in range(20_000))
    assert s.trace_cov == pytest.approx(d * sigma**2, rel=0.03)
    assert s.relative_variance == pytest.approx(0.625, rel=0.05)
    assert s.snr == pytest.approx(1 / math.sqrt(0.625), rel=0.05)


def test_examples_for_length_uses_the_step_knobs():
    v = verifiers.load("chain_arithmetic")
    for length in (1, 3, 5):
        rows = examples_for_length(v, {}, length, 3, seed=0)
        assert len(rows) == 3 and all(r["num_steps"] == length + 1 for r in rows)  # + the answer line


class _Linear(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.model = torch.nn.Linear(d, 1, bias=False)
        self.value_head = torch.nn.Linear(d, 1)  # excluded from the probe


def _fake_arm(noise_per_step: float, base_noise: float):
    """An arm whose per-prompt gradient is μ + s(L)·ε with s(L) = base · (1 + noise_per_step)^L (known)."""

    class FakeArm:
        def __init__(self, cfg):
            self.cfg = cfg

        def gradient_sample(self, example, ctx):
            length = example["num_steps"] - 1
            w = ctx.policy.model.weight.reshape(-1)
            mu = torch.ones_like(w)
            scale = base_noise * (1.0 + noise_per_step) ** length
            return (w * (mu + scale * torch.randn(w.shape, generator=ctx.generator))).sum()

    return FakeArm


def test_probe_pipeline_recovers_known_trends(monkeypatch, tmp_path):
    arms = {"grpo": _fake_arm(0.5, 0.1), "relabel": _fake_arm(0.0, 0.3)}
    monkeypatch.setattr(variance_probe, "arm_class", lambda name: arms[name])
    cfg = dataclasses.replace(
        ExperimentConfig(), probe=ProbeConfig(lengths=[1, 3, 5], prompts_per_length=5, repeats=16)
    )
    policy = _Linear(8)
    raw = probe_gradient_variance(
        cfg, policy, verifiers.load("chain_arithmetic"), arms=["grpo", "relabel"], seed=0, progress=False
    )
    assert raw["num_parameters"] == 8 and len(raw["per_prompt"]) == 2 * 3 * 5
    summary = summarise_probe(raw)
    g, r = summary["arms"]["grpo"], summary["arms"]["relabel"]
    assert [b["length"] for b in g["bins"]] == [1, 3, 5]
    # relabel stand-in: relative variance d·σ²/‖μ‖² = 0.09 at every length
    for b in r["bins"]:
        assert b["relative_variance_geomean"] == pytest.approx(0.09, rel=0.5)
        assert b["n_defined"] == 5 and b["zero_gradient_fraction"] == 0.0
    # grpo stand-in: σ grows 1.5x per step -> log10 relvar grows by 2·log10(1.5) ≈ 0.35 per step (the noise stays
    # small enough that the ‖ḡ‖² bias of tr Σ / R is negligible: relvar ≤ 0.58 at length 5)
    assert g["trend"]["direction"] == "increasing"
    assert g["trend"]["slope"] == pytest.approx(2 * math.log10(1.5), abs=0.08)
    assert g["bins"][-1]["noise_dominated_fraction"] == 0.0 and g["bins"][-1]["deterministic_fraction"] == 0.0
    # a prompt whose estimates coincide is counted as deterministic and kept off the log-scale statistics
    raw["per_prompt"].append({**raw["per_prompt"][0], "relative_variance": 1e-14, "deterministic": True})
    again = summarise_probe(raw)["arms"]["grpo"]["bins"][0]
    assert (
        again["n_prompts"] == 6
        and again["n_defined"] == 5
        and again["deterministic_fraction"] == pytest.approx(1 / 6)
    )
    assert r["trend"]["direction"] == "flat"
    from llm_rl.analysis.verdicts import variance_sentence

    assert variance_sentence(summary)[1]["verdict"] == "supported"
    json.dumps(summary)  # serialisable
    out = plot_variance(summary, tmp_path / "v.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
    assert policy.model.weight.grad is None  # the probe leaves no gradient behind


def test_probe_variance_command_on_real_arms(tmp_path, capsys):
    """`llm-rl probe-variance --checkpoint` with the real estimators of every arm that defines one (GRPO, relabel,
    MC values, tree GRPO, RFT) on an untrained tiny model."""
    import yaml

    from llm_rl.cli import main
    from llm_rl.model import build_tiny_model

    model = build_tiny_model(tmp_path / "model", hidden_size=32, num_layers=1, num_heads=2, seed=0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "out"),
                "task": {"max_step_tokens": 8, "max_completion_tokens": 24, "max_steps": 3},
                "grpo": {"trl": {"num_generations": 2, "per_device_train_batch_size": 2, "beta": 0.0}},
                "relabel": {"puct": {"num_simulations": 2}, "num_candidates": 2},
                "mc_value": {"num_samples": 2, "num_rollouts": 1},
                "rft": {"num_samples": 2, "threshold": 0.0},
                "probe": {"lengths": [1, 2], "prompts_per_length": 1, "repeats": 2},
            }
        )
    )
    out = tmp_path / "probe"
    argv = [
        "probe-variance",
        str(recipe),
        "--checkpoint",
        str(model),
        "--arms",
        "grpo,relabel,mc_value,tree_grpo,rft",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "variance probe written to" in capsys.readouterr().out
    result = json.loads((out / "variance.json").read_text())
    arms = ("grpo", "relabel", "mc_value", "tree_grpo", "rft")
    assert set(result["arms"]) == set(arms) and result["num_parameters"] > 0
    for arm in arms:
        recs = result["arms"][arm]["per_prompt"]
        assert [r["length"] for r in recs] == [1, 2] and all(r["num_samples"] == 2 for r in recs)
    with Image.open(out / "variance_vs_length.png") as im:
        assert im.format == "PNG"
    assert main(["probe-variance", str(recipe), "--checkpoint", str(tmp_path / "nope")]) == 2
