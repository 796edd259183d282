"""relabel_rl.stats: the crossed (seeds x items) estimator — hand-computed numbers and coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relabel_rl.stats import crossed_mean, holm, interpolate_items, linear_contrast, paired_difference


def test_variance_components_by_hand():
    # 2 seeds x 3 items. grand 2, row means (1, 3), column means (1, 2, 3) with an interaction of +-0.
    x = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    est = crossed_mean(x)
    assert est.estimate == pytest.approx(2.0)
    # MS_seed = 3 * ((1-2)^2 + (3-2)^2) / 1 = 6; MS_item = 2 * (1 + 0 + 1) / 2 = 2; MS_resid = 0
    assert est.var_seed == pytest.approx(6 / 3)
    assert est.var_item == pytest.approx(2 / 2)
    assert est.var_resid == pytest.approx(0.0)
    assert est.se == pytest.approx(math.sqrt(2 / 2 + 1 / 3))
    assert est.seed_share == pytest.approx(1.0 / (1.0 + 1 / 3))
    assert est.seed_share + est.item_share == pytest.approx(1.0)


def test_one_seed_is_an_item_interval():
    scores = [1, 0, 1, 1, 0, 1, 1, 1]
    est = crossed_mean(scores)
    assert est.num_seeds == 1 and est.var_seed == 0.0
    assert est.df == pytest.approx(len(scores) - 1)
    assert est.se == pytest.approx(np.std(scores, ddof=1) / math.sqrt(len(scores)))


def test_paired_difference_against_a_shared_start():
    rng = np.random.default_rng(0)
    start = rng.integers(0, 2, size=50).astype(float)
    runs = np.stack([start, start, start])  # no change on any seed
    est = paired_difference(runs, start)
    assert est.estimate == 0.0 and est.se == 0.0 and not est.excludes_zero


def test_shape_mismatch_and_nan_are_refused():
    with pytest.raises(ValueError, match="shape"):
        paired_difference(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="nan"):
        crossed_mean([[0.0, math.nan]])


def _simulate(rng, seeds, items, delta, seed_sd=0.04):
    """Two arms on the same items: p_i + effect of the seed, Bernoulli outcomes; true mean difference delta."""
    p = rng.uniform(0.2, 0.7, size=items)
    a = rng.random((seeds, items)) < (p + delta + rng.normal(0, seed_sd, (seeds, 1)))
    b = rng.random((seeds, items)) < (p + rng.normal(0, seed_sd, (seeds, 1)))
    return a.astype(float), b.astype(float)


@pytest.mark.parametrize("seeds", [3, 5])
def test_interval_covers_a_known_difference_at_the_nominal_rate(seeds):
    rng = np.random.default_rng(1234 + seeds)
    delta, reps, covered = 0.05, 400, 0
    for _ in range(reps):
        a, b = _simulate(rng, seeds, 200, delta)
        est = paired_difference(a, b)
        covered += est.low <= delta <= est.high
    rate = covered / reps
    # 95% nominal; 400 replications give a binomial SD of ~1.1 points
    assert 0.92 <= rate <= 0.985, rate


def test_seed_share_tells_training_noise_from_eval_size():
    rng = np.random.default_rng(7)
    noisy_training = crossed_mean(rng.normal(0, 0.2, (4, 1))[:, :1] + np.zeros((4, 500)))
    assert noisy_training.seed_share > 0.99
    small_eval = crossed_mean(np.tile(rng.integers(0, 2, 20).astype(float), (4, 1)))
    assert small_eval.item_share > 0.99


def test_linear_contrast_recovers_a_slope():
    rng = np.random.default_rng(3)
    lengths = [2, 4, 6]
    ests = []
    for length in lengths:
        a, b = _simulate(rng, 5, 2000, 0.02 * length, seed_sd=0.01)
        ests.append(paired_difference(a, b))
    slope = linear_contrast(ests, lengths)
    assert slope.low <= 0.02 <= slope.high
    assert slope.direction == "increasing"


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.2, math.nan])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1])


def test_half_width_at_the_measured_design_is_the_measured_half_width():
    rng = np.random.default_rng(11)
    a, b = _simulate(rng, 4, 300, 0.05, seed_sd=0.05)
    est = paired_difference(a, b)
    assert est.half_width_at(est.num_seeds) == pytest.approx(est.half_width, rel=1e-9)
    # more seeds narrow it, never below the item part alone
    assert est.half_width_at(16) < est.half_width
    floor = 1.96 * math.sqrt(est.var_item / est.num_items)
    assert est.half_width_at(10_000) >= floor * 0.99


def test_seeds_for_a_target_half_width():
    rng = np.random.default_rng(12)
    a, b = _simulate(rng, 3, 500, 0.0, seed_sd=0.06)
    est = paired_difference(a, b)
    need = est.seeds_for(0.05)
    assert need is not None and est.half_width_at(need) <= 0.05
    assert need == 2 or est.half_width_at(need - 1) > 0.05  # the fewest
    # a target the items alone exceed cannot be met with seeds
    only_items = crossed_mean(np.tile(rng.integers(0, 2, 20).astype(float), (3, 1)))
    assert only_items.seeds_for(0.01) is None


def test_interpolate_items_between_evaluations():
    xs, rows = [0.0, 100.0, 300.0], [[0, 0], [0, 1], [1, 1]]
    assert interpolate_items(xs, rows, 200.0).tolist() == [0.5, 1.0]
    assert interpolate_items(xs, rows, 100.0).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="outside"):
        interpolate_items(xs, rows, 301.0)
