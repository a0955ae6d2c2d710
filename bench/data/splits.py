"""Deterministic stratified train/val/test splits, grouped by patient when ids exist.

The same (labels, groups, fractions, seed) always give the same assignment; the caller
stores it as a manifest with a hash so a run can prove which split it used.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from bench.api.errors import DataError


def stratify_key(labels: np.ndarray) -> np.ndarray:
    """One stratum per class (single-label) or per label combination (multilabel)."""
    if labels.ndim == 1:
        return labels
    return np.array(["".join(map(str, row)) for row in labels.astype(int)])


def make_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Return an array of 'train' / 'val' / 'test', one per sample."""
    n = len(labels)
    if n < 3:
        raise DataError(f"cannot split {n} samples into train/val/test")
    strata = stratify_key(labels)
    rest, test = split_off(strata, groups, test_fraction, seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = split_off(
        strata[rest], None if groups is None else groups[rest], val_share, seed + 1
    )
    out = np.empty(n, dtype=object)
    out[rest[train]] = "train"
    out[rest[val]] = "val"
    out[test] = "test"
    return out.astype(str)


def split_off(strata, groups, fraction, seed):
    """Split positions 0..len(strata)-1 into (kept, taken) with about `fraction` taken."""
    positions = np.arange(len(strata))
    if groups is not None:
        n_folds = max(2, int(round(1 / fraction)))
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise DataError(f"only {n_groups} patients: too few for a {fraction:.0%} grouped split")
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        kept, taken = next(folds.split(positions, strata, groups))
        return kept, taken
    classes, counts = np.unique(strata, return_counts=True)
    n_taken = int(np.ceil(fraction * len(strata)))
    # too rare to stratify, or too few taken to hold every class: a plain shuffle
    stratify = (
        strata
        if counts.min() >= 2 and min(n_taken, len(strata) - n_taken) >= len(classes)
        else None
    )
    try:
        kept, taken = train_test_split(
            positions, test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(
            f"cannot take {fraction:.0%} of {len(strata)} samples for a split ({exc})"
        ) from None
    return np.sort(kept), np.sort(taken)
