import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from bench.api.registry import METRICS
from bench.metrics.classification import compute_all, per_class
from bench.report import stats


def _probs(rng, n, k):
    logits = rng.normal(size=(n, k))
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.fixture
def multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = _probs(rng, 200, 4)
    p[np.arange(200), y] += 0.3  # informative but imperfect
    return y, p / p.sum(1, keepdims=True)


def test_single_label_metrics_match_sklearn(multiclass):
    y, p = multiclass
    pred = p.argmax(1)
    m = compute_all(y, p, "ordinal")
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["kappa_quadratic"] == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic")
    )
    pc = per_class(y, p, "ordinal")
    assert pc["auroc"][2] == pytest.approx(skm.roc_auc_score(y == 2, p[:, 2]))
    assert 0.5 < m["auroc"] < 1.0


def test_binary_auroc_uses_positive_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    p = _probs(rng, 100, 2)
    assert METRICS.get("auroc")(y, p, "binary") == pytest.approx(skm.roc_auc_score(y, p[:, 1]))


def test_multilabel_conventions():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (150, 5))
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, (150, 5)), 0, 1)
    m = compute_all(y, p, "multilabel")
    per_label = [skm.roc_auc_score(y[:, k], p[:, k]) for k in range(5)]
    assert m["auroc"] == pytest.approx(np.mean(per_label))
    assert per_class(y, p, "multilabel")["auroc"] == pytest.approx(per_label)
    assert m["accuracy"] == pytest.approx(((p >= 0.5) == y).mean())
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p >= 0.5, average="macro"))
    assert "kappa_quadratic" not in m


def test_ece_matches_calibration_curve():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p1 = np.clip(0.5 + (y - 0.5) * rng.uniform(0, 0.9, 500), 0.01, 0.99)
    p = np.stack([1 - p1, p1], 1)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15)
    edges = np.linspace(0, 1, 16)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=15)
    expected = np.sum(counts[counts > 0] / len(y) * np.abs(prob_true - prob_pred))
    assert METRICS.get("ece")(y, p, "binary") == pytest.approx(expected)
    assert not METRICS.get("ece").higher_is_better


def test_undefined_metric_is_nan_with_warning():
    y = np.zeros(10, int)
    p = np.tile([0.7, 0.3], (10, 1))
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(METRICS.get("auroc")(y, p, "binary"))


def test_paired_tests_match_scipy():
    a = np.array([0.81, 0.84, 0.80, 0.86, 0.83])
    b = np.array([0.78, 0.80, 0.79, 0.81, 0.80])
    assert stats.paired_ttest(a, b) == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert stats.wilcoxon(a, b) == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert np.isnan(stats.paired_ttest(a, a))
    with pytest.raises(ValueError):
        stats.paired_ttest(a, b[:3])


def test_mcnemar_is_exact_binomial_on_discordant_pairs():
    y = np.array([1] * 30)
    pred_a = np.array([1] * 20 + [0] * 10)
    pred_b = np.array([1] * 12 + [0] * 8 + [1] * 2 + [0] * 8)  # a-only right: 8, b-only right: 2
    assert stats.mcnemar(y, pred_a, pred_b) == pytest.approx(sps.binomtest(8, 10, 0.5).pvalue)
    assert stats.mcnemar(y, pred_a, pred_a) == 1.0


def test_holm_adjustment():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    adj = stats.holm(p)
    # sorted: 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> running max
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adj[4])


def test_paired_bootstrap_detects_a_real_difference():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    good = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], 1)
    noisy = _probs(rng, 300, 2)

    def acc(labels, probs):
        return (probs.argmax(1) == labels).mean()

    r = stats.paired_bootstrap(y, good, noisy, acc, n_resamples=300)
    assert r["difference"] == pytest.approx(acc(y, good) - acc(y, noisy))
    assert r["ci_low"] > 0 and r["p_value"] < 0.01
    same = stats.paired_bootstrap(y, noisy, noisy, acc, n_resamples=50)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_marks():
    assert [stats.significance_mark(p) for p in (0.005, 0.03, 0.07, 0.2, np.nan)] == [
        "***",
        "**",
        "*",
        "",
        "",
    ]


def test_cluster_bootstrap_contains_the_mean_widens_with_fewer_groups_and_resamples_groups():
    rng = np.random.default_rng(0)
    image_means = rng.normal(25, 2, size=60)  # 60 source images, 8 patches each
    values = np.repeat(image_means, 8) + rng.normal(0, 0.5, size=480)
    groups = np.repeat([f"img{i}" for i in range(60)], 8)
    lo, hi = stats.cluster_bootstrap_ci(values, groups)
    assert lo < values.mean() < hi
    few = stats.cluster_bootstrap_ci(values[:80], groups[:80])  # 10 images
    assert few[1] - few[0] > 1.5 * (hi - lo)
    # patches of one image move together: treating each patch as its own image understates the spread
    per_patch = stats.cluster_bootstrap_ci(values, np.arange(480))
    assert per_patch[1] - per_patch[0] < 0.6 * (hi - lo)
    assert stats.cluster_bootstrap_ci([1.0, 3.0], ["a", "a"]) == [2.0, 2.0]
    assert stats.cluster_bootstrap_ci(values, groups) == [lo, hi]  # seeded
