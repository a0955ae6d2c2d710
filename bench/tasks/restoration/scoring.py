"""Scoring a restoration unit, and the training-free methods that make its floor."""

from __future__ import annotations

import time

import numpy as np

from bench.api.errors import TrainingError
from bench.api.method import RunContext, Scored
from bench.metrics.image_quality import per_image_quality
from bench.report.stats import cluster_bootstrap_ci
from bench.tasks.restoration import RestorationTask
from bench.train.images import save_strip

FLOOR_METHODS = RestorationTask.floor_methods


def is_floor_method(label: str) -> bool:
    """`label` (a method, or a table's variant label 'nlm · bf16', 'nlm [hash]') is a floor."""
    return label.split(" · ")[0].split(" [")[0] in FLOOR_METHODS


def check_restored(outputs, targets: np.ndarray, method: str) -> np.ndarray:
    """`outputs` as float32 of the targets' shape, finite, or a TrainingError."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.shape != targets.shape:
        raise TrainingError(f"{method}.restore returned {outputs.shape}, expected {targets.shape}")
    if not np.isfinite(outputs).all():
        raise TrainingError(f"{method}.restore returned non-finite values")
    return outputs


def score_restoration_unit(method, bundle, ctx: RunContext, strip_count: int = 6) -> Scored:
    """Restore val and test once; per-image metrics (means in the record, values in the
    .npz), the input's own scores for reference, and an input/output/target strip."""
    metrics, arrays, outputs, out_s = {}, {}, {}, 0.0
    data_range = bundle.spec.data_range
    for s in ("val", "test"):
        split = bundle.splits[s]
        t0 = time.perf_counter()
        restored = method.restore(split.inputs, ctx)
        out_s = time.perf_counter() - t0
        outputs[s] = check_restored(restored, split.targets, type(method).__name__)
        q = per_image_quality(outputs[s], split.targets, data_range)
        metrics[s] = {k: float(v.mean()) for k, v in q.items()}
        arrays.update({f"{s}_{k}": v.astype(np.float32) for k, v in q.items()})
        arrays[f"{s}_ids"] = np.array(split.ids)
        if s == "test":
            ci95 = {k: cluster_bootstrap_ci(v, split.images, seed=ctx.seed) for k, v in q.items()}
    test = bundle.splits["test"]
    degraded = {
        k: float(v.mean())
        for k, v in per_image_quality(test.inputs, test.targets, data_range).items()
    }
    if ctx.artifact_stem is not None:
        pick = (
            np.linspace(0, len(test) - 1, min(strip_count, len(test))).round().astype(int)
        )  # the scored outputs
        save_strip(
            [test.inputs[pick], outputs["test"][pick], test.targets[pick]],
            ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.strip.png",
        )
    fields = {
        "metrics": metrics,
        "per_class": {},
        "evaluation": {
            "data_range": data_range,
            "degradation": bundle.spec.degradation,
            "input_scores_test": degraded,
            # over the test split's source images (their patches resampled together)
            "ci95_test": ci95,
            "n_source_images_test": len(set(test.images)),
            "strip_png": f"{ctx.artifact_stem.name}.strip.png" if ctx.artifact_stem else None,
        },
    }
    return Scored(fields, arrays, len(test), out_s)
