"""llm_rl.analysis.report on small synthetic run sets (no model): paired estimates equal the estimator applied by
hand, the one start, budget to threshold ("already met at start", "not reached"), equal-spend interpolation, the
contrast family (Holm), a sweep's headline and its slope verdict, every table as md/csv/tex and every figure as
PNG + PDF, the Files section, the variance sentence."""

import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from llm_rl.analysis.report import load_runs, write_report
from llm_rl.analysis.verdicts import variance_sentence
from llm_rl.config import ExperimentConfig
from relabel_rl.config import load_config
from relabel_rl.stats import crossed_mean, holm, paired_difference

N = 60  # items


def _cfg(tmp_path, **compare):
    data = {"output_dir": str(tmp_path), "budget": {"axis": "generated_tokens", "limit": 200, "eval_every": 100},
            "compare": {"arms": ["grpo", "relabel"], "pass_threshold": 0.5, **compare}}  # fmt: skip
    return load_config(ExperimentConfig, data=data)


def _write_run(root, name, seed, items, *, arm=None, feedback="outcome", overrides=None, group=None, sweep=None,
               spend=(100, 100), finished=True):  # fmt: skip
    """A run whose evaluation i has per-item results ``items[i]`` at generated_tokens = sum(spend[:i])."""
    base = root / "runs" if group is None else root / "runs" / group
    path = base / f"{name}-seed{seed}"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"arm": arm or name, "task": {"feedback": feedback}}))
    cell = {"variant": name, "arm": arm or name, "overrides": overrides or {},
            "sweep": None if sweep is None else {"knob": "length", "value": sweep}}  # fmt: skip
    (path / "meta.json").write_text(json.dumps({"cell": cell}))
    records, tokens = [], 0
    for i, row in enumerate(items):
        tokens = sum(spend[:i])
        counters = {"generated_tokens": tokens, "prefill_tokens": 3 * tokens, "total_tokens": 4 * tokens,
                    "outcome_verifier_calls": tokens // 10, "step_verifier_calls": 0, "verifier_calls": tokens // 10,
                    "prompts": tokens // 20, "optimizer_steps": i, "wall_time": 2.0 * i}  # fmt: skip
        records.append({"kind": "eval", "step": i, **counters, "pass@1": float(np.mean(row)), "pass@k": None, "k": 0,
                        "item_pass@1": [int(v) for v in row], "items_digest": f"rows{group}"})  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        (path / "final_metrics.json").write_text(
            json.dumps({k: v for k, v in records[-1].items() if k != "kind"})
        )
    return path


def _rows(rng, p, n=N):
    return (rng.random(n) < p).astype(int)


def _set(tmp_path, *, relabel_p=0.7, grpo_p=0.4, seeds=3, start=None, group=None, sweep=None, seed=0):
    rng = np.random.default_rng(seed)
    start = _rows(rng, 0.2) if start is None else start
    tables = {"grpo": [], "relabel": []}
    for s in range(seeds):
        for name, p in (("grpo", grpo_p), ("relabel", relabel_p)):
            final = np.maximum(start, _rows(rng, p))
            tables[name].append(final)
            _write_run(tmp_path, name, s, [start, final], group=group, sweep=sweep)
    return start, {k: np.array(v) for k, v in tables.items()}


def test_paired_estimates_are_the_estimator_applied_to_the_item_tables(tmp_path):
    start, t = _set(tmp_path, relabel_p=0.9, grpo_p=0.3, seeds=5)
    s = write_report(tmp_path, _cfg(tmp_path), plots=False)
    g = s["groups"]["single"]
    assert g["start"]["identical"] and g["start"]["runs"] == 10  # one start figure, measured on the test rows
    assert g["start"]["estimate"]["estimate"] == pytest.approx(start.mean())
    rel = g["variants"]["relabel"]
    assert rel["final_pass@1"]["estimate"] == pytest.approx(crossed_mean(t["relabel"]).estimate)
    assert rel["gain_pass@1"]["low"] == pytest.approx(paired_difference(t["relabel"], start).low)
    by_hand = paired_difference(t["relabel"], t["grpo"])
    assert rel["vs_baseline"]["estimate"] == pytest.approx(by_hand.estimate)
    assert rel["vs_baseline"]["high"] == pytest.approx(by_hand.high) and rel["baseline"] == "grpo"
    assert rel["vs_baseline"]["seed_share"] + rel["vs_baseline"]["item_share"] == pytest.approx(1.0)
    contrast = next(c for c in s["contrasts"] if c["a"] == "relabel")
    assert contrast["kind"] == "vs baseline" and contrast["verdict"] == "a better"
    assert "supported" in contrast["text"] and "minimum detectable difference" in contrast["text"]
    md = (tmp_path / "report.md").read_text()
    assert "| relabel (tree search) | outcome |" in md and "Where the uncertainty comes from" in md
    assert "variance.json" not in md  # no probe, not listed among the files


def test_the_stated_median_seed_share_is_the_median_of_the_differences_to_the_baseline(tmp_path):
    """Two differences to the baseline: their median is the mean of the two (not the larger one)."""
    start, _ = _set(tmp_path, relabel_p=0.9, grpo_p=0.3, seeds=4)
    rng = np.random.default_rng(7)
    for s in range(4):
        _write_run(tmp_path, "mc_value", s, [start, np.maximum(start, _rows(rng, 0.5))])
    summary = write_report(tmp_path, _cfg(tmp_path, arms=["grpo", "relabel", "mc_value"]), plots=False)
    shares = [
        summary["groups"]["single"]["variants"][v]["vs_baseline"]["seed_share"]
        for v in ("relabel", "mc_value")
    ]
    assert shares[0] != shares[1]
    assert summary["uncertainty"]["median_seed_share"] == pytest.approx((shares[0] + shares[1]) / 2)


@pytest.mark.parametrize(
    "relabel_p, grpo_p, verdict",
    [(0.9, 0.3, "a better"), (0.3, 0.9, "b better"), (0.5, 0.5, "no detectable difference")],
)
def test_verdict_flips_with_the_data(tmp_path, relabel_p, grpo_p, verdict):
    _set(tmp_path, relabel_p=relabel_p, grpo_p=grpo_p, seeds=5, seed=3)
    s = write_report(tmp_path, _cfg(tmp_path), plots=False)
    assert next(c for c in s["contrasts"] if c["a"] == "relabel")["verdict"] == verdict


def test_budget_to_threshold_says_already_met_and_not_reached(tmp_path):
    high = np.ones(N, dtype=int)
    high[:10] = 0  # start 0.833, above the threshold 0.5
    for s in range(2):
        _write_run(tmp_path, "relabel", s, [high, high, high])
    for s in range(2):
        low = np.zeros(N, dtype=int)
        _write_run(tmp_path, "mc_value", s, [low, low, low])  # never reaches it
        reach = low.copy()
        reach[: 40 if s == 0 else 10] = 1  # seed 0 reaches 0.67 at the second eval, seed 1 never
        _write_run(tmp_path, "grpo", s, [low, low, reach])
    g = write_report(tmp_path, _cfg(tmp_path, arms=["grpo", "relabel", "mc_value"]), plots=False)["groups"][
        "single"
    ]
    assert g["variants"]["relabel"]["budget_to_threshold"]["text"] == "already met at start"
    assert g["variants"]["mc_value"]["budget_to_threshold"]["text"] == "not reached (0/2 seeds)"
    grpo = g["variants"]["grpo"]["budget_to_threshold"]
    assert [p["status"] for p in grpo["per_seed"]] == ["reached", "not reached"]
    assert grpo["per_seed"][0]["spend"] == 200 and "1/2 seeds; 1 not reached" in grpo["text"]
    md = (tmp_path / "report.md").read_text()
    assert "already met at start" in md and "not reached (0/2 seeds)" in md


def test_start_differing_between_runs_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    a, b = _rows(rng, 0.3), _rows(rng, 0.3)
    _write_run(tmp_path, "grpo", 0, [a, _rows(rng, 0.5)])
    _write_run(tmp_path, "grpo", 1, [b, _rows(rng, 0.5)])
    g = write_report(tmp_path, _cfg(tmp_path, arms=["grpo"]), plots=False)["groups"]["single"]
    assert not g["start"]["identical"] and g["start"]["distinct"] == 2
    assert "2 different values over 2 runs" in (tmp_path / "report.md").read_text()


def test_equal_spend_interpolates_between_evaluations(tmp_path):
    """GRPO's runs spend 800 total tokens (4 x 200 generated), relabel's evaluations sit at 0, 400 and 1600: at 800
    relabel is a third of the way from its second evaluation (all 0) to its last (all 1)."""
    ones, zeros = np.ones(N, dtype=int), np.zeros(N, dtype=int)
    for s in range(2):
        _write_run(tmp_path, "grpo", s, [zeros, zeros, ones], spend=(100, 100))
        _write_run(tmp_path, "relabel", s, [zeros, zeros, ones], spend=(100, 300))
    g = write_report(tmp_path, _cfg(tmp_path), plots=False)["groups"]["single"]
    eq = g["variants"]["relabel"]["equal_spend"]["total_tokens"]
    assert eq["at"] == 800  # GRPO's total (4 x 200) is the cheapest
    assert eq["pass@1"]["estimate"] == pytest.approx(1 / 3)
    assert eq["vs_baseline"]["estimate"] == pytest.approx(1 / 3 - 1)


def test_runs_without_items_fall_back_to_per_seed_values(tmp_path):
    for s, (p0, p1) in enumerate(((0.2, 0.5), (0.2, 0.6), (0.2, 0.55))):
        path = tmp_path / "runs" / f"grpo-seed{s}"
        path.mkdir(parents=True)
        recs = [
            {"kind": "eval", "step": i, "generated_tokens": 100 * i, "pass@1": p}
            for i, p in enumerate((p0, p1))
        ]
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (path / "final_metrics.json").write_text(json.dumps({"pass@1": p1}))
    g = write_report(tmp_path, _cfg(tmp_path, arms=["grpo"]), plots=False)["groups"]["single"]["variants"][
        "grpo"
    ]
    assert not g["per_item"] and g["final_pass@1"]["num_items"] == 1
    assert g["final_pass@1"]["estimate"] == pytest.approx(0.55)
    assert "per-seed values only" in (tmp_path / "report.md").read_text()


def test_contrast_family_over_feedback_settings_and_ablations_is_holm_adjusted(tmp_path):
    rng = np.random.default_rng(5)
    start = _rows(rng, 0.2)
    spec = [("grpo", "grpo", "outcome", {}), ("relabel", "relabel", "outcome", {}),
            ("grpo_steps", "grpo", "steps", {"task.feedback": "steps"}),
            ("relabel_steps", "relabel", "steps", {"task.feedback": "steps"}),
            ("relabel_noprune", "relabel", "outcome", {"relabel.prune_rejected_steps": False})]  # fmt: skip
    for s in range(3):
        for name, arm, fb, over in spec:
            _write_run(tmp_path, name, s, [start, np.maximum(start, _rows(rng, 0.5))], arm=arm, feedback=fb,
                       overrides=over)  # fmt: skip
    s = write_report(tmp_path, _cfg(tmp_path), plots=False)
    kinds = {(c["a"], c["b"]): c["kind"] for c in s["contrasts"]}
    assert kinds == {
        ("relabel", "grpo"): "vs baseline",
        ("relabel_steps", "grpo_steps"): "vs baseline",  # the baseline under the same feedback setting
        ("grpo_steps", "grpo"): "step checks",
        ("relabel_steps", "relabel"): "step checks",
        ("relabel_noprune", "relabel"): "ablation",
    }
    raw = [c["difference"]["p_value"] for c in s["contrasts"]]
    assert [c["p_adjusted"] for c in s["contrasts"]] == pytest.approx(holm(raw))
    assert all(c["family_size"] == 5 for c in s["contrasts"])
    assert s["groups"]["single"]["variants"]["relabel_steps"]["baseline"] == "grpo_steps"
    md = (tmp_path / "report.md").read_text()
    assert (
        "| grpo_steps | grpo | steps | task.feedback=steps |" in md
    )  # the settings table names each feedback


def test_sweep_headline_figure_tables_and_slope_verdict(tmp_path):
    """The paired gap to GRPO grows by 0.1 per length: the verdict says the gap grows; figure and tables written."""
    for length in (2, 4, 6):
        rng = np.random.default_rng(length)
        start = _rows(rng, 0.2)
        for s in range(3):
            base = _rows(rng, 0.3)
            better = np.maximum(base, _rows(rng, 0.05 * length))
            _write_run(tmp_path, "grpo", s, [start, base], group=f"length{length}", sweep=length)
            _write_run(tmp_path, "relabel", s, [start, better], group=f"length{length}", sweep=length)
    cfg = _cfg(tmp_path, sweep={"knob": "length", "values": [2, 4, 6]})
    s = write_report(
        tmp_path, cfg, warm_starts=[{"target": 0.25, "pass_rate": 0.3, "steps": 10, "held_out_rows": 64}]
    )
    primary = s["headline"]["primary"]
    assert primary["name"] == "relabel" and primary["direction"] == "increasing"
    assert set(s["groups"]) == {"length2", "length4", "length6"}
    md = (tmp_path / "report.md").read_text()
    assert "## Headline" in md and "the gap grows with length" in md and "prediction is supported" in md
    for name in ("headline", "pass1_vs_generated_tokens_length4"):
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.format == "PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    for table in ("headline", "contrasts", "results_length2", "spend_length6", "warm_start", "uncertainty"):
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{table}.{ext}").stat().st_size > 0
    tex = (tmp_path / "tables" / "headline.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex


def test_a_shrinking_lead_of_grpo_is_not_read_as_search_pulling_ahead(tmp_path):
    """The gap relabel − GRPO grows with length only because GRPO's lead shrinks to nothing where neither arm
    learns (the longest length): the slope is positive, the conclusion says "partly supported", names the shrinking
    lead and the baseline's gain at the longest length — not "the prediction is supported"."""
    for length, (p_grpo, p_relabel) in {2: (0.6, 0.35), 4: (0.45, 0.3), 6: (None, None)}.items():
        rng = np.random.default_rng(length)
        start = _rows(rng, 0.2)
        for s in range(4):
            finals = {}
            for name, p in (("grpo", p_grpo), ("relabel", p_relabel)):
                if p is None:  # no learning: the start with a few items flipped either way
                    finals[name] = np.where(rng.random(N) < 0.05, 1 - start, start)
                else:
                    finals[name] = np.maximum(start, _rows(rng, p))
                _write_run(tmp_path, name, s, [start, finals[name]], group=f"length{length}", sweep=length)
    cfg = _cfg(tmp_path, sweep={"knob": "length", "values": [2, 4, 6]})
    s = write_report(tmp_path, cfg, plots=False)
    primary = s["headline"]["primary"]
    assert primary["direction"] == "increasing", primary["slope"]
    assert [p["value"] for p in primary["points"]] == [2.0, 4.0, 6.0]
    conclusion = (tmp_path / "report.md").read_text().split("## Conclusion")[1]
    assert "the baseline's lead shrinks rather than search pulling ahead" in conclusion
    assert "it is behind at length 2" in conclusion and "partly supported" in conclusion
    assert "at length 6 the baseline gains" in conclusion
    assert "the prediction is supported" not in conclusion


def test_load_runs_reads_cells_and_groups(tmp_path):
    _write_run(tmp_path, "relabel_noprune", 0, [np.zeros(3)], arm="relabel", overrides={"x": 1}, group="length2",
               sweep=2)  # fmt: skip
    _write_run(tmp_path, "grpo", 1, [np.zeros(3)], group="ws0.05")
    runs = load_runs(tmp_path)
    by = {r.name: r for r in runs}
    assert by["relabel_noprune"].arm == "relabel" and by["relabel_noprune"].sweep_value == 2
    assert by["grpo"].warm_start == 0.05 and by["grpo"].group == "ws0.05"


def _variance(g_slope, r_slope, noise=0.01):
    arms = {}
    for arm, slope in (("grpo", g_slope), ("relabel", r_slope)):
        lo, hi = slope - noise, slope + noise
        direction = "increasing" if lo > 0 else "decreasing" if hi < 0 else "flat"
        arms[arm] = {"trend": {"slope": slope, "low": lo, "high": hi, "direction": direction}, "bins": []}
    return {"arms": arms}


@pytest.mark.parametrize(
    "g, r, verdict",
    [(0.3, 0.0, "supported"), (0.0, 0.3, "contradicted"), (0.3, 0.1, "partly supported"), (0.3, 0.5, "not supported"),
     (-0.3, 0.0, "contradicted")],
)  # fmt: skip
def test_variance_sentence_is_computed(g, r, verdict):
    text, v = variance_sentence(_variance(g, r))
    assert v["verdict"] == verdict and f"{g:+.3f}" in text
    assert variance_sentence(_variance(0.05, 0.0, noise=0.5))[1]["verdict"] == "inconclusive"


def test_variance_section_and_files_list_it(tmp_path):
    _set(tmp_path)
    bins = [{"length": L, "n_prompts": 4, "relative_variance": 1.0 * L, "relative_variance_low": 0.5 * L,
             "relative_variance_high": 2.0 * L, "relative_variance_per_1k_tokens": 0.1 * L, "per_1k_tokens_low": 0.05,
             "per_1k_tokens_high": math.nan, "generated_tokens_per_estimate": 100.0, "zero_share": 0.25,
             "capped_share": 0.0, "noise_dominated_share": 0.0} for L in (1, 2)]  # fmt: skip
    variance = {"checkpoint": "x", "repeats": 4, "prompts_per_length": 4, "lengths": [1, 2],
                "arms": {"grpo": {"bins": bins, "trend": {"slope": 0.3, "low": 0.1, "high": 0.5,
                                                          "direction": "increasing"}},
                         "relabel": {"bins": bins, "trend": {"slope": 0.0, "low": -0.1, "high": 0.1,
                                                             "direction": "flat"}}}}  # fmt: skip
    s = write_report(tmp_path, _cfg(tmp_path), variance=variance)
    assert s["variance"]["verdict"] == "supported" and "variance_vs_length.png" in s["plots"]
    md = (tmp_path / "report.md").read_text()
    assert "## Gradient variance vs task length" in md and "`variance.json`" in md
    assert (tmp_path / "variance_vs_length.pdf").exists() and (
        tmp_path / "tables" / "variance_probe.csv"
    ).exists()


def test_a_missed_warm_start_target_is_said_at_the_top(tmp_path):
    _set(tmp_path, seeds=2)
    write_report(
        tmp_path, _cfg(tmp_path), warm_starts=[{"target": 0.5, "pass_rate": 0.2, "steps": 400}], plots=False
    )
    md = (tmp_path / "report.md").read_text()
    assert md.index("missed its target") < md.index("## Settings")


def _five_arms(tmp_path, finals, *, feedback="outcome", seeds=4, seed=7):
    """Every arm in ``finals`` (arm -> success rate of its final evaluation) from one start, per-item results."""
    rng = np.random.default_rng(seed)
    start = _rows(rng, 0.2)
    for s in range(seeds):
        for arm, p in finals.items():
            _write_run(tmp_path, arm, s, [start, np.maximum(start, _rows(rng, p))], feedback=feedback)


def test_contrast_sentences_read_the_ingredient_in_plain_words(tmp_path):
    _five_arms(tmp_path, {"grpo": 0.45, "relabel": 0.95, "mc_value": 0.05, "tree_grpo": 0.05, "rft": 0.95})
    cfg = _cfg(tmp_path, arms=["grpo", "relabel", "mc_value", "tree_grpo", "rft"])
    s = write_report(tmp_path, cfg, plots=False)
    said = {(c["a"], c["b"]): c for c in s["contrasts"]}
    # search vs outcome-only PG under outcome (the baseline's contrast, with the seed's claim)
    c = said["relabel", "grpo"]
    assert c["verdict"] == "a better" and "Search vs outcome-only policy gradient" in c["text"]
    assert "the search's per-step targets beat GRPO" in c["text"] and "prediction" in c["text"]
    # the tree alone vs the AlphaZero target, and the tree against GRPO's independent completions
    c = said["tree_grpo", "relabel"]
    assert c["kind"] == "ingredient" and c["verdict"] == "b better"
    assert "the AlphaZero target adds to the tree alone" in c["text"]
    assert "the tree alone does not help" in said["tree_grpo", "grpo"]["text"]
    assert "the tree is part of what helps" in said["relabel", "mc_value"]["text"]
    # credit vs none: every credit-assigning arm against RFT, in either order
    assert "imitating verified samples beats MC value" in said["mc_value", "rft"]["text"]
    assert "data do not separate" in said["relabel", "rft"]["text"]
    assert "the data, not the credit" in said["relabel", "rft"]["text"]
    assert "imitating verified samples beats GRPO" in said["rft", "grpo"]["text"]
    assert not {("mc_value", "tree_grpo"), ("tree_grpo", "mc_value")} & set(said)  # no ingredient isolated
    # one Holm family over all of them
    assert all(c["family_size"] == len(said) for c in said.values())
    md = (tmp_path / "report.md").read_text()
    assert "tree GRPO (TreeRL)" in md and "RFT (rejection sampling)" in md


def test_step_checks_and_value_head_ablation_read_in_plain_words(tmp_path):
    rng = np.random.default_rng(11)
    start = _rows(rng, 0.2)
    spec = [("grpo", "grpo", "outcome", {}, 0.3), ("relabel", "relabel", "outcome", {}, 0.5),
            ("grpo_steps", "grpo", "steps", {"task.feedback": "steps"}, 0.3),
            ("relabel_steps", "relabel", "steps", {"task.feedback": "steps"}, 0.95),
            ("relabel_novalue", "relabel", "outcome", {"relabel.value_loss_coef": 0.0}, 0.05)]  # fmt: skip
    for s in range(4):
        for name, arm, fb, over, p in spec:
            _write_run(tmp_path, name, s, [start, np.maximum(start, _rows(rng, p))], arm=arm, feedback=fb,
                       overrides=over)  # fmt: skip
    said = {(c["a"], c["b"]): c for c in write_report(tmp_path, _cfg(tmp_path), plots=False)["contrasts"]}
    text = said["relabel_steps", "relabel"]["text"]
    assert "Step checks on vs off (relabel (tree search)): the arm does better with per-step checks" in text
    assert "the data do not show that per-step checks" in said["grpo_steps", "grpo"]["text"]
    text = said["relabel_steps", "grpo_steps"]["text"]  # search vs PG under steps: both with step checks
    assert "both with step checks" in text and "the search's per-step targets beat GRPO" in text
    text = said["relabel_novalue", "relabel"]["text"]
    assert "Value-head ablation (relabel (tree search) with relabel.value_loss_coef=0.0)" in text
    assert "the plain arm beats the variant" in text


def test_a_contrast_without_paired_runs_is_undetermined_and_still_names_its_arms():
    """A group whose runs are not all finished yet (a sweep value still running) must not crash the report."""
    from llm_rl.analysis.verdicts import difference_verdict

    text, verdict = difference_verdict("relabel", "grpo", None, p_adjusted=math.nan, family=3)
    assert verdict["verdict"] == "undetermined" and (verdict["a"], verdict["b"]) == ("relabel", "grpo")
    assert "no paired runs" in text


def test_a_scaled_budget_is_stated_per_length_and_overshoot_is_read_against_each_lengths_limit(tmp_path):
    """Under ``compare.sweep.scale_budget`` a run at length 4 may spend twice what one at length 2 does: the
    report states each length's limit and does not call the longer runs over budget; the same runs read against
    one unscaled limit are."""
    rng = np.random.default_rng(3)
    for length in (2, 4):
        start = _rows(rng, 0.2)
        for s in range(3):
            for name in ("grpo", "relabel"):
                spend = (50 * length, 50 * length)
                final = np.maximum(start, _rows(rng, 0.4))
                _write_run(
                    tmp_path, name, s, [start, final], group=f"length{length}", sweep=length, spend=spend
                )

    def report(**sweep):
        data = {"output_dir": str(tmp_path), "budget": {"axis": "generated_tokens", "limit": 50, "eval_every": 25},
                "compare": {"arms": ["grpo", "relabel"], "sweep": {"knob": "length", "values": [2, 4], **sweep}}}  # fmt: skip
        s = write_report(tmp_path, load_config(ExperimentConfig, data=data), plots=False)
        return s, (tmp_path / "report.md").read_text()

    s, md = report(scale_budget=True)
    assert s["limit_scaled_by"] == "length"
    assert (
        "50 generated tokens per unit of length (`compare.sweep.scale_budget`: 100 at length 2, 200 at length 4)"
        in md
    )
    assert "over the limit" not in md
    s, md = report()
    assert s["limit_scaled_by"] is None and "until it has spent 50 generated tokens." in md
    assert "Note: GRPO spent 200 generated tokens on average, 300% over the limit of 50" in md


def test_a_run_that_ends_below_its_start_is_named_in_its_group_and_the_conclusion(tmp_path):
    """One GRPO seed of four collapses (most of its start's successes lost): the report names that run with its
    start, final and per-item interval, in its group and in the conclusion; runs that merely fail to improve, or
    lose a few items within noise, are not named."""
    rng = np.random.default_rng(11)
    start = _rows(rng, 0.3)
    for s in range(4):
        for name in ("grpo", "relabel"):
            if (name, s) == ("grpo", 2):
                final = np.where(rng.random(N) < 0.9, 0, start)  # collapsed: most successes lost
            elif (name, s) == ("relabel", 1):
                final = start.copy()
                final[np.flatnonzero(start)[:1]] = 0  # one item lost: not separated from noise
            else:
                final = np.maximum(start, _rows(rng, 0.4))
            _write_run(tmp_path, name, s, [start, final], group="length4", sweep=4)
    s = write_report(tmp_path, _cfg(tmp_path, sweep={"knob": "length", "values": [4]}), plots=False)
    assert [(e["variant"], e["seed"], e["group"]) for e in s["below_start"]] == [("grpo", 2, "length4")]
    e = s["below_start"][0]
    assert e["final"] < e["start"] and e["change"]["high"] < 0
    md = (tmp_path / "report.md").read_text()
    group, conclusion = md.split("## Conclusion")
    assert "1 run ended below its start" in group and "GRPO seed 2:" in group
    assert "GRPO seed 2 at length 4:" in conclusion and "is a bug until shown otherwise" in conclusion
    assert "seed 1" not in conclusion
