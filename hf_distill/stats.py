"""Paired statistics for "was distillation worth it?": two models scored on the same examples.

- [`mcnemar_exact`]: McNemar's exact test for accuracy-like metrics, from the examples where exactly one of the two
  models is right (an exact two-sided binomial test at 1/2, in pure Python: no scipy needed).
- [`paired_bootstrap`]: a percentile interval (and a two-sided p-value) for the difference of any metric that is a
  function of per-example sufficient statistics summed over examples (F1, perplexity, MSE, ...), resampling the
  examples with a seeded generator; several seeds' models are averaged within each resample.
- [`expected_calibration_error`]: ECE with equal-width confidence bins (15 by default, as Guo et al. 2017).
- [`verdict`]: the sentence the metrics file, the log and the model card carry, which never claims more than the test.

With 2,000 test examples one accuracy has a standard error near one point: a difference between two models means
little unless the examples they disagree on lean one way, which is what these tests ask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "ALPHA",
    "CALIBRATION_BINS",
    "binomial_two_sided_p",
    "expected_calibration_error",
    "mcnemar_exact",
    "paired_bootstrap",
    "verdict",
]

ALPHA = 0.05
CALIBRATION_BINS = 15


def binomial_two_sided_p(successes: int, trials: int) -> float:
    """Exact two-sided p-value of `successes` in `trials` fair coin flips (H0: p = 1/2).

    The probability of every outcome at most as likely as the one observed; for p = 1/2 the distribution is
    symmetric, so this is `min(1, 2 * P(X <= min(k, n - k)))`, what `scipy.stats.binomtest(k, n, 0.5).pvalue` gives.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if trials == 0:
        return 1.0
    tail = min(successes, trials - successes)
    # Exact integers: log-space or floats lose the small tails that decide significance.
    mass = sum(math.comb(trials, i) for i in range(tail + 1))
    return min(1.0, 2 * mass / 2**trials)


def mcnemar_exact(only_a_right: int, only_b_right: int) -> float:
    """McNemar's exact test: the two-sided p-value that two models are equally accurate, given the number of examples
    where only model A is right (`b`) and only model B is right (`c`): under H0 each such example is A's with
    probability 1/2, so `b ~ Binomial(b + c, 1/2)`. Examples where both are right or both wrong say nothing."""
    return binomial_two_sided_p(int(only_a_right), int(only_a_right) + int(only_b_right))


def paired_bootstrap(
    stats_a: Sequence[np.ndarray] | np.ndarray,
    stats_b: Sequence[np.ndarray] | np.ndarray,
    combine: Callable[[np.ndarray], float],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """A paired bootstrap of the difference `metric(A) - metric(B)` over the same examples.

    Args:
        stats_a: per-example sufficient statistics of A, an `(n_examples, k)` array (or one per training seed, all
            over the same examples), whose column sums `combine` turns into the metric: e.g. `(squared error, 1)` for
            MSE, `(true positives, predicted, gold)` for entity F1, `(nll sum, tokens)` for perplexity.
        stats_b: the same of B, over the same examples.
        combine: column sums `(k,)` -> metric value.
        resamples: bootstrap resamples of the examples (the same indices for A and B: the pairing).
        seed: the generator's seed (the interval is reproducible).
        confidence: the interval's coverage (percentile interval).

    Returns:
        `{"difference", "low", "high", "p_value"}`: the observed difference (mean over seeds), the percentile interval
        and a two-sided bootstrap p-value (twice the smaller share of resampled differences on either side of 0,
        counted as `(count + 1) / (resamples + 1)`).
    """
    runs_a, runs_b = _runs(stats_a), _runs(stats_b)
    if len(runs_a) != len(runs_b) or any(a.shape != b.shape for a, b in zip(runs_a, runs_b)):
        raise ValueError("paired_bootstrap needs the same examples (and number of seeds) for both models")
    n = runs_a[0].shape[0]
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one example")

    def difference(rows: np.ndarray | slice) -> float:
        return float(np.mean([combine(a[rows].sum(0)) - combine(b[rows].sum(0)) for a, b in zip(runs_a, runs_b)]))

    observed = difference(slice(None))
    generator = np.random.default_rng(seed)
    draws = np.array([difference(generator.integers(0, n, n)) for _ in range(resamples)])
    # A resample with nothing to score (e.g. no masked token) has no metric: it is left out.
    draws = draws[np.isfinite(draws)]
    resamples = len(draws)
    if resamples == 0 or not math.isfinite(observed):
        return {"difference": observed, "low": float("nan"), "high": float("nan"), "p_value": 1.0}
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    # (count + 1) / (resamples + 1): a bootstrap never gives p = 0, only "below 1 / resamples".
    p_value = min(1.0, 2 * (min(np.sum(draws <= 0), np.sum(draws >= 0)) + 1) / (resamples + 1))
    return {"difference": observed, "low": float(low), "high": float(high), "p_value": float(p_value)}


def _runs(stats) -> list[np.ndarray]:
    runs = [stats] if isinstance(stats, np.ndarray) else list(stats)
    return [np.asarray(run, dtype=np.float64).reshape(len(run), -1) for run in runs]


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error (Naeini et al. 2015, Guo et al. 2017) with `bins` equal-width confidence bins:
    `sum_b (n_b / n) |accuracy_b - mean confidence_b|`. Bins are `(i/B, (i+1)/B]` (the first also holds 0).

    Args:
        confidence: the probability each prediction gave its predicted class.
        correct: whether each prediction was right.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D of one length, got {confidence.shape}, {correct.shape}")
    if confidence.size == 0:
        return float("nan")
    # Right-closed bins: a confidence of exactly i/B falls in bin i-1, as the usual implementations count it.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def verdict(
    difference: float,
    p_value: float,
    percent: bool = True,
    higher_is_better: bool = True,
    alpha: float = ALPHA,
    unit: str | None = None,
    condition: str | None = None,
    seeds: int | None = None,
) -> tuple[str, str]:
    """The outcome and the sentence for a paired difference `distilled - baseline` and its p-value.

    "distillation helped (+1.05 points, p = 0.020)" when the difference is significant at `alpha` and in the better
    direction, "distillation hurt (...)" when significant the other way, and "no detectable difference (...)"
    otherwise, whatever the size of the difference: a difference the test cannot tell from noise is not called a gain.

    Args:
        difference: distilled minus baseline, in the metric's own scale (a fraction for percent metrics).
        percent: the metric is a fraction shown in points (`difference * 100`).
        higher_is_better: `False` for perplexity, MSE: a negative difference is then the gain.
        unit: the name of a non-percent metric, shown after the number (e.g. "perplexity").
        condition: what the two runs had in common, said after the outcome (e.g. "at the same number of training
            steps (376 each)"): a gain means little without its budget.
        seeds: how many training seeds the difference averages, said with the p-value ("1 seed", "mean of 3 seeds").

    Returns:
        `(outcome, sentence)`, the outcome one of `"helped"`, `"no_difference"`, `"hurt"`.
    """
    where = f" {condition}" if condition else ""
    count = ""
    if seeds is not None:
        count = f", {seeds} seed" if seeds == 1 else f", mean of {seeds} seeds"
    if not math.isfinite(difference) or not math.isfinite(p_value):
        return "no_difference", f"no detectable difference{where} (difference {difference}, p = {p_value}{count})"
    amount = f"{difference * 100:+.2f} points" if percent else f"{difference:+.4g}{f' {unit}' if unit else ''}"
    figures = f"({amount}, p = {_p(p_value)}{count})"
    better = difference > 0 if higher_is_better else difference < 0
    if p_value < alpha and difference != 0:
        if better:
            return "helped", f"distillation helped{where} {figures}"
        return "hurt", f"distillation hurt{where} {figures}"
    return "no_difference", f"no detectable difference{where} {figures}"


def _p(p_value: float) -> str:
    return f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"
