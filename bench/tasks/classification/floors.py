"""The floor of each classification metric on a split: what no learning already scores.

Two predictors that look at no image: the *majority class* (every image gets the
split's class frequencies, so the argmax is the largest class and every score ties:
AUROC 0.5, balanced accuracy 1/C, accuracy = the largest class's share) and *chance*
(uniform random guessing, in expectation: accuracy and balanced accuracy 1/C, AUROC
0.5, kappa 0). A metric's floor is the better of the two; a result at or below it (as
shown, to 3 decimals) is no result, and a model that predicts one class for every test
image, or nearly (`near_floor`), is flagged whatever its scores (see
``bench/tools/leaderboard.py``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.api.record import Record
from bench.metrics.classification import SINGLE_LABEL, compute_all, predicts_one_class
from bench.tasks.classification import ClassificationTask


def floor_rows(labels: np.ndarray, task: str, num_classes: int) -> dict[str, dict[str, float]]:
    """{"majority class": metrics, "chance": metrics} of the two no-learning predictors."""
    labels = np.asarray(labels)
    if task == "multilabel":
        prevalence = labels.mean(axis=0)
        majority = compute_all(labels, np.tile(prevalence, (len(labels), 1)), task)
        chance = {"auroc": 0.5, "accuracy": 0.5}
    else:
        freq = np.bincount(labels.astype(int), minlength=num_classes) / len(labels)
        majority = compute_all(labels, np.tile(freq, (len(labels), 1)), task)
        chance = {
            "accuracy": 1 / num_classes,
            "balanced_accuracy": 1 / num_classes,
            "recall_macro": 1 / num_classes,
            "auroc": 0.5,
            "kappa_quadratic": 0.0,
        }
    floored = ClassificationTask.floored_metrics
    return {
        row: {k: float(v) for k, v in values.items() if k in floored and np.isfinite(v)}
        for row, values in (("majority class", majority), ("chance", chance))
    }


def _test_arrays(record: Record) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(test probabilities, test labels) of a record's .npz (None, None where it has
    none), read once per version of the file (a table asks for every metric of every record)."""
    path = record.predictions_path
    try:
        return _read_test_arrays(str(path), path.stat().st_mtime_ns) if path else (None, None)
    except OSError:
        return None, None


@lru_cache(maxsize=512)
def _read_test_arrays(npz_path: str, mtime_ns: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            return (
                npz["test_probs"] if "test_probs" in npz.files else None,
                npz["test_labels"] if "test_labels" in npz.files else None,
            )
    except (OSError, ValueError):
        return None, None


def one_class_seed(record: Record) -> bool:
    """A classification record whose model predicts one class for every test image (from
    its ``predicted_share``, or from its stored predictions for records older than that)."""
    if record.task not in SINGLE_LABEL:
        return False
    share = record.predicted_share("test")
    if share is not None:
        return max(share) >= 1.0
    probs = _test_arrays(record)[0]
    return probs is not None and predicts_one_class(probs, record.task)


#: a model predicting one class for more than this share of test images is at its floor
ONE_CLASS_SHARE = 0.95


def balanced_accuracy_interval(recalls, counts, z: float = 1.96) -> tuple[float, float]:
    """A normal 95 % interval of balanced accuracy, the mean of per-class recalls, each a
    binomial proportion over its class's test images."""
    r, n = np.asarray(recalls, float), np.asarray(counts, float)
    keep = n > 0
    r, n = r[keep], n[keep]
    mean = float(r.mean())
    half = z * float(np.sqrt(np.sum(r * (1 - r) / n))) / len(r)
    return mean - half, mean + half


def near_floor(record: Record) -> str:
    """Why a single-label record's model is at its floor though not exactly one class
    ('' when it is not): more than 95 % of its test predictions in one class, or a 95 %
    interval of its balanced accuracy that reaches chance (1/C)."""
    if record.task not in SINGLE_LABEL:
        return ""
    share = record.predicted_share("test")
    if share and max(share) > ONE_CLASS_SHARE:
        return (
            f"predicts one class for {max(share):.1%} of test images (over {ONE_CLASS_SHARE:.0%})"
        )
    recalls = record.per_class("test").get("recall")
    labels = _test_arrays(record)[1]
    if recalls is None or labels is None:
        return ""
    counts = np.bincount(np.asarray(labels).astype(int), minlength=len(recalls))
    low, high = balanced_accuracy_interval(recalls, counts)
    chance = 1 / len(recalls)
    if low <= chance:
        return (
            f"balanced accuracy {np.mean(recalls):.3f}, 95 % interval [{low:.3f}, {high:.3f}] "
            f"reaches chance {chance:.3f}"
        )
    return ""


def classification_floors(records: list[Record]) -> dict[str, dict[str, float]]:
    """The no-learning rows of a table: majority class and chance on its test labels."""
    r = records[0]
    labels = _test_arrays(r)[1] if r.task in SINGLE_LABEL + ("multilabel",) else None
    return {} if labels is None else floor_rows(labels, r.task, len(r.class_names or []))
