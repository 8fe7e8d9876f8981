"""The paired statistics of `--baseline` (hf_distill/stats.py), pinned against cases computed by hand."""

import math

import numpy as np
import pytest

from hf_distill.stats import (
    binomial_two_sided_p,
    expected_calibration_error,
    mcnemar_exact,
    paired_bootstrap,
    verdict,
)
from hf_distill.tasks.base import mean_combiner


@pytest.mark.parametrize(
    "only_a, only_b, expected",
    [
        (3, 0, 2 / 2**3),  # all three discordant pairs one way: 2 * (1/2)^3
        (0, 10, 2 / 2**10),
        (10, 10, 1.0),
        (0, 0, 1.0),  # no disagreement: nothing to test
        # 2 * (C(14,0) + ... + C(14,5)) / 2^14 = 2 * 3473 / 16384
        (5, 9, 2 * 3473 / 16384),
        (9, 5, 2 * 3473 / 16384),
        # A demo run's paired test (benchmarks/results/history/demo_equal_epochs.json): 48 vs 27, p = 0.020
        (48, 27, 2 * sum(math.comb(75, i) for i in range(28)) / 2**75),
    ],
)
def test_mcnemar_exact_hand_computed(only_a, only_b, expected):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest():
    from scipy.stats import binomtest

    for k, n in [(48, 75), (57, 101), (43, 80), (1, 2), (7, 30)]:
        assert binomial_two_sided_p(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)
    assert round(mcnemar_exact(48, 27), 3) == 0.020


def test_binomial_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes <= trials"):
        binomial_two_sided_p(5, 3)


def _mean_stats(values):
    values = np.asarray(values, dtype=np.float64)
    return np.stack([values, np.ones_like(values)], axis=1)


def test_paired_bootstrap_two_examples_hand_computed():
    """Per-example differences 0 and 2: a resample's mean difference is 0, 1 or 2 with probabilities 1/4, 1/2, 1/4,
    so the 95% interval is [0, 2] and P(difference <= 0) = 1/4, a two-sided p of about 1/2."""
    a, b = _mean_stats([1.0, 3.0]), _mean_stats([1.0, 1.0])
    result = paired_bootstrap(a, b, mean_combiner, resamples=4000, seed=0)
    assert result["difference"] == pytest.approx(1.0)
    assert result["low"] == 0.0 and result["high"] == 2.0
    assert result["p_value"] == pytest.approx(0.5, abs=0.05)


def test_paired_bootstrap_constant_gain_and_no_difference():
    a, b = _mean_stats(np.ones(50)), _mean_stats(np.zeros(50))
    result = paired_bootstrap(a, b, mean_combiner, resamples=999, seed=3)
    assert result["low"] == result["high"] == result["difference"] == 1.0
    assert result["p_value"] == pytest.approx(2 / 1000)  # (0 + 1) / (999 + 1), twice: never 0
    same = paired_bootstrap(a, a, mean_combiner, resamples=999, seed=3)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0


def test_paired_bootstrap_is_seeded_and_pairs_examples():
    rng = np.random.default_rng(0)
    a, b = _mean_stats(rng.normal(size=200)), _mean_stats(rng.normal(size=200))
    first = paired_bootstrap(a, b, mean_combiner, resamples=300, seed=7)
    assert first == paired_bootstrap(a, b, mean_combiner, resamples=300, seed=7)
    assert first != paired_bootstrap(a, b, mean_combiner, resamples=300, seed=8)
    # Paired: a shared per-example offset (a hard example is hard for both) cancels out of the interval.
    offset = _mean_stats(rng.normal(scale=100, size=200)) * np.array([1.0, 0.0])
    shifted = paired_bootstrap(a + offset, b + offset, mean_combiner, resamples=300, seed=7)
    assert shifted["low"] == pytest.approx(first["low"]) and shifted["high"] == pytest.approx(first["high"])


def test_paired_bootstrap_averages_seeds_and_combines_sums():
    """Several seeds' models: the observed difference is the mean over seeds; F1-like metrics are computed from the
    summed statistics of the resample, not averaged per example."""

    def f1(sums):
        true_positives, predicted, gold = sums
        return 2 * true_positives / (predicted + gold)

    a1 = np.array([[1, 1, 1], [0, 1, 1]], dtype=float)  # F1 = 2*1/(2+2) = 0.5
    a2 = np.array([[1, 1, 1], [1, 1, 1]], dtype=float)  # F1 = 1
    b = np.array([[0, 1, 1], [0, 0, 1]], dtype=float)  # F1 = 0
    result = paired_bootstrap([a1, a2], [b, b], f1, resamples=50, seed=0)
    assert result["difference"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([a1, a2], [b], f1)


def test_expected_calibration_error_hand_computed():
    # 0.9 falls in bin 13 (0.8667, 0.9333]: accuracy 1/2, confidence 0.9, weight 1/2 -> 0.2;
    # 0.6 falls in bin 8 (0.5333, 0.6]: accuracy 1, confidence 0.6, weight 1/2 -> 0.2.
    assert expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True]) == pytest.approx(0.4)
    # Perfectly calibrated within each bin.
    assert expected_calibration_error([0.5, 0.5, 1.0], [True, False, True]) == pytest.approx(0.0)
    # Bin edges: 1.0 is in the last bin, 0.0 in the first; 2 bins: 0.5 belongs to (0, 0.5].
    assert expected_calibration_error([0.0, 1.0], [False, True]) == pytest.approx(0.0)
    assert expected_calibration_error([0.5, 0.75], [True, False], bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.75)


@pytest.mark.parametrize(
    "difference, p_value, kwargs, outcome, sentence",
    [
        (0.0105, 0.0203, {}, "helped", "distillation helped (+1.05 points, p = 0.020)"),
        (0.0030, 0.576, {}, "no_difference", "no detectable difference (+0.30 points, p = 0.576)"),
        (-0.0200, 0.004, {}, "hurt", "distillation hurt (-2.00 points, p = 0.004)"),
        # A large difference that the test cannot tell from noise is not called a gain.
        (0.05, 0.06, {}, "no_difference", "no detectable difference (+5.00 points, p = 0.060)"),
        # Lower is better (perplexity, MSE): a drop is the gain.
        (
            -1.5,
            0.01,
            {"percent": False, "higher_is_better": False, "unit": "perplexity"},
            "helped",
            "distillation helped (-1.5 perplexity, p = 0.010)",
        ),
        (
            0.25,
            0.0001,
            {"percent": False, "higher_is_better": False, "unit": "MSE"},
            "hurt",
            "distillation hurt (+0.25 MSE, p = 1.0e-04)",
        ),
    ],
)
def test_verdict_wording(difference, p_value, kwargs, outcome, sentence):
    assert verdict(difference, p_value, **kwargs) == (outcome, sentence)
