"""The floor of a diffusion model's own training: what the best *per-pixel linear*
denoiser scores on the model's validation noise loss.

For x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, with each pixel's mean mu and variance s2 over
the training images, the best affine estimate of eps from x_t, pixel by pixel, is

    eps_hat = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s2 + 1 - ab),

a "shrinkage" that needs no training at all. A network whose validation noise loss is not
below this one's, on the same images, timesteps and noises, has not learned anything a
per-pixel average does not know: its diffusion stage is untrained (issue 34: D-Cube's
stage 1 at 120 steps ended about 3x above it)."""

from __future__ import annotations

import numpy as np
import torch

from bench.train.batches import batches, to_device_batch


@torch.no_grad()
def pixel_moments(images: np.ndarray, size: int | None, batch: int = 512):
    """(mean, variance) per pixel [C, H, W] of uint8 images as the models see them
    ([-1, 1], at `size`), in float64."""
    total = total_sq = None
    for idx in batches(len(images), batch):
        x = to_device_batch(images[idx], "cpu", size).double()
        s, sq = x.sum(0), (x * x).sum(0)
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
    mean = total / len(images)
    return mean, (total_sq / len(images) - mean**2).clamp_min(0)


@torch.no_grad()
def linear_denoiser_mse(
    train_images: np.ndarray,
    probe_images: np.ndarray,
    probe_t: torch.Tensor,
    probe_noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    size: int | None,
) -> float:
    """Mean squared error per pixel of the per-pixel linear denoiser's noise estimate on a
    validation probe (its images, timesteps and noises), with moments from the training
    images; multiply by the pixels of an image for a per-image sum."""
    mean, var = pixel_moments(train_images, size)
    x0 = to_device_batch(probe_images, "cpu", size)
    return shrinkage_mse(mean, var, x0, probe_t, probe_noise, alphas_cumprod)


@torch.no_grad()
def shrinkage_mse(
    mean: torch.Tensor,
    var: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> float:
    """The linear denoiser's mean squared noise error on clean images `x0` [B, C, H, W] as
    the model sees them, given per-pixel `mean` and `var` [C, H, W] of its training data."""
    x0, noise = x0.double().cpu(), noise.double().cpu()
    ab = alphas_cumprod.double().cpu()[t.cpu()].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    eps_hat = (1 - ab).sqrt() * (x_t - ab.sqrt() * mean) / (ab * var + 1 - ab)
    return float(((eps_hat - noise) ** 2).mean())


def floor_block(floor: float, best: float | None, unit: str) -> dict:
    """A record's ``noise_floor`` block: the floor, the model's best validation noise
    loss, and whether it beat the floor (an untrained diffusion stage when not)."""
    return {
        "linear_denoiser": floor,
        "best_val": best,
        "unit": unit,
        "beaten": best is not None and best < floor,
    }
