"""Paired statistics between two methods, and the significance marks of the papers.

Paired tests run on matched units (the same seeds, folds or classes for both methods);
bootstrap and McNemar run on per-sample predictions of the same test images.
Marks: ``***`` p < 0.01, ``**`` p < 0.05, ``*`` p < 0.1 (in Markdown cells escaped: see report.cells.md_mark).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats


def paired_ttest(a, b) -> float:
    """Two-sided paired t-test p-value (scipy ttest_rel); NaN when undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) != len(b):
        raise ValueError(f"paired test needs matched units, got {len(a)} and {len(b)}")
    if len(a) < 2 or np.all(a == b):
        return float("nan")
    with warnings.catch_warnings():  # constant differences: scipy warns and gives its own value
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(a, b).pvalue)


def paired_t_interval(a, b, level: float = 0.95) -> dict[str, float]:
    """The mean of a - b over matched units with its t interval (n - 1 degrees of
    freedom) and the paired t-test's p-value; NaN interval and p below 2 units."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean, n = float(d.mean()) if len(d) else float("nan"), len(d)
    if n < 2:
        return {"difference": mean, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n": n}
    half = stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return {
        "difference": mean,
        "ci_low": float(mean - half),
        "ci_high": float(mean + half),
        "p_value": paired_ttest(a, b),
        "n": n,
    }


def wilcoxon(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN when all differences are zero."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 1 or np.all(d == 0):
        return float("nan")
    return float(stats.wilcoxon(d).pvalue)


def paired_bootstrap(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap over test images of metric(a) - metric(b): difference, CI, two-sided p."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    observed = metric(labels, probs_a) - metric(labels, probs_b)
    diffs = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        diffs[i] = metric(labels[idx], probs_a[idx]) - metric(labels[idx], probs_b[idx])
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1 - confidence) / 2
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return {
        "difference": float(observed),
        "ci_low": float(np.quantile(diffs, alpha)),
        "ci_high": float(np.quantile(diffs, 1 - alpha)),
        "p_value": float(min(1.0, p)),
    }


def mcnemar(labels, pred_a, pred_b) -> float:
    """Exact McNemar p-value: a two-sided binomial test on the discordant pairs."""
    correct_a = np.asarray(pred_a) == np.asarray(labels)
    correct_b = np.asarray(pred_b) == np.asarray(labels)
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid])]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


MIN_SEEDS_FOR_TEST = 3  # a paired test on 2 seeds (1 degree of freedom) has no power worth a mark


MARK_LEVELS = ((0.01, "***"), (0.05, "**"), (0.1, "*"))  # (p below, mark), strictest first


def significance_mark(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return next((mark for level, mark in MARK_LEVELS if p < level), "")


def cluster_bootstrap_ci(
    values, groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """A percentile bootstrap interval of the mean of `values` that resamples whole
    `groups` (e.g. the source images of restoration patches: patches of one image are not
    independent, so resampling patches would understate the spread). [lo, hi]; both equal
    the mean for a single group."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    names, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(names))
    counts = np.bincount(index, minlength=len(names)).astype(float)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(len(names), size=(n_boot, len(names)))
    means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]
