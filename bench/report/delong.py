"""DeLong's test for two AUROCs on the same test images (DeLong, DeLong & Clarke-Pearson
1988), computed with the fast midrank algorithm of Sun & Xu (2014), and its extension to
the macro one-vs-rest AUROC and to several training seeds.

An AUROC is a Mann-Whitney statistic: each positive image i has a placement value
V10_i (the share of negatives it outranks, ties counting half), each negative j has
V01_j (the share of positives that outrank it), and the AUROC is the mean of either.
DeLong's variance is S10 / m + S01 / n (S: the sample variances of the placements). Here
every test image gets an *influence* psi: (V10_i - AUC) / sqrt(m (m - 1)) for a positive,
(V01_j - AUC) / sqrt(n (n - 1)) for a negative, so that sum(psi^2) is exactly DeLong's
variance and sum(psi_A psi_B) DeLong's covariance of two scorers. Anything linear in
AUROCs then has the influence of the same linear combination:
- a macro one-vs-rest AUROC (multiclass: the mean over classes, the scores normalised as
  scikit-learn's ``roc_auc_score(multi_class="ovr")``; multilabel: the mean over labels)
  has the mean of the classes' influences, their covariances included;
- a difference A - B on the same images has psi_A - psi_B;
- the mean difference over S seeds (each seed's models scored on the same test images)
  has the mean over seeds of the per-seed psi_A - psi_B.
The interval is the normal one, difference ± 1.96 sqrt(sum psi^2), the p-value two-sided.
It measures what another draw of test images would change, the trained models held
fixed; the seed-paired t interval (bench/report/stats.py) measures what retraining
changes, the test images held fixed.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def placements(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUROC, V10 of the positives, V01 of the negatives) by midranks (Sun & Xu 2014)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    x, y = scores[positive], scores[~positive]
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError(f"an AUROC needs both classes ({m} positives, {n} negatives)")
    ranks_all = stats.rankdata(np.concatenate([x, y]))  # midranks: ties count half
    v10 = (ranks_all[:m] - stats.rankdata(x)) / n
    v01 = 1.0 - (ranks_all[m:] - stats.rankdata(y)) / m
    return float(v10.mean()), v10, v01


def auroc_influence(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """(AUROC, per-image influence psi) with sum(psi^2) = DeLong's variance."""
    positive = np.asarray(positive, bool)
    auc, v10, v01 = placements(scores, positive)
    m, n = len(v10), len(v01)
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs 2 or more of each class ({m}, {n})")
    psi = np.empty(len(positive))
    psi[positive] = (v10 - auc) / np.sqrt(m * (m - 1))
    psi[~positive] = (v01 - auc) / np.sqrt(n * (n - 1))
    return auc, psi


def macro_auroc_influence(labels: np.ndarray, probs: np.ndarray, task: str):
    """(AUROC as bench.metrics.classification reports it, per-image influence)."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    if task == "binary":
        return auroc_influence(probs[:, 1], labels == 1)
    if task == "multilabel":
        columns = [(probs[:, k], labels[:, k] == 1) for k in range(probs.shape[1])]
    else:
        normalised = probs / probs.sum(axis=1, keepdims=True)
        columns = [(normalised[:, k], labels == k) for k in range(probs.shape[1])]
    parts = [auroc_influence(s, pos) for s, pos in columns]
    return float(np.mean([a for a, _ in parts])), np.mean([psi for _, psi in parts], axis=0)


def delong_difference(
    labels: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], task: str, level: float = 0.95
) -> dict[str, float]:
    """AUROC(A) - AUROC(B) averaged over `pairs` of (probs A, probs B), one pair per seed,
    all on the same test images with `labels`: the mean difference, DeLong's standard
    error of it, the `level` interval and the two-sided p-value."""
    if not pairs:
        raise ValueError("DeLong's test needs at least one pair of predictions")
    diffs, psis = [], []
    for probs_a, probs_b in pairs:
        auc_a, psi_a = macro_auroc_influence(labels, probs_a, task)
        auc_b, psi_b = macro_auroc_influence(labels, probs_b, task)
        diffs.append(auc_a - auc_b)
        psis.append(psi_a - psi_b)
    difference = float(np.mean(diffs))
    se = float(np.sqrt(np.sum(np.mean(psis, axis=0) ** 2)))
    z = stats.norm.ppf(0.5 + level / 2)
    if se > 0:
        p = float(2 * stats.norm.sf(abs(difference) / se))
    else:  # identical rankings on every seed: no difference and no spread
        p = 1.0 if difference == 0 else 0.0
    return {
        "difference": difference,
        "se": se,
        "ci_low": difference - z * se,
        "ci_high": difference + z * se,
        "p_value": p,
        "seeds": len(pairs),
    }
