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

from bench.api.dataset import DatasetBundle
from bench.api.errors import BenchError, TrainingError
from bench.api.method import Budget, GenerationMethod, RunContext
from bench.api.options import check_options
from bench.tasks.generation.fidelity import (
    Extractor,
    classifier_extractor,
    extract_features,
    fidelity_metrics,
    inception_extractor,
    per_class_fid,
    save_classifier_extractor,
)
from bench.tasks.generation.floors import (
    fid_bootstrap_interval,
    floor_image_sets,
    frechet_distance,
    intensity_ratio,
    sample_diagnostics,
)
from bench.tasks.generation.ordinal import ordinal_consistency


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
    extractor_seed: int = 0  # its own random stream: the same extractor whatever ran before it
    grid_per_class: int = 8
    bootstrap: int = 200  # resamples for FID's 95 % interval (0: none)
    #: other extractor seeds under which the same samples' FID is also computed: how much of
    #: a FID difference is the extractor's (each seed trains an extractor once per dataset)
    spread_seeds: tuple[int, ...] = ()
    #: also sample for the validation split's labels (another random stream; the test
    #: samples are unchanged) and score them against it: ``metrics.val`` (FID, and for
    #: ordinal data the grade agreement's distance to the real images'), what a sweep
    #: selects on, never a test number
    validation: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GenerationEval:
        check_options(cls, options, "generation evaluation")  # names and types
        if "spread_seeds" in options:  # YAML gives a list; the settings are a cache key
            options = {**options, "spread_seeds": tuple(options["spread_seeds"])}
        return cls(**options)


def feature_extractor(
    settings: GenerationEval, bundle: DatasetBundle, accelerator, cache_dir: Path, log
) -> Extractor:
    """Inception from its local weights, or the harness classifier for this dataset's
    splits (trained on its training split, selected on validation AUROC, cached)."""
    if settings.extractor == "inception":
        return inception_extractor(settings.inception_weights)
    if settings.extractor != "classifier":
        raise BenchError(
            f"generation evaluation: extractor must be 'classifier' or 'inception', not {settings.extractor!r}"
        )
    import random

    import torch

    from bench.engine.runner import make_context
    from bench.nn.pretraining import cached_pretraining
    from bench.nn.timm_models import TimmArch, build_timm_model
    from bench.train.supervised import SupervisedSettings, train_supervised

    spec, seed = bundle.spec, settings.extractor_seed
    budget = Budget(epochs=settings.extractor_epochs, batch_size=128, eval_batch_size=256)
    ctx = make_context(
        accelerator, seed, budget, cache_dir, cache_dir, log=log, cache_dir=cache_dir,
        data_id=bundle.split_hash,
    )  # fmt: skip
    train_settings = SupervisedSettings(
        lr=1e-3,
        weight_decay=0.0,
        lr_milestones=(0.5, 0.75),
        lr_gamma=0.1,
        selection_metric="auroc",
        input_size=None,
    )
    payload = {
        "model": settings.extractor_model,
        "stem": settings.extractor_small_stem,
        "epochs": settings.extractor_epochs,
        "classes": spec.num_classes,
        "channels": spec.channels,
        "seed": seed,
    }
    # its initial weights and training draw from a stream of its own, restored afterwards:
    # before, they came from the global state left by whatever ran first
    with torch.random.fork_rng(devices=[]):
        py_state, np_state = random.getstate(), np.random.get_state()
        torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
        try:
            model_cfg = TimmArch(
                model=settings.extractor_model, small_input_stem=settings.extractor_small_stem
            )
            model = build_timm_model(model_cfg, spec.channels, spec.num_classes).to(
                accelerator.device
            )
            summary = cached_pretraining(
                "fid_extractor",
                payload,
                model,
                lambda: train_supervised(
                    model,
                    bundle.splits["train"],
                    bundle.splits["val"],
                    ctx,
                    train_settings,
                    spec.task,
                ),
                ctx,
            )
        finally:
            random.setstate(py_state), np.random.set_state(np_state)
    path = Path(summary["file"]).with_suffix(".extractor.pt")
    trained_on = {
        "dataset": spec.name,
        "split_hash": bundle.split_hash,
        "split": "train",
        "epochs": settings.extractor_epochs,
        "seed": seed,
        "val_auroc": summary.get("best_val_value"),
        "pretraining_file": summary["file"],
    }
    if path.is_file():
        return classifier_extractor(path, trained_on)
    return save_classifier_extractor(
        path,
        model,
        model_name=settings.extractor_model,
        in_chans=spec.channels,
        num_classes=spec.num_classes,
        input_size=None,
        small_input_stem=settings.extractor_small_stem,
        trained_on=trained_on,
    )


def shared_extractor(
    settings: GenerationEval, bundle: DatasetBundle, ctx, shared: dict
) -> Extractor:
    """The dataset's extractor for `settings`, built once per suite run (kept in `shared`)."""
    key = ("extractor", bundle.spec.name, bundle.split_hash, settings)
    if key not in shared:
        shared[key] = feature_extractor(settings, bundle, ctx.accelerator, ctx.cache_dir, ctx.log)
    return shared[key]


def generation_labels(
    reference_labels: np.ndarray, num_classes: int, per_class: int | None
) -> np.ndarray:
    if per_class is None:
        return np.sort(np.asarray(reference_labels))
    return np.repeat(np.arange(num_classes), per_class)


def check_samples(images, n: int, spec, method: str) -> np.ndarray:
    """`images` as uint8 [n, H, W, C] at the data's size, or a TrainingError."""
    images = np.asarray(images)
    expected = (n, spec.size, spec.size, spec.channels)
    if images.dtype != np.uint8 or images.shape != expected:
        raise TrainingError(
            f"{method}.sample returned {images.dtype} {images.shape}, expected uint8 {expected}"
        )
    return images


def evaluate_generator(
    method: GenerationMethod,
    bundle: DatasetBundle,
    ctx: RunContext,
    settings: GenerationEval,
    extractor: Extractor,
    spread: dict[int, Extractor] | None = None,
) -> dict[str, Any]:
    """Sample, check, score; returns the record's metrics/per-class parts and arrays.
    `spread`: extractors of other seeds, under which the samples' FID is also computed."""
    import time

    ref = bundle.splits[settings.reference_split]
    spec = bundle.spec
    labels = generation_labels(ref.labels, spec.num_classes, settings.samples_per_class)
    t0 = time.perf_counter()
    images = check_samples(method.sample(labels, ctx), len(labels), spec, type(method).__name__)
    sample_s = time.perf_counter() - t0
    real = extract_features(ref.images, extractor, f"{spec.name} {settings.reference_split} images")
    train = bundle.splits["train"]
    train_features = extract_features(train.images, extractor, f"{spec.name} train images")

    def score(generated: np.ndarray, what: str, seed: int) -> dict[str, float]:
        features = extract_features(generated, extractor, what)
        return {
            **fidelity_metrics(
                real,
                features,
                kid_subset_size=settings.kid_subset_size,
                kid_subsets=settings.kid_subsets,
                k=settings.k,
                seed=seed,
            ),
            **sample_diagnostics(real, ref.labels, features, labels, train_features),
            "intensity_ratio": intensity_ratio(generated, ref.images),
        }, features

    metrics, fake = score(images, "generated images", ctx.seed)
    # the same no-learning sets for every method and seed (seed 0), so every record holds the table's floors
    floors = {
        name: score(imgs, name, 0)[0]
        for name, imgs in floor_image_sets(train, labels, seed=0).items()
    }
    interval = (
        fid_bootstrap_interval(real, fake, settings.bootstrap, seed=ctx.seed)
        if settings.bootstrap
        else None
    )
    fid_by_seed = {str(settings.extractor_seed): float(metrics["fid"])}
    for seed, other in sorted((spread or {}).items()):
        fid_by_seed[str(seed)] = frechet_distance(
            extract_features(ref.images, other, f"reference images (extractor seed {seed})"),
            extract_features(images, other, f"generated images (extractor seed {seed})"),
        )
    per_class = {
        "fid": per_class_fid(real, ref.labels, fake, labels, spec.num_classes),
        "n_generated": np.bincount(labels, minlength=spec.num_classes).tolist(),
        "n_reference": np.bincount(ref.labels, minlength=spec.num_classes).tolist(),
    }
    ordinal = (
        ordinal_consistency(images, labels, ref.images, ref.labels, extractor, spec.num_classes)
        if spec.task == "ordinal"
        else None
    )
    if ctx.artifact_stem is not None:
        from bench.train.images import save_class_grid

        grid = ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.samples.png"
        save_class_grid(images, labels, grid, settings.grid_per_class)
    scores = {"test": metrics}
    if settings.validation:
        scores["val"] = validation_scores(method, bundle, ctx, extractor, settings)
    return {
        "metrics": scores,
        "per_class": {"test": per_class},
        "evaluation": {
            **dataclasses.asdict(settings),
            "extractor_info": extractor.info,
            "n_generated": len(labels),
            "floors": floors,
            "fid_ci95": interval,
            "fid_by_extractor_seed": fid_by_seed,
            "samples_png": f"{ctx.artifact_stem.name}.samples.png" if ctx.artifact_stem else None,
        },
        **({"ordinal_consistency": ordinal} if ordinal else {}),
        "sample_s": sample_s,
        "arrays": {"generated_images": images, "generated_labels": labels},
    }


def validation_scores(
    method: GenerationMethod,
    bundle: DatasetBundle,
    ctx: RunContext,
    extractor: Extractor,
    settings: GenerationEval,
) -> dict[str, float]:
    """FID of samples drawn for the validation split's labels against its images (and, on
    ordinal data, how far their grade agreement is from the real images'): a sweep's
    objective. The samples come from their own stream (seed + 7919), so the test samples
    are the same with or without them."""
    val, spec = bundle.splits["val"], bundle.spec
    labels = generation_labels(val.labels, spec.num_classes, settings.samples_per_class)
    images = check_samples(
        method.sample(labels, dataclasses.replace(ctx, seed=ctx.seed + 7919)),
        len(labels),
        spec,
        type(method).__name__,
    )
    real = extract_features(val.images, extractor, f"{spec.name} val images")
    fake = extract_features(images, extractor, "generated images (val labels)")
    out = {"fid": frechet_distance(real, fake)}
    if spec.task == "ordinal":
        ordinal = ordinal_consistency(
            images, labels, val.images, val.labels, extractor, spec.num_classes
        )
        if ordinal:
            gap = ordinal["generated"]["qwk"] - ordinal["real"]["qwk"]
            out["qwk_gap"] = float(abs(gap)) if np.isfinite(gap) else None
    return out
