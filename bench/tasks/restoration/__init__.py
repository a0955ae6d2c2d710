"""Restoration: image-to-image methods (denoising, modality conversion) on paired patches."""

from __future__ import annotations

import numpy as np

from bench.api.method import RunContext, Scored
from bench.api.task import ScoringRun, Task, register_task


@register_task
class RestorationTask(Task):
    """Restored patches, scored per image (PSNR, SSIM) against their clean targets."""

    name = "restoration"

    def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
        from bench.tasks.restoration.scoring import score_restoration_unit

        return score_restoration_unit(method, bundle, ctx)

    def infer(self, method, split, ctx: RunContext):
        return method.restore(split.inputs, ctx)

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
