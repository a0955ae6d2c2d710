"""What a generator's numbers mean: the floors it must beat, whether its samples
collapsed or copy the training set, and how much of its FID is sampling noise.

All of it is measured in the extractor's feature space, on the same reference split:

- *Floors*: image sets made without learning, scored like a generator. "class-mean
  image" (each class's mean training image, repeated) and "one training image per
  class" (repeated) have zero diversity: a generator whose FID is no better than theirs
  has learned nothing a table should rank. "real training images" (drawn per class,
  scored against the test split) is real-vs-real: the best a generator can hope for.
- *Diversity*: the mean pairwise feature distance within each class, generated over
  real (1 = as varied as the real images; a collapsed generator is near 0).
- *Memorisation*: the mean distance from each generated image to its nearest training
  image, over the same for the real held-out images (1 = as far from the training set
  as new real images are; a generator that copies training images is near 0).
- *Intensity*: the mean pixel value of the generated images over the reference
  images' (in pixel space, not features: 1 = as bright; a sampler that drifts, e.g. a
  grey background where the real one is black, moves it away from 1). Shown beside
  the table against INTENSITY_TOLERANCE, not ranked.
- *Uncertainty*: a bootstrap 95 % interval of FID over the reference and generated
  images (both resampled, bias-corrected), which says what difference between two FIDs
  is noise.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.api.dataset import SplitData
from bench.api.record import Record

COLLAPSED_BELOW = 0.5  # diversity ratio under which a generator's samples count as collapsed
MEMORISED_BELOW = 0.5  # nearest-training-image ratio under which its samples count as copies
# |generated / real mean intensity - 1| within which samples count as well exposed
INTENSITY_TOLERANCE = 0.10
COLLAPSE_FLOORS = ("class-mean image", "one training image per class")
REAL_VS_REAL = "real training images"


def floor_image_sets(train: SplitData, labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 image sets for the requested `labels` (one image per label), made from the
    training split without learning anything."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = {
        name: np.empty((len(labels), *train.images.shape[1:]), dtype=np.uint8)
        for name in (REAL_VS_REAL, *COLLAPSE_FLOORS)
    }
    for c in np.unique(labels):
        want = np.flatnonzero(labels == c)
        pool = np.flatnonzero(np.asarray(train.labels) == c)
        if len(pool) == 0:
            raise ValueError(f"class {c} has no training image to build a floor from")
        drawn = rng.choice(pool, size=len(want), replace=len(pool) < len(want))
        out[REAL_VS_REAL][want] = train.images[drawn]
        out["class-mean image"][want] = np.round(
            train.images[pool].astype(np.float64).mean(axis=0)
        ).astype(np.uint8)
        out["one training image per class"][want] = train.images[rng.choice(pool)]
    return out


def _pairwise_mean(x: torch.Tensor) -> float:
    if len(x) < 2:
        return float("nan")
    d = torch.cdist(x, x)
    return float(d.sum() / (len(x) * (len(x) - 1)))


def within_class_diversity(features: torch.Tensor, labels: np.ndarray) -> float:
    """Mean over classes (with 2+ images) of the mean pairwise feature distance."""
    labels = np.asarray(labels)
    per_class = [_pairwise_mean(features[labels == c]) for c in np.unique(labels)]
    per_class = [v for v in per_class if np.isfinite(v)]
    return float(np.mean(per_class)) if per_class else float("nan")


def nearest_distance(features: torch.Tensor, pool: torch.Tensor, chunk: int = 1024) -> float:
    """Mean distance from each row of `features` to its nearest row of `pool`."""
    mins = [
        torch.cdist(features[i : i + chunk], pool).min(dim=1).values
        for i in range(0, len(features), chunk)
    ]
    return float(torch.cat(mins).mean())


def sample_diagnostics(
    real: torch.Tensor,
    real_labels: np.ndarray,
    fake: torch.Tensor,
    fake_labels: np.ndarray,
    train: torch.Tensor,
) -> dict[str, float]:
    """Diversity and memorisation ratios of a generated set (see the module docstring)."""
    diversity = within_class_diversity(fake, fake_labels) / within_class_diversity(
        real, real_labels
    )
    copying = nearest_distance(fake, train) / nearest_distance(real, train)
    return {"diversity": diversity, "novelty": copying}


def intensity_ratio(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean pixel value of `generated` over that of `reference` (uint8 or float arrays)."""
    return float(
        np.asarray(generated, dtype=np.float64).mean()
        / np.asarray(reference, dtype=np.float64).mean()
    )


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two feature sets (the trace of the covariances' geometric mean from
    the eigenvalues of their product, which are real and non-negative up to rounding)."""
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(ca @ cb).real.clamp(min=0)
    return float(mu @ mu + ca.trace() + cb.trace() - 2 * eig.sqrt().sum())


def fid_bootstrap_interval(
    real: torch.Tensor, fake: torch.Tensor, n_boot: int = 200, seed: int = 0
) -> list[float]:
    """A 95 % interval of FID from bootstrap resamples of both sets: the 2.5th and 97.5th
    percentiles, shifted by the bootstrap's bias (a resample repeats images, which
    inflates FID: the resampled values sit above the estimate itself), floored at 0."""
    g = torch.Generator().manual_seed(seed)
    values = np.array(
        [
            frechet_distance(
                real[torch.randint(len(real), (len(real),), generator=g)],
                fake[torch.randint(len(fake), (len(fake),), generator=g)],
            )
            for _ in range(n_boot)
        ]
    )
    bias = values.mean() - frechet_distance(real, fake)
    return [
        max(0.0, float(np.percentile(values, 2.5) - bias)),
        max(0.0, float(np.percentile(values, 97.5) - bias)),
    ]


def degenerate_generator(record: Record) -> str:
    """Why a generation record's samples are no result ('' when they are one): they
    collapsed (within-class diversity under half the real images') or copy the training
    set (nearer to it than half the real held-out images' distance)."""
    test = record.split_metrics("test")
    if record.task != "generation" and "fid" not in test:
        return ""
    if test.get("diversity") is not None and test["diversity"] < COLLAPSED_BELOW:
        return f"collapsed (diversity {test['diversity']:.2f} of the real images')"
    if test.get("novelty") is not None and test["novelty"] < MEMORISED_BELOW:
        return f"copies training images (novelty {test['novelty']:.2f})"
    return ""


def generation_floors(records: list[Record]) -> dict[str, dict[str, float]]:
    """The zero-diversity generators of a table, as scored in its records."""
    floors = records[0].evaluation.get("floors")
    return {k: v for k, v in floors.items() if k in COLLAPSE_FLOORS} if floors else {}
