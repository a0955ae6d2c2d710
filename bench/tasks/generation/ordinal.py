"""Ordinal consistency of class-conditional samples: does an image generated for grade k
look like grade k, in order? (What the Ordinal Diffusion Model exists for, and what FID
does not measure.)

The dataset's extractor classifier (trained on the real training split, the one FID uses)
grades every generated image; the agreement of those grades with the grades the images
were generated for is read beside the same classifier's agreement with the true grades of
the real reference images: closeness to that value is the goal (a generator can also
exaggerate the order: more agreement than real images have). Quadratic-weighted kappa
and Spearman's rho, and each class's mean intensity over the real class's."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from bench.tasks.generation.fidelity import (
    CLASSIFIER_EXTRACTOR,
    Extractor,
    as_fidelity_images,
    classifier_input,
    load_classifier,
)


@torch.no_grad()
def classifier_grades(images: np.ndarray, extractor: Extractor, batch_size: int = 256):
    """The extractor classifier's predicted class of each uint8 image; None for an
    extractor without a class head of this dataset (Inception)."""
    if extractor.name != CLASSIFIER_EXTRACTOR:
        return None
    model, in_chans, input_size = load_classifier(
        extractor.kwargs["feature_extractor_weights_path"]
    )
    x = as_fidelity_images(images, "images to grade")
    out = [
        model(classifier_input(x[i : i + batch_size], in_chans, input_size)).argmax(dim=1)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy()


def agreement(given: np.ndarray, graded: np.ndarray) -> dict[str, float]:
    """Quadratic-weighted kappa and Spearman's rho between two gradings (NaN if constant)."""
    given, graded = np.asarray(given), np.asarray(graded)
    constant = len(np.unique(given)) < 2 or len(np.unique(graded)) < 2
    return {
        "qwk": np.nan if constant else float(cohen_kappa_score(given, graded, weights="quadratic")),
        "spearman": np.nan if constant else float(stats.spearmanr(given, graded).statistic),
    }


def class_intensity_ratios(images, labels, ref_images, ref_labels, num_classes: int) -> list:
    """Per class: the generated images' mean pixel value over the reference images' of
    that class (None where either has no image of it)."""
    out = []
    for k in range(num_classes):
        gen, ref = images[np.asarray(labels) == k], ref_images[np.asarray(ref_labels) == k]
        out.append(float(gen.mean() / ref.mean()) if len(gen) and len(ref) and ref.mean() else None)
    return out


def ordinal_consistency(
    images, labels, ref_images, ref_labels, extractor: Extractor, num_classes: int
) -> dict | None:
    """The record's ``ordinal_consistency`` block (None without a grading classifier)."""
    graded = classifier_grades(images, extractor)
    if graded is None:
        return None
    real = classifier_grades(ref_images, extractor)
    return {
        "generated": agreement(labels, graded),
        "real": agreement(ref_labels, real),
        "class_intensity_ratio": class_intensity_ratios(
            images, labels, ref_images, ref_labels, num_classes
        ),
        "graded_by": extractor.info.get("version"),
    }
