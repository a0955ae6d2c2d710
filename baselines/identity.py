"""No restoration: the degraded input itself. It scores the degradation (e.g. 20 dB
PSNR for Gaussian noise of sigma 0.1), the floor every restoration method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.api.method import RestorationMethod, RunContext, register_method


@dataclass
class IdentityConfig:
    pass


@register_method("identity", "No restoration: the degraded input itself (the floor to beat)")
class Identity(RestorationMethod):
    Config = IdentityConfig

    def fit(self, train, val, ctx: RunContext) -> dict:
        return {"selection_metric": None, "note": "nothing to train"}

    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        return np.asarray(inputs, dtype=np.float32).copy()
