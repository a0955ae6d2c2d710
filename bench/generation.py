"""Evaluating a generation unit: train the method, sample as many images per class as
the reference split holds, and compare them with it through torch-fidelity (FID, KID,
precision/recall k = 3, per-class FID), on one extractor shared by every method and
seed of a dataset.

The reference is the test split by default: the generators never see it, so the
numbers measure the learned distribution rather than memorised training images (and
they land in the record's ``metrics.test`` like every other suite's). The extractor
(``bench-classifier`` unless Inception weights are given) is trained once per dataset
split, seed 0, and cached; its name, version (weights hash) and validation AUROC are
in every record.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.spec import DatasetBundle
from bench.errors import BenchError, TrainingError
from bench.fidelity import (
    Extractor, classifier_extractor, extract_features, fidelity_metrics, inception_extractor, per_class_fid,
    save_classifier_extractor,
)
from bench.method import Budget, GenerationMethod, RunContext


@dataclass(frozen=True)
class GenerationEval:
    """How generated images are scored (a suite's ``evaluation:``, per preset too)."""

    reference_split: str = "test"
    samples_per_class: int | None = None  # None: as many as the reference split has per class
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    k: int = 3  # precision/recall neighbourhood
    extractor: str = "classifier"  # "classifier" | "inception"
    inception_weights: str | None = None
    extractor_model: str = "resnet18"
    extractor_small_stem: bool = True
    extractor_epochs: int = 30
    grid_per_class: int = 8

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "GenerationEval":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise BenchError(f"generation evaluation: unknown options {sorted(unknown)} (options: {sorted(known)})")
        return cls(**options)


def feature_extractor(settings: GenerationEval, bundle: DatasetBundle, accelerator, cache_dir: Path, log) -> Extractor:
    """Inception from its local weights, or the harness classifier for this dataset's
    splits (trained on its training split, selected on validation AUROC, cached)."""
    if settings.extractor == "inception":
        return inception_extractor(settings.inception_weights)
    if settings.extractor != "classifier":
        raise BenchError(f"generation evaluation: extractor must be 'classifier' or 'inception', not {settings.extractor!r}")
    from baselines.timm_classifier import TimmClassifierConfig, build_timm_model
    from bench.training import SupervisedSettings, train_supervised
    from methods.label_diffusion import cached_pretraining

    spec = bundle.spec
    model_cfg = TimmClassifierConfig(model=settings.extractor_model, small_input_stem=settings.extractor_small_stem)
    model = build_timm_model(model_cfg, spec.channels, spec.num_classes).to(accelerator.device)
    budget = Budget(epochs=settings.extractor_epochs, batch_size=128, eval_batch_size=256)
    ctx = RunContext(accelerator, 0, budget, cache_dir, log, False, cache_dir, bundle.split_hash)
    train_settings = SupervisedSettings(lr=1e-3, weight_decay=0.0, lr_milestones=(0.5, 0.75), lr_gamma=0.1,
                                        selection_metric="auroc", input_size=None)
    payload = {"model": settings.extractor_model, "stem": settings.extractor_small_stem, "epochs": settings.extractor_epochs,
               "classes": spec.num_classes, "channels": spec.channels}
    summary = cached_pretraining("fid_extractor", payload, model,
                                 lambda: train_supervised(model, bundle.splits["train"], bundle.splits["val"], ctx, train_settings, spec.task), ctx)
    path = Path(summary["file"]).with_suffix(".extractor.pt")
    trained_on = {"dataset": spec.name, "split_hash": bundle.split_hash, "split": "train", "epochs": settings.extractor_epochs,
                  "val_auroc": summary.get("best_val_value"), "pretraining_file": summary["file"]}
    if path.is_file():
        return classifier_extractor(path, trained_on)
    return save_classifier_extractor(path, model, model_name=settings.extractor_model, in_chans=spec.channels,
                                     num_classes=spec.num_classes, input_size=None,
                                     small_input_stem=settings.extractor_small_stem, trained_on=trained_on)


def generation_labels(reference_labels: np.ndarray, num_classes: int, per_class: int | None) -> np.ndarray:
    if per_class is None:
        return np.sort(np.asarray(reference_labels))
    return np.repeat(np.arange(num_classes), per_class)


def evaluate_generator(method: GenerationMethod, bundle: DatasetBundle, ctx: RunContext, settings: GenerationEval,
                       extractor: Extractor) -> dict[str, Any]:
    """Sample, check, score; returns the record's metrics/per-class parts and arrays."""
    import time

    ref = bundle.splits[settings.reference_split]
    spec = bundle.spec
    labels = generation_labels(ref.labels, spec.num_classes, settings.samples_per_class)
    t0 = time.perf_counter()
    images = np.asarray(method.sample(labels, ctx))
    sample_s = time.perf_counter() - t0
    expected = (len(labels), spec.size, spec.size, spec.channels)
    if images.dtype != np.uint8 or images.shape != expected:
        raise TrainingError(f"{type(method).__name__}.sample returned {images.dtype} {images.shape}, expected uint8 {expected}")
    real = extract_features(ref.images, extractor, f"{spec.name} {settings.reference_split} images")
    fake = extract_features(images, extractor, "generated images")
    metrics = fidelity_metrics(real, fake, kid_subset_size=settings.kid_subset_size, kid_subsets=settings.kid_subsets,
                               k=settings.k, seed=ctx.seed)
    per_class = {"fid": per_class_fid(real, ref.labels, fake, labels, spec.num_classes),
                 "n_generated": np.bincount(labels, minlength=spec.num_classes).tolist(),
                 "n_reference": np.bincount(ref.labels, minlength=spec.num_classes).tolist()}
    if ctx.artifact_stem is not None:
        from bench.images import save_class_grid

        grid = ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.samples.png"
        save_class_grid(images, labels, grid, settings.grid_per_class)
    return {
        "metrics": {"test": metrics},
        "per_class": {"test": per_class},
        "evaluation": {**dataclasses.asdict(settings), "extractor_info": extractor.info, "n_generated": len(labels),
                       "samples_png": f"{ctx.artifact_stem.name}.samples.png" if ctx.artifact_stem else None},
        "sample_s": sample_s,
        "arrays": {"generated_images": images, "generated_labels": labels},
    }
