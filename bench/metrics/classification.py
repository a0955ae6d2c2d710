"""Classification metrics on (labels, class probabilities), registered by name.

Conventions (DESIGN.md section 4): AUROC is the positive-class score for binary tasks,
macro one-vs-rest for multiclass/ordinal, and the mean of per-label AUROCs for
multilabel (the ChestX-ray14 convention); multilabel accuracy is the mean per-label
accuracy at threshold 0.5 (the MedMNIST convention); quadratic kappa on argmax
predictions; ECE is top-label, 15 equal-width bins. An undefined metric (e.g. AUROC
with one class present) is NaN with a warning, never a crash and never a silent 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from bench.api.registry import METRICS
from bench.metrics.metric import ALL_TASKS, SINGLE_LABEL, metric, register_metric

__all__ = ["ALL_TASKS", "METRICS", "SINGLE_LABEL", "compute_all", "per_class", "predicted_share"]


def predictions(probs: np.ndarray, task: str) -> np.ndarray:
    return (probs >= 0.5).astype(int) if task == "multilabel" else probs.argmax(axis=1)


@metric("accuracy", "fraction correct (multilabel: mean per-label accuracy at 0.5)", headline=True)
def accuracy(y, p, task):
    return float((predictions(p, task) == y).mean())


@metric("balanced_accuracy", "mean per-class recall", tasks=SINGLE_LABEL)
def balanced_accuracy(y, p, task):
    return skm.balanced_accuracy_score(y, predictions(p, task))


@metric(
    "auroc",
    "AUROC: binary positive-class, macro one-vs-rest, multilabel mean of per-label",
    headline=True,
)
def auroc(y, p, task):
    if task == "binary":
        return skm.roc_auc_score(y, p[:, 1])
    if task == "multilabel":
        return float(np.mean(per_label_auroc(y, p)))
    if len(np.unique(y)) < p.shape[1]:
        raise ValueError(f"only {len(np.unique(y))} of {p.shape[1]} classes present")
    return skm.roc_auc_score(
        y, p / p.sum(axis=1, keepdims=True), multi_class="ovr", average="macro"
    )


def _macro(score_fn):
    return lambda y, p, task: score_fn(y, predictions(p, task), average="macro", zero_division=0)


metric("f1_macro", "macro F1")(_macro(skm.f1_score))
metric("precision_macro", "macro precision (0 for a never-predicted class)")(
    _macro(skm.precision_score)
)
metric("recall_macro", "macro recall (sensitivity)")(_macro(skm.recall_score))


def per_label_auroc(y: np.ndarray, p: np.ndarray) -> list[float]:
    """One-vs-rest AUROC per class/label; NaN (with a warning) where undefined."""
    onehot = y if y.ndim == 2 else np.eye(p.shape[1], dtype=int)[y]
    out = []
    for k in range(p.shape[1]):
        if onehot[:, k].min() == onehot[:, k].max():
            warnings.warn(
                f"AUROC of class {k} is undefined (only one value present); NaN", stacklevel=2
            )
            out.append(float("nan"))
        else:
            out.append(float(skm.roc_auc_score(onehot[:, k], p[:, k])))
    return out


@metric(
    "kappa_quadratic", "quadratic-weighted Cohen's kappa (ordinal agreement)", tasks=SINGLE_LABEL
)
def kappa_quadratic(y, p, task):
    pred = predictions(p, task)
    if len(np.unique(np.concatenate([y, pred]))) < 2:
        raise ValueError("kappa needs at least two distinct labels")
    return skm.cohen_kappa_score(y, pred, weights="quadratic")


@metric(
    "ece",
    "expected calibration error, top-label, 15 bins (lower is better)",
    higher_is_better=False,
)
def ece(y, p, task, n_bins: int = 15):
    if task == "multilabel":  # marginal calibration over all (sample, label) pairs
        confidence, correct = p.ravel(), y.ravel().astype(float)
    else:
        confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)  # the binning of sklearn's calibration_curve
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(correct[m].mean() - confidence[m].mean())
    return total / len(confidence)


# Computed after model selection from a unit's val and test probabilities together, so not
# by compute_all (no task lists it).
register_metric(
    "ece_scaled",
    "ECE after temperature scaling (one T fitted on validation NLL; lower is better)",
    higher_is_better=False,
    tasks=("calibrated",),
    computed_by="bench.tasks.classification.calibration (a temperature fitted on validation)",
)


def compute_all(labels: np.ndarray, probs: np.ndarray, task: str) -> dict[str, float]:
    return {
        m.obj.name: m.obj(labels, probs, task)
        for m in METRICS.entries()
        if m.obj and task in m.obj.tasks
    }


def per_class(labels: np.ndarray, probs: np.ndarray, task: str) -> dict[str, list[float]]:
    """Per-class (per-label) AUROC, recall and F1."""
    pred = predictions(probs, task)
    k = probs.shape[1]
    kwargs = dict(average=None, zero_division=0)
    if task != "multilabel":
        kwargs["labels"] = list(range(k))
    return {
        "auroc": per_label_auroc(labels, probs),
        "recall": [float(v) for v in skm.recall_score(labels, pred, **kwargs)],
        "f1": [float(v) for v in skm.f1_score(labels, pred, **kwargs)],
    }


def predicted_share(probs: np.ndarray, task: str) -> list[float]:
    """The share of images predicted as each class (per label: the positive rate); a
    model that predicts one class for everything shows a 1.0 here."""
    pred = predictions(probs, task)
    if task == "multilabel":
        return [float(v) for v in pred.mean(axis=0)]
    return [float(v) for v in np.bincount(pred, minlength=probs.shape[1]) / max(1, len(pred))]


def predicts_one_class(probs: np.ndarray, task: str) -> bool:
    """Every image gets the same predicted class (single-label tasks)."""
    return (
        task != "multilabel"
        and len(probs) > 1
        and max(predicted_share(np.asarray(probs), task)) >= 1.0
    )
