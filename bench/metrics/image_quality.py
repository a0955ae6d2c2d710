"""Restoration metrics per image, on a declared data range (scikit-image for PSNR and
SSIM): PSNR, SSIM, NMAE (mean absolute error / data range) and RMSE (in data-range
units), so that paired tests between methods apply image by image."""

from __future__ import annotations

import numpy as np

from bench.api.errors import BenchError
from bench.metrics.metric import register_metric

# in table order (the survey's: RMSE or NMAE, then PSNR, SSIM)
for _name, _text, _meta in (
    ("rmse", "root mean squared error in data-range units (lower is better)", {"higher_is_better": False, "decimals": 4}),
    ("nmae", "mean absolute error / data range (lower is better)", {"higher_is_better": False}),
    ("psnr", "peak signal-to-noise ratio in dB on the declared data range (scikit-image)", {"decimals": 2, "headline": True}),
    ("ssim", "structural similarity (scikit-image, 7 px window, per channel)", {"headline": True}),
):  # fmt: skip
    register_metric(
        _name, _text, tasks=("restoration",), computed_by="per_image_quality, per image", **_meta
    )


def per_image_quality(
    outputs: np.ndarray, targets: np.ndarray, data_range: float = 1.0
) -> dict[str, np.ndarray]:
    """outputs, targets: float [N, H, W, C]; returns one value per image per metric."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    outputs, targets = np.asarray(outputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if outputs.shape != targets.shape or outputs.ndim != 4:
        raise BenchError(
            f"restoration metrics: outputs {outputs.shape} and targets {targets.shape} must both be [N, H, W, C]"
        )
    if not np.isfinite(outputs).all():
        raise BenchError("restoration metrics: outputs contain NaN or infinite values")
    side = min(outputs.shape[1:3])
    win = min(7, side if side % 2 else side - 1)
    err = outputs - targets
    psnr = np.array(
        [peak_signal_noise_ratio(t, o, data_range=data_range) for o, t in zip(outputs, targets)]
    )
    ssim = np.array(
        [
            structural_similarity(t, o, data_range=data_range, channel_axis=-1, win_size=win)
            for o, t in zip(outputs, targets)
        ]
    )
    return {
        "psnr": psnr,
        "ssim": ssim,
        "nmae": np.abs(err).mean(axis=(1, 2, 3)) / data_range,
        "rmse": np.sqrt((err**2).mean(axis=(1, 2, 3))) / data_range,
    }
