"""Classification: methods predict class probabilities [N, C] for each image."""

from __future__ import annotations

import numpy as np

from bench.api.dataset import DatasetSpec, SplitData
from bench.api.method import RunContext, Scored
from bench.api.task import ScoringRun, Task, register_task


@register_task
class ClassificationTask(Task):
    """Class probabilities for each image, scored against its labels."""

    name = "classification"

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        from bench.tasks.classification.scoring import score_classification

        return score_classification(method, bundle, run.method_name, ctx)

    def infer(self, method, split, ctx: RunContext):
        return method.predict(split, ctx)

    def random_data(self, size, channels, classes, n, rng, source):
        return random_labelled_images(size, channels, classes, n, rng, source)


def random_labelled_images(size, channels, classes, n, rng: np.random.Generator, source: str):
    """(spec, split) of `n` random uint8 images with balanced labels (a multiclass set)."""
    labels = np.arange(n) % classes
    ids = [f"random/{i}" for i in range(n)]
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    spec = DatasetSpec(
        name=f"random-{size}px",
        task="multiclass",
        class_names=tuple(f"c{i}" for i in range(classes)),
        channels=channels,
        size=size,
        source=source,
        synthetic=True,
    )
    return spec, SplitData(images, labels, ids)
