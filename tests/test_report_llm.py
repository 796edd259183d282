"""llm_rl.analysis.report on synthetic per-run JSONL: table values, threshold budget, computed verdicts, PNGs."""

import json
import math

import pytest
from PIL import Image

from llm_rl.analysis.report import load_runs, performance_sentence, variance_sentence, write_report
from relabel_rl.report import mean_ci
from relabel_rl.rundir import RunDir


def _write_run(root, arm, seed, curve, *, ws=None, finished=True, tokens_per_eval=100):
    """A run whose eval at index i has generated_tokens = i * tokens_per_eval and pass@1 = curve[i]."""
    base = root / "runs" if ws is None else root / "runs" / f"ws{ws:g}"
    run = RunDir(base / f"{arm}-seed{seed}")
    run.path.mkdir(parents=True)
    records = []
    for i, p in enumerate(curve):
        counters = {
            "generated_tokens": i * tokens_per_eval,
            "prefill_tokens": 3 * i * tokens_per_eval,
            "verifier_calls": 10 * i,
            "optimizer_steps": i,
            "wall_time": 2.0 * i,
            "total_tokens": 4 * i * tokens_per_eval,
        }
        records.append({"kind": "train", "step": i, **counters, "loss": 1.0})
        records.append({"kind": "eval", "step": i, **counters, "pass@1": p, "pass@k": min(1.0, p + 0.1), "k": 4,
                        "mean_score": p})  # fmt: skip
    # the same format RunDir.log appends (without its per-record fsync, which is slow on a busy disk)
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        run.write_json(
            "final_metrics.json", {"pass@1": curve[-1], "pass@k": min(1.0, curve[-1] + 0.1), **counters}
        )
    return run


def _synthetic(root, relabel_finals, grpo_finals):
    for seed, f in enumerate(grpo_finals):
        _write_run(root, "grpo", seed, [0.1, (0.1 + f) / 2, f])
    for seed, f in enumerate(relabel_finals):
        _write_run(root, "relabel", seed, [0.1, (0.1 + f) / 2, f])


def test_load_runs_layout(tmp_path):
    _synthetic(tmp_path, [0.6, 0.7, 0.65], [0.2, 0.3, 0.25])
    _write_run(tmp_path, "mc_value", 0, [0.1, 0.2], finished=False)
    _write_run(tmp_path, "grpo", 0, [0.0, 0.1], ws=0.05)
    runs = load_runs(tmp_path)
    assert [(r.arm, r.seed, r.warm_start) for r in runs][:4] == [
        ("grpo", 0, None), ("grpo", 1, None), ("grpo", 2, None), ("relabel", 0, None)
    ]  # fmt: skip
    assert runs[-1].warm_start == 0.05
    unfinished = next(r for r in runs if r.arm == "mc_value")
    assert not unfinished.finished and unfinished.curve("generated_tokens") == ([0.0, 100.0], [0.1, 0.2])


def test_report_table_threshold_and_sentence(tmp_path):
    _synthetic(tmp_path, relabel_finals=[0.6, 0.7, 0.65], grpo_finals=[0.2, 0.3, 0.25])
    s = write_report(tmp_path, axis="generated_tokens", limit=200, threshold=0.5, task="chain_arithmetic")
    g = s["groups"]["single"]
    # final pass@1 over seeds: t-interval by hand
    assert g["relabel"]["final_pass@1"]["mean"] == pytest.approx(0.65)
    assert g["relabel"]["final_pass@1"]["low"] == pytest.approx(mean_ci([0.6, 0.7, 0.65]).low)
    # budget to 0.5: relabel midpoints are 0.35, 0.4, 0.375 (< 0.5), finals >= 0.5 -> 200 tokens for every seed
    assert g["relabel"]["budget_to_threshold_per_seed"] == [200.0, 200.0, 200.0]
    assert g["relabel"]["seeds_reaching_threshold"] == 3
    assert g["grpo"]["seeds_reaching_threshold"] == 0
    assert g["relabel"]["gain_pass@1"]["mean"] == pytest.approx(0.55)
    assert g["grpo"]["spend"]["verifier_calls"]["mean"] == 20
    md = (tmp_path / "report.md").read_text()
    assert "0.650 [" in md and "never (0/3 seeds)" in md and "| relabel (tree search) / GRPO | 2.60x |" in md
    verdict = next(x for x in s["sentences"] if x.get("a") == "relabel")
    assert verdict["verdict"] == "relabel better"
    assert "excludes 0" in verdict["text"] and "supported" in verdict["text"]
    for name in s["plots"]:
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"
    assert {"pass1_vs_generated_tokens.png", "pass1_vs_verifier_calls.png", "pass1_vs_wall_time.png"} <= set(
        s["plots"]
    )
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert len(evals) == 18 and {e["arm"] for e in evals} == {"grpo", "relabel"}
    assert json.loads((tmp_path / "summary.json").read_text())["threshold"] == 0.5
    assert not s.get("overshoot")  # every run spent exactly the limit
    over = write_report(tmp_path, axis="generated_tokens", limit=150, threshold=0.5, task="t", plots=False)
    assert {o["arm"] for o in over["overshoot"]} == {"grpo", "relabel"} and "33% over" in over["overshoot"][
        0
    ]["text"]


@pytest.mark.parametrize(
    "relabel, grpo, verdict, phrase",
    [
        ([0.6, 0.7, 0.65], [0.2, 0.3, 0.25], "relabel better", "relabel (tree search) is better"),
        ([0.2, 0.3, 0.25], [0.6, 0.7, 0.65], "grpo better", "GRPO is better"),
        ([0.2, 0.6, 0.4], [0.3, 0.5, 0.35], "no detectable difference", "do not separate"),
        ([0.6], [0.2], "undetermined", "no interval"),
    ],
)
def test_performance_sentence_flips_with_data(tmp_path, relabel, grpo, verdict, phrase):
    _synthetic(tmp_path, relabel, grpo)
    s = write_report(tmp_path, axis="generated_tokens", limit=200, threshold=0.5, task="t", plots=False)
    got = next(x for x in s["sentences"] if x.get("a") == "relabel")
    assert got["verdict"] == verdict
    assert phrase in got["text"]


def _variance(g_slope, r_slope, noise=0.01):
    arms = {}
    for arm, slope in (("grpo", g_slope), ("relabel", r_slope)):
        lo, hi = slope - noise, slope + noise
        direction = "increasing" if lo > 0 else "decreasing" if hi < 0 else "flat"
        arms[arm] = {"trend": {"slope": slope, "low": lo, "high": hi, "direction": direction}, "bins": []}
    return {"arms": arms}


@pytest.mark.parametrize(
    "g, r, verdict",
    [
        (0.3, 0.0, "supported"),
        (0.0, 0.3, "contradicted"),
        (0.3, 0.1, "partly supported"),
        (0.3, 0.5, "not supported"),
        (-0.3, 0.0, "contradicted"),
    ],
)
def test_variance_sentence_is_computed(g, r, verdict):
    text, v = variance_sentence(_variance(g, r))
    assert v["verdict"] == verdict
    assert f"{g:+.3f}" in text
    wide = variance_sentence(_variance(0.05, 0.0, noise=0.5))[1]
    assert wide["verdict"] == "inconclusive"


def test_variance_sentence_explains_an_all_zero_arm():
    v = _variance(0.0, 0.0)
    v["arms"]["grpo"] = {"trend": {"slope": None}, "bins": [{"n_prompts": 2, "zero_gradient_fraction": 1.0}]}
    text, verdict = variance_sentence(v)
    assert "100% of its gradient estimates were exactly zero" in text and verdict["verdict"] == "inconclusive"


def test_regime_and_variance_sections(tmp_path):
    for ws, start in ((0.0, 0.0), (0.25, 0.25)):
        for seed in (0, 1):
            _write_run(tmp_path, "grpo", seed, [start, start + 0.05 * (ws > 0)], ws=ws)
            _write_run(tmp_path, "relabel", seed, [start, start + 0.2 + 0.01 * seed], ws=ws)
    variance = {
        "checkpoint": "x",
        "repeats": 4,
        "lengths": [2, 4],
        "arms": {
            "grpo": {
                "per_prompt": [
                    {"length": 2, "relative_variance": 1.0},
                    {"length": 4, "relative_variance": 10.0},
                ],
                "bins": [
                    {
                        "length": 2,
                        "relative_variance_geomean": 1.0,
                        "relative_variance_low": 0.5,
                        "relative_variance_high": 2.0,
                        "n_prompts": 1,
                        "n_defined": 1,
                        "zero_gradient_fraction": 0.0,
                    },
                    {
                        "length": 4,
                        "relative_variance_geomean": 10.0,
                        "relative_variance_low": math.nan,
                        "relative_variance_high": math.nan,
                        "n_prompts": 1,
                        "n_defined": 1,
                        "zero_gradient_fraction": 0.5,
                    },
                ],
                "trend": {"slope": 0.5, "low": 0.1, "high": 0.9, "direction": "increasing"},
            },
            "relabel": {
                "per_prompt": [],
                "bins": [],
                "trend": {"slope": 0.0, "low": -0.1, "high": 0.1, "direction": "flat"},
            },
        },
    }
    s = write_report(tmp_path, axis="generated_tokens", limit=100, threshold=0.5, task="t", variance=variance,
                     warm_starts=[{"target": 0.0, "pass_rate": 0.0, "steps": 0}])  # fmt: skip
    assert set(s["groups"]) == {"0", "0.25"}
    assert "gain_vs_warm_start.png" in s["plots"] and "variance_vs_length.png" in s["plots"]
    assert s["variance"]["verdict"] == "supported"
    md = (tmp_path / "report.md").read_text()
    assert "## Low-pass-rate regime" in md and "## Gradient variance vs task length" in md
    assert (tmp_path / "pass1_vs_generated_tokens_ws0.25.png").exists()
    assert s["groups"]["0"]["relabel"]["gain_pass@1"]["mean"] == pytest.approx(0.205)


def test_performance_sentence_direct():
    stats = {
        "a": {"per_seed_final_pass@1": [0.5, 0.5, 0.5], "final_pass@1": mean_ci([0.5, 0.5, 0.5])},
        "b": {"per_seed_final_pass@1": [0.4, 0.4, 0.4], "final_pass@1": mean_ci([0.4, 0.4, 0.4])},
    }
    text, v = performance_sentence("a", "b", stats, budget_text="10 tokens")
    assert v["verdict"] == "a better" and "10 tokens" in text


def test_contrast_sentences_read_the_ingredient_in_plain_words(tmp_path):
    finals = {
        "grpo": [0.4, 0.5, 0.45],
        "relabel": [0.6, 0.7, 0.65],
        "mc_value": [0.2, 0.3, 0.25],
        "tree_grpo": [0.2, 0.3, 0.25],
        "rft": [0.6, 0.7, 0.65],
    }
    for arm, values in finals.items():
        for seed, f in enumerate(values):
            _write_run(tmp_path, arm, seed, [0.1, (0.1 + f) / 2, f])
    s = write_report(tmp_path, axis="generated_tokens", limit=200, threshold=0.5, task="t", plots=False)
    said = {(x["a"], x["b"]): (x["verdict"], x["text"]) for x in s["sentences"]}
    # tree vs AlphaZero target, and the tree against GRPO's independent completions
    assert said["relabel", "tree_grpo"][0] == "relabel better"
    assert "the AlphaZero target adds to the tree" in said["relabel", "tree_grpo"][1]
    assert "the tree alone does not help" in said["tree_grpo", "grpo"][1]
    # credit vs none: every credit-assigning arm against RFT, in either order
    assert "imitating verified samples beats MC value" in said["mc_value", "rft"][1]
    assert (
        "data do not separate" in said["relabel", "rft"][1]
        and "the data, not the credit" in said["relabel", "rft"][1]
    )
    assert "imitating verified samples beats GRPO" in said["rft", "grpo"][1]
    assert ("mc_value", "tree_grpo") not in said and (
        "tree_grpo",
        "mc_value",
    ) not in said  # no ingredient isolated
    md = (tmp_path / "report.md").read_text()
    assert "tree GRPO (TreeRL)" in md and "RFT (rejection sampling)" in md
