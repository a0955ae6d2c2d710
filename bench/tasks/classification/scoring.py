"""Scoring a classification unit: probabilities on val and test, checked, with their
metrics, per-class metrics, predicted shares, the method's own priors and extras."""

from __future__ import annotations

import time

import numpy as np

from bench.api.dataset import DatasetBundle, DatasetSpec
from bench.api.errors import TrainingError
from bench.api.method import RunContext, Scored
from bench.metrics.classification import compute_all, per_class, predicted_share
from bench.tasks.classification.calibration import apply_calibration, calibration_fields

#: how far a row of single-label probabilities may sum from one (float32 softmax rows)
ROW_SUM_TOLERANCE = 1e-3


def check_probs(probs: np.ndarray, n: int, spec: DatasetSpec, method: str) -> np.ndarray:
    """`probs` as float64 [n, C] in [0, 1], rows summing to one unless multilabel."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, spec.num_classes):
        raise TrainingError(
            f"{method}.predict returned shape {probs.shape}, expected ({n}, {spec.num_classes})"
        )
    if not np.isfinite(probs).all():
        raise TrainingError(f"{method}.predict returned non-finite scores")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise TrainingError(f"{method}.predict must return probabilities in [0, 1]")
    if spec.task != "multilabel" and n:
        worst = float(np.abs(probs.sum(axis=1) - 1).max())
        if worst > ROW_SUM_TOLERANCE:
            raise TrainingError(
                f"{method}.predict returned rows that do not sum to one (off by up to {worst:.3g}) "
                f"on the single-label task {spec.task!r}"
            )
    return probs


def score_classification(method, bundle: DatasetBundle, name: str, ctx: RunContext) -> Scored:
    """Predict val and test; metrics, per-class metrics, method extras and other readouts,
    the calibration (a temperature fitted on val: bench/tasks/classification/calibration.py),
    arrays."""
    splits, task = bundle.splits, bundle.spec.task
    probs, extras, infer_s = {}, {}, 0.0
    for s in ("val", "test"):
        t1 = time.perf_counter()
        out = method.predict_with_extras(splits[s], ctx)
        probs[s] = check_probs(out.probs, len(splits[s]), bundle.spec, name)
        infer_s = time.perf_counter() - t1  # the test split's time is the one reported
        extras[s] = out.extras
    priors = {s: method.prior_predictions(splits[s], ctx) for s in ("val", "test")}
    arrays = {}
    for s in ("val", "test"):
        arrays[f"{s}_probs"] = probs[s].astype(np.float32)
        arrays[f"{s}_labels"] = splits[s].labels
        arrays[f"{s}_ids"] = np.array(splits[s].ids)
        arrays.update({f"{s}_{name}": np.asarray(v) for name, v in extras[s].items()})
        arrays.update(
            {f"{s}_prior_{name}": np.asarray(v, dtype=np.float32) for name, v in priors[s].items()}
        )
    readouts = {  # a method's other readouts of its outputs ([N, C] extras: CARD's vote shares)
        name: {"test": compute_all(splits["test"].labels, np.asarray(v, np.float64), task)}
        for name, v in extras["test"].items()
        if np.shape(v) == probs["test"].shape
    }
    fields = {
        "metrics": {s: compute_all(splits[s].labels, probs[s], task) for s in ("val", "test")},
        "per_class": {"test": per_class(splits["test"].labels, probs["test"], task)},
        "predicted_share": {s: predicted_share(probs[s], task) for s in ("val", "test")},
        "priors": {
            name: {
                s: {
                    **compute_all(splits[s].labels, priors[s][name], task),
                    "predicted_share": predicted_share(priors[s][name], task),
                }
                for s in ("val", "test")
            }
            for name in priors["test"]
        },
        "extras": {
            s: {
                name: float(np.mean(v)) for name, v in extras[s].items() if np.ndim(v) == 1
            }  # per-sample scalars
            for s in ("val", "test")
            if extras[s]
        },
    }
    if readouts:
        fields["readouts"] = readouts
    fields = apply_calibration(fields, calibration_fields(arrays, task))
    return Scored(fields, arrays, len(splits["test"]), infer_s)
