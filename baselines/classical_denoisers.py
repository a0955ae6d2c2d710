"""Classical, training-free denoisers: the floors a learned restoration method must beat.

- ``clip_input``: the degraded input clipped to the data range [0, 1]. Gaussian noise is
  not clipped by the degradation (``bench/data/paired.py``), so clipping alone already
  removes some error (at sigma 0.1: +0.85 dB on the package images' 32 px validation
  patches, +0.1-0.2 dB on BreastMNIST's 16 px ones).
- ``nlm``: non-local means (Buades et al. 2005; scikit-image ``denoise_nl_means``,
  ``fast_mode=True``), h = 0.8 sigma with sigma passed to the filter, as scikit-image's
  own example does for fast mode.

BM3D is not here: the ``bm3d`` package installs and runs (BreastMNIST, sigma 0.1, 24 test
patches: 25.4 dB against NLM's 24.5), but it wraps a closed-source binary (``bm4d``'s
``libbm4d.so``) licensed for non-commercial use only, which this project cannot depend on.

Both work on each image patch alone (``restore`` gets float [N, p, p, C], C = 1 or
3), with nothing learned and nothing shared between patches: NLM takes the noise
level of each patch from scikit-image's ``estimate_sigma`` (wavelet median absolute
deviation; averaged over channels), never from the suite's declared degradation, so it
stays blind like DnCNN-B. They denoise the raw input (the noise is not clipped) and clip
their output to [0, 1]; a patch with no noise to find (estimated sigma under 1e-6, e.g. a
flat one) comes back clipped.

NLM's patch and search sizes follow the patch side: scikit-image's defaults (patch 7,
search distance 11, a 23 x 23 window) are meant for whole images and are too wide for
16 px patches, so patches under 24 px use the 5 / 6 of scikit-image's NLM example.
Checked on validation patches (never test): on 16 px BreastMNIST patches (Gaussian
sigma 0.1) 5 / 6 gives 24.8 dB against 24.3 dB for 7 / 11; on the 32 px package patches (same
sigma) 7 / 11 gives 37.8 dB against 36.3 dB for 5 / 6. h = 0.8 sigma was the best of 0.6-1.2 at
16 px; at 32 px 1.0-1.2 sigma scored 0.1-0.8 dB more (most at sigma 0.25). 0.8 stays, as in
scikit-image's example, rather than a value tuned per suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.api.method import RestorationMethod, RunContext, register_method

SMALL_PATCH = 24  # patch side (px) below which NLM uses its small patch / search sizes


def _data_range(spec) -> float:
    return float(getattr(spec, "data_range", 1.0) or 1.0)


def _estimate_sigma(image: np.ndarray) -> float:
    """The noise std of one [H, W, C] image (averaged over channels), or 0 if none is found
    (under 1e-6: rounding error of a flat patch, not noise)."""
    from skimage.restoration import estimate_sigma

    sigma = float(estimate_sigma(image, channel_axis=-1, average_sigmas=True))
    return sigma if np.isfinite(sigma) and sigma > 1e-6 else 0.0


class _TrainingFree(RestorationMethod):
    """A restoration method with nothing to fit: ``restore`` applies ``denoise`` to each image."""

    def __init__(self, config, spec):
        super().__init__(config if config is not None else self.Config(), spec)

    def fit(self, train, val, ctx: RunContext) -> dict:
        return {"selection_metric": None, "note": "nothing to train"}

    def denoise(self, image: np.ndarray) -> np.ndarray:  # [H, W, C] float64 in, same shape out
        raise NotImplementedError

    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 4 or inputs.shape[-1] not in (1, 3):
            raise ValueError(
                f"{type(self).__name__}.restore: inputs must be [N, H, W, C] with C = 1 or 3, got {inputs.shape}"
            )
        top = _data_range(self.spec)
        out = np.empty_like(inputs)
        for i, image in enumerate(inputs):
            out[i] = np.clip(self.denoise(image.astype(np.float64)).reshape(image.shape), 0.0, top)
        return out


@dataclass
class ClipInputConfig:
    pass


@register_method("clip_input", "Floor: the degraded input clipped to [0, 1], no denoising")
class ClipInput(_TrainingFree):
    Config = ClipInputConfig

    def denoise(self, image: np.ndarray) -> np.ndarray:
        return image  # restore() clips


@dataclass
class NLMConfig:
    h_factor: float = 0.8  # h = h_factor * the estimated sigma (scikit-image's fast-mode example)
    patch_size: int | None = None  # None: 5 under 24 px patch side, else 7 (scikit-image's default)
    patch_distance: int | None = None  # None: 6 under 24 px, else 11


@register_method(
    "nlm",
    "Floor: non-local means (scikit-image, fast mode, sigma estimated per image), training-free",
)
class NLM(_TrainingFree):
    Config = NLMConfig

    def sizes(self, side: int) -> tuple[int, int]:
        small = side < SMALL_PATCH
        cfg = self.config
        return (cfg.patch_size or (5 if small else 7), cfg.patch_distance or (6 if small else 11))

    def denoise(self, image: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        sigma = _estimate_sigma(image)
        if sigma == 0.0:
            return image
        patch_size, patch_distance = self.sizes(min(image.shape[:2]))
        colour = image.shape[-1] == 3
        return denoise_nl_means(
            image if colour else image[..., 0],
            h=self.config.h_factor * sigma,
            sigma=sigma,
            fast_mode=True,
            patch_size=patch_size,
            patch_distance=patch_distance,
            channel_axis=-1 if colour else None,
        )
