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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from bench.api.registry import METRICS

SINGLE_LABEL = ("binary", "multiclass", "ordinal")
ALL_TASKS = SINGLE_LABEL + ("multilabel",)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray, str], float]
    higher_is_better: bool
    tasks: tuple[str, ...]
    description: str

    def __call__(self, labels: np.ndarray, probs: np.ndarray, task: str) -> float:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UndefinedMetricWarning)
                value = float(
                    self.fn(np.asarray(labels), np.asarray(probs, dtype=np.float64), task)
                )
        except ValueError as exc:  # sklearn raises for some undefined cases
            value, why = float("nan"), str(exc)
        else:
            why = "e.g. only one class present"
        if np.isnan(value):
            warnings.warn(
                f"metric {self.name} is undefined here ({why}); reporting NaN", stacklevel=2
            )
        return value


def metric(name: str, description: str, higher_is_better: bool = True, tasks=ALL_TASKS):
    def wrap(fn):
        return METRICS.add(
            name, Metric(name, fn, higher_is_better, tuple(tasks), description), description
        )

    return wrap


def predictions(probs: np.ndarray, task: str) -> np.ndarray:
    return (probs >= 0.5).astype(int) if task == "multilabel" else probs.argmax(axis=1)


@metric("accuracy", "fraction correct (multilabel: mean per-label accuracy at 0.5)")
def accuracy(y, p, task):
    return float((predictions(p, task) == y).mean())


@metric("balanced_accuracy", "mean per-class recall", tasks=SINGLE_LABEL)
def balanced_accuracy(y, p, task):
    return skm.balanced_accuracy_score(y, predictions(p, task))


def _macro(score_fn):
    return lambda y, p, task: score_fn(y, predictions(p, task), average="macro", zero_division=0)


metric("precision_macro", "macro precision (0 for a never-predicted class)")(
    _macro(skm.precision_score)
)
metric("recall_macro", "macro recall (sensitivity)")(_macro(skm.recall_score))
metric("f1_macro", "macro F1")(_macro(skm.f1_score))


@metric("auroc", "AUROC: binary positive-class, macro one-vs-rest, multilabel mean of per-label")
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


def _after_scaling(*_):
    raise TypeError(
        "ece_scaled needs a temperature fitted on validation: bench.tasks.classification.calibration computes it"
    )


# Computed after model selection from a unit's val and test probabilities together
# (bench/tasks/classification/calibration.py), so not by compute_all (no task lists it).
metric(
    "ece_scaled",
    "ECE after temperature scaling (one T fitted on validation NLL; lower is better)",
    higher_is_better=False,
    tasks=("calibrated",),
)(_after_scaling)


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


# Generation metrics are computed from features by bench.tasks.generation.fidelity (torch-fidelity); they
# are registered here for their names, descriptions and directions (leaderboards).
GENERATION = ("generation",)


def _from_features(*_):
    raise TypeError(
        "generation and restoration metrics are computed from images (bench.tasks.generation.fidelity, bench.metrics.image_quality), not from probabilities"
    )


for _name, _text, _higher in (
    (
        "fid",
        "Frechet distance between generated and real feature statistics (torch-fidelity; lower is better)",
        False,
    ),
    (
        "kid_mean",
        "kernel (polynomial) MMD between generated and real features, mean over subsets (lower is better)",
        False,
    ),
    ("kid_std", "standard deviation of KID over subsets (spread, not a score)", False),
    (
        "qwk_gap",
        "ordinal data: |QWK of generated images' grades - QWK of real images'| (extractor grades; lower is better)",
        False,
    ),
    (
        "precision",
        "fraction of generated images inside the real k-NN manifold (k = 3; fidelity)",
        True,
    ),
    (
        "recall",
        "fraction of real images inside the generated k-NN manifold (k = 3; diversity)",
        True,
    ),
    (
        "diversity",
        "within-class mean pairwise feature distance, generated / real (1 = as varied; near 0 = collapsed)",
        True,
    ),
    (
        "novelty",
        "distance to the nearest training image, generated / real held-out (1 = as new; near 0 = copies)",
        True,
    ),
    (
        "intensity_ratio",
        "mean pixel value, generated / reference images (1 = as bright; best at 1, so not ranked)",
        True,
    ),
):
    metric(_name, _text, higher_is_better=_higher, tasks=GENERATION)(_from_features)

# Restoration metrics are computed per image by bench.metrics.image_quality (scikit-image).
for _name, _text, _higher in (
    ("psnr", "peak signal-to-noise ratio in dB on the declared data range (scikit-image)", True),
    ("ssim", "structural similarity (scikit-image, 7 px window, per channel)", True),
    ("nmae", "mean absolute error / data range (lower is better)", False),
    ("rmse", "root mean squared error in data-range units (lower is better)", False),
):
    metric(_name, _text, higher_is_better=_higher, tasks=("restoration",))(_from_features)


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
