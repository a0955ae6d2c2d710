"""Restoration: image-to-image methods (denoising, modality conversion) on paired patches."""

from __future__ import annotations

import numpy as np

from bench.api.method import RunContext, Scored
from bench.api.record import Record
from bench.api.task import ScoringRun, Task, register_task


@register_task
class RestorationTask(Task):
    """Restored patches, scored per image (PSNR, SSIM) against their clean targets."""

    name = "restoration"
    #: the training-free methods that make a table's floor (baselines/identity.py,
    #: baselines/classical_denoisers.py): floor rows, never ranked; a learned method's cell
    #: that does not beat the best of them is flagged (leaderboards and paper tables)
    floor_methods = ("identity", "clip_input", "nlm")

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        from bench.tasks.restoration.scoring import score_restoration_unit

        return score_restoration_unit(method, bundle, ctx)

    def infer(self, method, split, ctx: RunContext):
        return method.restore(split.inputs, ctx)

    def check_outputs(self, outputs, split, spec, method_name: str) -> np.ndarray:
        from bench.tasks.restoration.scoring import check_restored

        return check_restored(outputs, split.targets, method_name)

    def random_data(self, size, channels, classes, n, rng: np.random.Generator, source):
        """Random clean patches and their noisy inputs (sigma 0.1), each its own source."""
        from bench.data.paired import PairedSpec, PairedSplit

        ids = [f"random/{i}" for i in range(n)]
        images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
        spec = PairedSpec(
            name=f"random-{size}px",
            channels=channels,
            size=size,
            degradation={"kind": "gaussian", "sigma": 0.1},
            source=source,
            synthetic=True,
        )
        clean = images.astype(np.float32) / 255
        noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
        return spec, PairedSplit(noisy, clean, ids, list(ids))

    def table_detail(self, record: Record) -> str:
        degradation = record.evaluation.get("degradation")
        return f"degradation {degradation}, scores per image patch"

    def table_floors(self, records, table, metrics, methods, floors, ranked):
        from bench.tasks.restoration.report import restoration_floors

        return restoration_floors(records, table, metrics, methods, floors, ranked)

    def table_extras(self, records, methods, metrics):
        from bench.tasks.restoration.report import interval_note

        return interval_note(records, methods)

    def leaderboard_sections(self, summary, reference):
        from bench.tasks.restoration.report import survey_layout

        return survey_layout(summary, reference)

    def header_notes(self, records, n_flagged, n_one_class):
        from bench.tasks.restoration.report import restoration_floor_note

        return restoration_floor_note(records, n_flagged)
