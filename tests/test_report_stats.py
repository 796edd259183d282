"""relabel_rl.report: the statistics every report prints, checked against hand-computed numbers."""

import math

import numpy as np
import pytest
from PIL import Image

from relabel_rl.report import (
    difference_ci,
    elo_difference,
    elo_from_score,
    first_crossing,
    format_ci,
    interpolate_runs,
    linear_trend,
    markdown_table,
    mean_ci,
    plot_mean_ci,
    wilson_interval,
)


def test_mean_ci_t_interval_by_hand():
    # values 1, 2, 3: mean 2, s = 1, se = 1/sqrt(3); t_{0.975, 2} = 4.302652729...
    ci = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert ci.mean == pytest.approx(2.0)
    assert ci.std == pytest.approx(1.0)
    assert (ci.low, ci.high) == pytest.approx((2.0 - half, 2.0 + half))
    assert ci.n == 3
    # 90 % interval: t_{0.95, 2} = 2.919985580...
    ci90 = mean_ci([1.0, 2.0, 3.0], confidence=0.9)
    assert ci90.half_width == pytest.approx(2.919985580353726 / math.sqrt(3))


def test_mean_ci_degenerate_cases():
    one = mean_ci([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and one.n == 1
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)
    assert mean_ci([0.5, float("nan"), 0.5]).n == 2  # nan dropped
    same = mean_ci([0.5, 0.5, 0.5])
    assert same.low == same.high == 0.5
    assert one.overlaps(same) is None
    assert mean_ci([0, 1, 2]).overlaps(mean_ci([10, 11, 12])) is False
    assert mean_ci([0, 1, 2]).overlaps(mean_ci([1, 2, 3])) is True


def test_difference_ci_welch_by_hand():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # va/na = 1/3, vb/nb = (20/3)/4 = 5/3; se = sqrt(2); df = 4 / ((1/9)/2 + (25/9)/3) = 4/0.98148... = 4.0754...
    va, vb = 1 / 3, 5 / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(2)
    d = difference_ci(a, b)
    assert d.mean == pytest.approx(2.0 - 5.0)
    assert (d.low, d.high) == pytest.approx((-3 - half, -3 + half))
    assert df == pytest.approx(4.0754716981)
    assert math.isnan(difference_ci([1.0], [2.0, 3.0]).low)
    assert difference_ci([1.0, 1.0], [0.0, 0.0]).low == 1.0


def test_wilson_by_hand_and_against_scipy():
    # 8 of 10, z = 1.959964: centre = (0.8 + z²/20)/(1 + z²/10), half = z*sqrt(0.016 + z²/400)/(1 + z²/10)
    z = 1.959963984540054
    denom = 1 + z * z / 10
    centre = (0.8 + z * z / 20) / denom
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / denom
    r = wilson_interval(8, 10)
    assert r.rate == 0.8
    assert (r.low, r.high) == pytest.approx((centre - half, centre + half))
    assert (r.low, r.high) == pytest.approx((0.4901625, 0.9433178), abs=1e-6)
    from scipy.stats import binomtest

    for k, n in [(0, 10), (10, 10), (3, 7), (50, 64)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        got = wilson_interval(k, n)
        assert (got.low, got.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # 0 % and 100 % keep a non-degenerate interval
    assert wilson_interval(0, 10).high > 0.2 and wilson_interval(10, 10).low < 0.8
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_elo_from_score_and_difference():
    assert elo_from_score(0.5) == 0.0
    assert elo_from_score(0.75) == pytest.approx(400 * math.log10(3))  # 190.85
    assert elo_from_score(1 / 11) == pytest.approx(-400.0)
    assert elo_from_score(1.0) == math.inf and elo_from_score(0.0) == -math.inf
    e = elo_difference(30, 40)
    w = wilson_interval(30, 40)
    assert e.elo == pytest.approx(190.848501887865)
    assert e.low == pytest.approx(-400 * math.log10(1 / w.low - 1))
    assert e.low < e.elo < e.high
    d = elo_difference(10, 40, draws=20)  # score (10 + 10) / 40 = 0.5
    assert d.elo == 0.0 and d.low < 0 < d.high
    assert elo_difference(10, 10).elo == math.inf and math.isfinite(elo_difference(10, 10).low)


def test_linear_trend():
    x = [1, 2, 3, 4, 5]
    t = linear_trend(x, [2 * v + 1 for v in x])
    assert t.slope == pytest.approx(2.0) and t.intercept == pytest.approx(1.0)
    assert t.low == pytest.approx(2.0) and t.direction == "increasing"
    noisy = linear_trend([1, 2, 3, 1, 2, 3], [0.0, 0.1, -0.1, 0.1, -0.1, 0.0])
    assert noisy.direction == "flat"
    assert linear_trend([1, 2, 3], [3.0, 2.0, 1.0]).direction == "decreasing"
    assert linear_trend([1, 1], [1.0, 2.0]).direction == "unknown"
    # by hand: x = 0,1,2 y = 0,2,1 -> slope 0.5, residuals -0.5,1,-0.5 -> s² = 1.5, stderr = sqrt(1.5/2)
    h = linear_trend([0, 1, 2], [0.0, 2.0, 1.0])
    assert h.slope == pytest.approx(0.5)
    assert h.high - h.slope == pytest.approx(12.706204736174 * math.sqrt(1.5 / 2))


def test_first_crossing():
    assert first_crossing([0, 10, 20, 30], [0.1, 0.4, 0.6, 0.5], 0.5) == 20.0
    assert first_crossing([0, 10], [0.1, 0.2], 0.5) is None
    assert first_crossing([0, 10], [0.5, 0.7], 0.5) == 0.0


def test_interpolate_runs_mean_and_support():
    runs = [([0, 10], [0.0, 1.0]), ([0, 5, 20], [0.2, 0.2, 0.2])]
    s = interpolate_runs(runs, num_points=5)
    i10 = int(np.where(s["x"] == 10)[0][0])
    assert s["mean"][i10] == pytest.approx((1.0 + 0.2) / 2) and s["n"][i10] == 2
    i20 = int(np.where(s["x"] == 20)[0][0])
    assert s["n"][i20] == 1 and s["mean"][i20] == pytest.approx(0.2)  # run 1 is not extrapolated
    assert interpolate_runs([])["x"].size == 0


def test_markdown_table_and_format():
    t = markdown_table(["arm", "pass@1"], [["grpo", "0.5"], ["a|b", 1]], align="lr")
    assert t.splitlines() == ["| arm | pass@1 |", "|:---|---:|", "| grpo | 0.5 |", "| a\\|b | 1 |"]
    with pytest.raises(ValueError):
        markdown_table(["a"], [["x", "y"]])
    assert format_ci(mean_ci([1.0, 2.0, 3.0]), digits=2) == "2.00 [-0.48, 4.48]"
    assert format_ci(mean_ci([0.25])) == "0.250 (n=1)"
    assert format_ci(None) == "–"
    assert format_ci(wilson_interval(8, 10), digits=3, percent=True) == "80.0% [49.0%, 94.3%]"
    assert format_ci(mean_ci([20000.0, 30000.0, 40000.0])).startswith("30,000 [")


def test_plot_mean_ci_writes_a_png(tmp_path):
    curves = {
        "grpo": [([0, 10, 20], [0.1, 0.2, 0.3]), ([0, 10, 20], [0.1, 0.25, 0.35])],
        "relabel": [([0, 10, 20], [0.1, 0.4, 0.6])],
    }
    out = plot_mean_ci(tmp_path / "p.png", curves, xlabel="tokens", ylabel="pass@1", title="t", hline=0.5)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    out2 = plot_mean_ci(tmp_path / "v.png", curves, xlabel="len", ylabel="v", logy=True, markers=True)
    assert out2.stat().st_size > 1000
