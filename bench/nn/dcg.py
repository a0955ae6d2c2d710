"""The DCG prior model of DiffMIC / DiffMIC-v2 (global saliency map, top-K ROI tiles,
local branch with gated attention), after the authors' ``pretraining/`` code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from bench.api.method import RunContext
from bench.nn.encoders import GatedAttention, crop_tiles, feature_map, select_roi_cells, timm_trunk
from bench.nn.labels import prior_probabilities
from bench.nn.priors import batched_inference, fit_prior


@dataclass
class DCGOutput:
    fused: torch.Tensor  # [B, C] logits: 0.5 (global + local), as in the authors' code
    global_: torch.Tensor  # [B, C] mean of the saliency map
    local: torch.Tensor  # [B, C] from the gated-attention pooled ROI features
    rois: torch.Tensor  # [B, K, ch, r, r] the cropped tiles
    roi_attention: torch.Tensor  # [B, K]
    saliency: torch.Tensor  # [B, C, h, w]
    global_feature: torch.Tensor  # [B, F] the global trunk's mean-pooled features


class DCG(nn.Module):
    """Dual-granularity conditional guidance model (DiffMIC / DiffMIC-v2).

    Global branch: trunk -> 1x1 conv (no bias) -> C-channel saliency map; global prior =
    its mean. Local branch: K tiles of `roi_size` px at the most salient cells -> trunk
    -> gated attention -> linear (no bias) -> local prior. Priors are logits.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        backbone: str = "resnet18",
        small_input_stem: bool = False,
        num_rois: int = 6,
        roi_size: int = 32,
        attn_dim: int = 128,
    ):
        super().__init__()
        self.num_rois, self.roi_size = num_rois, roi_size
        self.global_trunk = timm_trunk(backbone, in_chans, small_input_stem)
        self.saliency = nn.Conv2d(
            self.global_trunk.num_features, num_classes, kernel_size=1, bias=False
        )
        self.local_trunk = timm_trunk(backbone, in_chans, small_input_stem)
        self.attention = GatedAttention(self.local_trunk.num_features, attn_dim)
        self.local_head = nn.Linear(self.local_trunk.num_features, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> DCGOutput:
        trunk = feature_map(self.global_trunk, x)
        saliency = self.saliency(trunk)
        y_global = saliency.mean(dim=(2, 3))  # = the 1x1 conv of the pooled trunk features
        h, w = saliency.shape[-2:]
        window = max(1, int(round(self.roi_size * h / x.shape[-2])))
        cells = select_roi_cells(saliency, self.num_rois, window)
        rois = crop_tiles(x, cells, (h, w), self.roi_size)
        b, k = rois.shape[:2]
        r = self.local_trunk(rois.reshape(b * k, *rois.shape[2:])).reshape(b, k, -1)
        z, alpha = self.attention(r)
        y_local = self.local_head(z)
        return DCGOutput(
            0.5 * (y_global + y_local),
            y_global,
            y_local,
            rois,
            alpha,
            saliency,
            trunk.mean(dim=(2, 3)),
        )


def dcg_prior_predictions(
    dcg: nn.Module, split, ctx: RunContext, image_size: int | None, multilabel: bool
) -> dict[str, np.ndarray]:
    """A DCG's own predictions (global, local and fused branches) on a split."""
    dcg.eval()
    with torch.no_grad():
        out = batched_inference(
            lambda x: torch.stack([(o := dcg(x)).global_, o.local, o.fused], dim=1),
            split.images,
            ctx,
            image_size,
        )
    return {
        f"DCG {name}": prior_probabilities(out[:, i], multilabel).numpy().astype(np.float64)
        for i, name in enumerate(("global", "local", "fused"))
    }


def fit_dcg(dcg: DCG, loss_fn, train, val, ctx: RunContext, spec, cfg, *, epochs, batch_size):
    """`fit_prior` for a DCG (DiffMIC and DiffMIC-v2): selected on the validation AUROC
    of its fused logits, at the method's `dcg_lr`, `image_size` and `augment`."""
    return fit_prior(
        dcg, loss_fn, lambda x: dcg(x).fused, train, val, ctx, spec, lr=cfg.dcg_lr,
        epochs=epochs, batch_size=batch_size, image_size=cfg.image_size, augment=cfg.augment,
        desc="DCG",
    )  # fmt: skip
