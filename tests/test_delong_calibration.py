"""DeLong's test against values computed independently (the Mann-Whitney AUROC, DeLong's
variance from its pairwise definition, a bootstrap), the seed-paired t interval against
scipy, and temperature scaling (it recovers a known temperature; binary AUROC and the
argmax do not move)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from bench.metrics.calibration import fit_temperature, logits_of, scaled
from bench.metrics.classification import METRICS
from bench.report.delong import delong_difference, macro_auroc_influence, placements
from bench.report.stats import paired_t_interval


def naive_delong_cov(x_a, y_a, x_b, y_b):
    """DeLong 1988 from its definition: placements by all m x n comparisons (ties count
    half), S10 and S01 as sample (co)variances; returns the 2 x 2 covariance of (A, B)."""

    def psi(x, y):
        return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])

    v10 = np.stack([psi(x_a, y_a).mean(axis=1), psi(x_b, y_b).mean(axis=1)])
    v01 = np.stack([psi(x_a, y_a).mean(axis=0), psi(x_b, y_b).mean(axis=0)])
    return np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


def binary_scores(n, rng, separation=1.0, ties=False):
    labels = rng.integers(0, 2, n)
    a = labels * separation + rng.normal(size=n)
    b = labels * separation * 0.6 + rng.normal(size=n) + 0.3 * a
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return labels, a, b


def as_probs(score):
    p1 = 1 / (1 + np.exp(-score))
    return np.stack([1 - p1, p1], axis=1)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_from_midranks_is_the_mann_whitney_statistic(ties):
    rng = np.random.default_rng(0)
    labels, a, _ = binary_scores(200, rng, ties=ties)
    auc, v10, v01 = placements(a, labels == 1)
    u = stats.mannwhitneyu(a[labels == 1], a[labels == 0]).statistic
    assert auc == pytest.approx(u / ((labels == 1).sum() * (labels == 0).sum()), abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert v01.mean() == pytest.approx(auc, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_variance_equals_its_pairwise_definition(ties):
    rng = np.random.default_rng(1)
    labels, a, b = binary_scores(150, rng, ties=ties)
    pos = labels == 1
    cov = naive_delong_cov(a[pos], a[~pos], b[pos], b[~pos])
    want_se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    out = delong_difference(labels, [(as_probs(a), as_probs(b))], "binary")
    assert out["difference"] == pytest.approx(
        roc_auc_score(labels, a) - roc_auc_score(labels, b), abs=1e-12
    )
    assert out["se"] == pytest.approx(want_se, rel=1e-9)
    z = out["difference"] / want_se
    assert out["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert out["ci_low"] == pytest.approx(out["difference"] - 1.959964 * want_se, rel=1e-6)


def bootstrap_se(labels, probs_a, probs_b, task, rng, n_boot=800):
    auroc = METRICS.get("auroc")
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) < probs_a.shape[1] and task != "binary":
            continue
        diffs.append(
            auroc(labels[idx], probs_a[idx], task) - auroc(labels[idx], probs_b[idx], task)
        )
    return np.std(diffs, ddof=1)


def test_binary_standard_error_agrees_with_a_bootstrap():
    rng = np.random.default_rng(2)
    labels, a, b = binary_scores(300, rng)
    out = delong_difference(labels, [(as_probs(a), as_probs(b))], "binary")
    assert out["se"] == pytest.approx(
        bootstrap_se(labels, as_probs(a), as_probs(b), "binary", rng), rel=0.12
    )


def multiclass_probs(labels, rng, strength, k=4):
    logits = rng.normal(size=(len(labels), k))
    logits[np.arange(len(labels)), labels] += strength
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_macro_ovr_auroc_and_its_standard_error_against_sklearn_and_a_bootstrap():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 400)
    pa, pb = multiclass_probs(labels, rng, 1.5), multiclass_probs(labels, rng, 1.0)
    auc, psi = macro_auroc_influence(labels, pa, "multiclass")
    assert auc == pytest.approx(roc_auc_score(labels, pa, multi_class="ovr"), abs=1e-12)
    assert psi.sum() == pytest.approx(0, abs=1e-9)  # influences of a U-statistic centre at 0
    out = delong_difference(labels, [(pa, pb)], "multiclass")
    assert out["difference"] > 0 and out["p_value"] < 0.05
    assert out["se"] == pytest.approx(bootstrap_se(labels, pa, pb, "multiclass", rng), rel=0.12)


def test_seeds_combine_on_the_same_images_not_as_independent_samples():
    rng = np.random.default_rng(4)
    labels, a, b = binary_scores(200, rng)
    one = delong_difference(labels, [(as_probs(a), as_probs(b))], "binary")
    twice = delong_difference(labels, [(as_probs(a), as_probs(b))] * 2, "binary")
    # the same predictions twice: the same test images, so no more evidence
    assert twice["se"] == pytest.approx(one["se"], rel=1e-12)
    assert twice["difference"] == pytest.approx(one["difference"], rel=1e-12)
    # two different seeds: the mean difference, and a standard error no larger than the
    # mean of theirs (averaging models can only reduce the test-set spread of the mean)
    _, a2, b2 = binary_scores(200, np.random.default_rng(5))
    a2, b2 = a + 0.5 * a2, b + 0.5 * b2
    second = delong_difference(labels, [(as_probs(a2), as_probs(b2))], "binary")
    both = delong_difference(
        labels, [(as_probs(a), as_probs(b)), (as_probs(a2), as_probs(b2))], "binary"
    )
    assert both["difference"] == pytest.approx((one["difference"] + second["difference"]) / 2)
    assert both["se"] <= (one["se"] + second["se"]) / 2 + 1e-12


def test_identical_predictions_have_no_difference():
    rng = np.random.default_rng(6)
    labels, a, _ = binary_scores(100, rng)
    out = delong_difference(labels, [(as_probs(a), as_probs(a))], "binary")
    assert out["difference"] == 0 and out["se"] == 0 and out["p_value"] == 1.0


def test_delong_refuses_a_split_with_one_positive():
    labels = np.array([1] + [0] * 20)
    scores = as_probs(np.linspace(0, 1, 21))
    with pytest.raises(ValueError, match="2 or more of each class"):
        delong_difference(labels, [(scores, scores)], "binary")


def test_paired_t_interval_is_scipys():
    a, b = np.array([0.83, 0.85, 0.81, 0.86]), np.array([0.86, 0.88, 0.85, 0.87])
    out = paired_t_interval(a, b)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert out["p_value"] == pytest.approx(res.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert np.isnan(paired_t_interval(a[:1], b[:1])["ci_low"])


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(7)
    z = rng.normal(scale=3.0, size=(20000, 3))
    true_t = 2.5
    p = np.exp(z / true_t) / np.exp(z / true_t).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    t, _ = fit_temperature(z, labels, "multiclass")
    assert t == pytest.approx(true_t, rel=0.05)


def test_scaling_keeps_the_argmax_and_a_binary_auroc_and_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(8)
    labels, a, _ = binary_scores(2000, rng, separation=1.0)
    overconfident = as_probs(4 * a)  # 4x too sharp
    val, test = slice(0, 1000), slice(1000, None)
    logits = logits_of(overconfident, "binary")
    t, _ = fit_temperature(logits[val], labels[val], "binary")
    after = scaled(logits[test], t, "binary")
    auroc, ece = METRICS.get("auroc"), METRICS.get("ece")
    assert t > 2
    assert (after.argmax(1) == overconfident[test].argmax(1)).all()
    assert auroc(labels[test], after, "binary") == pytest.approx(
        auroc(labels[test], overconfident[test], "binary"), abs=1e-12
    )
    assert ece(labels[test], after, "binary") < 0.5 * ece(
        labels[test], overconfident[test], "binary"
    )
