"""Classification: methods predict class probabilities [N, C] for each image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.api.dataset import DatasetSpec, SplitData
from bench.api.method import RunContext, Scored
from bench.api.record import Record
from bench.api.task import ScoringRun, Task, register_task


@register_task
class ClassificationTask(Task):
    """Class probabilities for each image, scored against its labels."""

    name = "classification"
    key_metrics = ("auroc", "accuracy")
    floored_metrics = (
        "accuracy",
        "balanced_accuracy",
        "auroc",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "kappa_quadratic",
    )
    degenerate_label = "at its floor"
    degenerate_seeds = "seeds predict one class or are near their floor"
    draws_figures = True

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        from bench.tasks.classification.scoring import score_classification

        return score_classification(method, bundle, run.method_name, ctx)

    def infer(self, method, split, ctx: RunContext):
        return method.predict(split, ctx)

    def check_outputs(self, outputs, split, spec, method_name: str) -> np.ndarray:
        from bench.tasks.classification.scoring import check_probs

        return check_probs(outputs, len(split), spec, method_name)

    def random_data(self, size, channels, classes, n, rng, source):
        return random_labelled_images(size, channels, classes, n, rng, source)

    def degenerate(self, record: Record) -> str:
        from bench.tasks.classification.floors import near_floor, one_class_seed

        return "predicts one class" if one_class_seed(record) else near_floor(record)

    def table_extras(self, records, methods, metrics):
        """Under a table: why each flagged seed is at its floor."""
        why = [(r, self.degenerate(r)) for r in sorted(records, key=lambda r: (r.method, r.seed))]
        why = [f"{r.method} seed {r.seed}: {reason}" for r, reason in why if reason]
        return ["", f"⚠ At its floor (not ranked): {'; '.join(why)}."] if why else []

    def verdict(self, records, frame, rows, reference, with_priors=True):
        from bench.tasks.classification.verdict import verdict_lines

        return verdict_lines(records, frame, rows, reference, with_priors)

    def other_size_verdict(self, records, frame, rows, base_records, base_frame, base_rows, base):
        from bench.tasks.classification.verdict import other_size_lines

        return other_size_lines(records, frame, rows, base_records, base_frame, base_rows, base)

    def split_floors(self, records):
        from bench.tasks.classification.floors import classification_floors

        return classification_floors(records)

    def header_notes(self, records, n_flagged, n_one_class):
        from bench.tasks.classification.verdict import EXPLANATION

        return [
            EXPLANATION,
            f"- **Floors**: each table ends with the majority-class and chance rows of its test split; ⚠ marks "
            f"{n_flagged} cell(s) at or below their floor and {n_one_class} method row(s) with a seed at its floor: one "
            "class predicted for every test image, or for over 95 % of them, or a balanced accuracy whose 95 % "
            "interval reaches chance (the reasons are under the table): no result, never bold.",
        ]

    def figures(self, records, out_dir: Path) -> list[Path]:
        from bench.tasks.classification.plots import classification_figures

        return classification_figures(records, out_dir)


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
