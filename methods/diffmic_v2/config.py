"""DiffMIC-v2's options with the paper's defaults (the authors' code behind named options)
and the components of the paper's Table IV ablations (C1-C6, full)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bench.api.errors import BenchError


class Components(NamedTuple):
    diffusion: bool
    guidance: str  # none | global | local | dense  (what the denoiser sees beside y_t)
    image_prior: str  # raw (C1's embedding of the image: the DCG's global trunk) | fused (F, eq. 6)
    heterologous: bool  # per-point t and noise, else one t per image


ABLATIONS = {  # paper Table IV
    "C1": Components(False, "none", "raw", False),
    "C2": Components(True, "none", "raw", False),
    "C3": Components(True, "global", "raw", False),
    "C4": Components(True, "local", "raw", False),
    "C5": Components(True, "none", "fused", False),
    "C6": Components(True, "dense", "fused", False),
    "full": Components(True, "dense", "fused", True),
}


@dataclass
class DiffMICv2Config:
    ablation: str = "full"  # C1..C6 or full (paper Table IV)
    image_size: int | None = 224  # inputs resized to this (None: the data's own size)
    num_points: int = 6  # N_p: the label grid is N_p x N_p
    num_rois: int = 6  # K (the authors' code uses N_p = K)
    roi_size: int = 32  # ROI tile side in pixels of the resized image
    latent_dim: int = 6144  # H
    timesteps: int = 1000  # T
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sampling_steps: int = 10  # DDIM
    sample_init: str = "paper"  # paper: y_T ~ N(M, I) | authors: interpolated uniform random priors
    ddim_eps: str = "rederived"  # rederived: eps from the clipped x0 in the DDIM direction | authors: the raw eps
    readout: str = "softmax"  # softmax of the grid means / readout_temperature | clamp: clip to [0, 1], renormalise
    readout_temperature: float = 0.1
    denoiser: str = "authors"  # authors | unet2d
    unet_width: int = 256
    dcg_backbone: str = "resnet18"
    dcg_small_stem: bool = False  # 3x3/1 stems for 28 px inputs
    dcg_lr: float = 2e-4
    dcg_epochs: int = 100
    dcg_batch_size: int = 64
    global_encoder: str = "vit_small_patch16_224"  # stands in for EfficientSAM ViT-S
    global_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    roi_encoder: str = "resnet18"
    roi_encoder_small_stem: bool = False
    lr: float = 1e-3  # Adam, cosine to lr_min over training
    lr_min: float = 1e-5
    focal_alpha: float = 10.0
    focal_gamma: float = 1.0
    augment: bool = True  # random flips and 90-degree rotations
    eval_every: int = 5  # validation sampling every n epochs (the authors: 5)
    recompute_conditions: bool = False  # the authors' inference: encoders re-run every step
    save_trajectory: bool = (
        False  # keep the denoised label grid after every DDIM step (paper Fig. 5 t-SNE)
    )


def components(cfg: DiffMICv2Config) -> Components:
    if cfg.ablation not in ABLATIONS:
        raise BenchError(
            f"diffmic_v2: ablation must be one of {list(ABLATIONS)}, not {cfg.ablation!r}"
        )
    if cfg.sample_init not in ("authors", "paper"):
        raise BenchError(
            f"diffmic_v2: sample_init must be 'authors' or 'paper', not {cfg.sample_init!r}"
        )
    if cfg.ddim_eps not in ("rederived", "authors"):
        raise BenchError(
            f"diffmic_v2: ddim_eps must be 'rederived' or 'authors', not {cfg.ddim_eps!r}"
        )
    if cfg.readout not in ("softmax", "clamp") or not cfg.readout_temperature > 0:
        raise BenchError(
            f"diffmic_v2: readout must be 'softmax' or 'clamp' with readout_temperature > 0, "
            f"not {cfg.readout!r} at {cfg.readout_temperature!r}"
        )
    if cfg.denoiser not in ("authors", "unet2d"):
        raise BenchError(
            f"diffmic_v2: denoiser must be 'authors' or 'unet2d', not {cfg.denoiser!r}"
        )
    return ABLATIONS[cfg.ablation]
