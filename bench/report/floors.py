"""The floor of each classification metric on a split: what no learning already scores.

Two predictors that look at no image: the *majority class* (every image gets the
split's class frequencies, so the argmax is the largest class and every score ties:
AUROC 0.5, balanced accuracy 1/C, accuracy = the largest class's share) and *chance*
(uniform random guessing, in expectation: accuracy and balanced accuracy 1/C, AUROC
0.5, kappa 0). A metric's floor is the better of the two; a result at or below it (as
shown, to 3 decimals) is no result, and a model that predicts one class for every test
image is flagged whatever its scores (see ``bench/report/leaderboard.py``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.metrics.classification import SINGLE_LABEL, compute_all, predicts_one_class

#: metrics with a floor (ECE is not one: a constant predictor can be perfectly calibrated;
#: nor is a generator's precision: a class-mean image sits inside the real manifold)
FLOORED = (
    "accuracy",
    "balanced_accuracy",
    "auroc",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "kappa_quadratic",
)
FLOORED_GENERATION = ("fid", "kid_mean", "recall")


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
    keep = lambda d: {k: float(v) for k, v in d.items() if k in FLOORED and np.isfinite(v)}  # noqa: E731
    return {"majority class": keep(majority), "chance": keep(chance)}


def metric_floors(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """The floor of each floored metric: the best no-learning value in its direction."""
    from bench.api.registry import METRICS

    out: dict[str, float] = {}
    for values in rows.values():
        for k, v in values.items():
            if k not in FLOORED + FLOORED_GENERATION or v is None or not np.isfinite(v):
                continue
            better = max if METRICS.get(k).higher_is_better else min
            out[k] = better(out.get(k, v), v)
    return out


def at_or_below(value: float, floor: float | None, higher_is_better: bool = True) -> bool:
    """True when `value`, as a table shows it (3 decimals), does not beat `floor`."""
    if floor is None or not np.isfinite(value):
        return False
    return (
        round(value, 3) <= round(floor, 3)
        if higher_is_better
        else round(value, 3) >= round(floor, 3)
    )


def degenerate_generator(record: dict) -> str:
    """Why a generation record's samples are no result ('' when they are one): they
    collapsed (within-class diversity under half the real images') or copy the training
    set (nearer to it than half the real held-out images' distance)."""
    from bench.tasks.generation.floors import COLLAPSED_BELOW, MEMORISED_BELOW

    test = (record.get("metrics") or {}).get("test") or {}
    if record.get("task") != "generation" and "fid" not in test:
        return ""
    if test.get("diversity") is not None and test["diversity"] < COLLAPSED_BELOW:
        return f"collapsed (diversity {test['diversity']:.2f} of the real images')"
    if test.get("novelty") is not None and test["novelty"] < MEMORISED_BELOW:
        return f"copies training images (novelty {test['novelty']:.2f})"
    return ""


def _test_arrays(npz_path: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(test probabilities, test labels) of a record's .npz, read once per version of the
    file (a table asks for every metric of every record)."""
    try:
        return _read_test_arrays(npz_path, Path(npz_path).stat().st_mtime_ns)
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


def _npz_path(record: dict) -> str | None:
    return (
        str(Path(record["_path"]).with_name(record["predictions"]))
        if record.get("predictions") and record.get("_path")
        else None
    )


def one_class_seed(record: dict) -> bool:
    """A classification record whose model predicts one class for every test image (from
    its ``predicted_share``, or from its stored predictions for records older than that)."""
    if record.get("task") not in SINGLE_LABEL:
        return False
    share = (record.get("predicted_share") or {}).get("test")
    if share is not None:
        return max(share) >= 1.0
    path = _npz_path(record)
    probs = _test_arrays(path)[0] if path else None
    return probs is not None and predicts_one_class(probs, record["task"])


def split_floors(records: list[dict]) -> dict[str, dict[str, float]]:
    """The no-learning rows of a table: a classification split's, from its test labels;
    a generation split's zero-diversity generators, as scored in its records."""
    r = records[0]
    if "floors" in (r.get("evaluation") or {}):
        from bench.tasks.generation.floors import COLLAPSE_FLOORS

        return {k: v for k, v in r["evaluation"]["floors"].items() if k in COLLAPSE_FLOORS}
    path = _npz_path(r) if r.get("task") in SINGLE_LABEL + ("multilabel",) else None
    labels = _test_arrays(path)[1] if path else None
    return {} if labels is None else floor_rows(labels, r["task"], len(r.get("class_names") or []))


def record_flag(record: dict, metric: str) -> str:
    """Why one record's test `metric` is no result, or '' when it is one: at or below the
    metric's floor on its test split, or a model that predicts one class."""
    from bench.api.registry import METRICS

    value = ((record.get("metrics") or {}).get("test") or {}).get(metric)
    floor = metric_floors(split_floors([record])).get(metric)
    higher = METRICS.get(metric).higher_is_better
    if value is not None and at_or_below(float(value), floor, higher):
        return f"test {metric} {float(value):.3f} at or {'below' if higher else 'above'} its floor {floor:.3f}"
    return "predicts one class" if one_class_seed(record) else degenerate_generator(record)
