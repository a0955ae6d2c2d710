"""Every classification record is calibrated the same way after model selection: one
temperature fitted on the validation split's NLL (bench/metrics/calibration.py), stored
in the record, and ECE reported as trained (``ece``) and after scaling (``ece_scaled``),
for the method and for each of its priors. Scoring a new unit and rescoring a stored one
(`bench rescore --suite classification`, from its ``.npz``) call the same function."""

from __future__ import annotations

import numpy as np

from bench.metrics.calibration import fit_temperature, logits_of, nll, scaled
from bench.metrics.classification import METRICS, compute_all

VERSION = 1  # of the calibration block; a rescore replaces blocks of an older version


def calibrate(
    val_labels: np.ndarray, val_probs: np.ndarray, test_labels, test_probs, task: str
) -> dict:
    """The calibration block of one classifier: T fitted on val, the val and test NLL and
    ECE before and after, and the test metrics of the scaled probabilities (the argmax
    does not move, and neither does a binary AUROC)."""
    val_logits, test_logits = logits_of(val_probs, task), logits_of(test_probs, task)
    temperature, val_nll = fit_temperature(val_logits, val_labels, task)
    ece = METRICS.get("ece")
    out = {
        "version": VERSION,
        "method": "temperature scaling",
        "fitted_on": "val",
        "temperature": temperature,
        "nll": {
            "val": [nll(val_logits, val_labels, task), val_nll],
            "test": [
                nll(test_logits, test_labels, task),
                nll(test_logits, test_labels, task, temperature),
            ],
        },
    }
    test_scaled = scaled(test_logits, temperature, task)
    out["ece"] = {
        "val": [
            ece(val_labels, val_probs, task),
            ece(val_labels, scaled(val_logits, temperature, task), task),
        ],
        "test": [ece(test_labels, test_probs, task), ece(test_labels, test_scaled, task)],
    }
    out["test_scaled"] = compute_all(test_labels, test_scaled, task)
    return out


def calibration_fields(arrays: dict[str, np.ndarray], task: str) -> dict:
    """From a unit's arrays (``{split}_probs``, ``{split}_labels``, ``{split}_prior_<name>``):
    {"calibration": block of the method, "prior_calibration": {name: block}}."""
    labels = arrays["val_labels"], arrays["test_labels"]

    def block(key):
        return calibrate(labels[0], arrays[f"val_{key}"], labels[1], arrays[f"test_{key}"], task)

    priors = sorted(
        k[len("test_prior_") :]
        for k in arrays
        if k.startswith("test_prior_") and f"val_{k[5:]}" in arrays
    )
    return {
        "calibration": block("probs"),
        "prior_calibration": {name: block(f"prior_{name}") for name in priors},
    }


def apply_calibration(fields: dict, calibration: dict) -> dict:
    """A scoring's `fields` (or a record's ``metrics`` and ``priors``) with the
    `calibration` blocks and each split's ``ece_scaled`` metric (the method's in
    ``metrics``, each prior's in ``priors``)."""
    metrics, priors = fields.get("metrics") or {}, dict(fields.get("priors") or {})
    out = {**fields, **calibration}
    out["metrics"] = {
        split: {**values, "ece_scaled": calibration["calibration"]["ece"][split][1]}
        for split, values in metrics.items()
        if split in calibration["calibration"]["ece"]
    }
    for name, block in calibration["prior_calibration"].items():
        if name in priors:
            priors[name] = {
                split: {**values, "ece_scaled": block["ece"][split][1]}
                for split, values in priors[name].items()
            }
    if priors:
        out["priors"] = priors
    return out
