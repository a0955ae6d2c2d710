"""CARD's denoiser (Han et al. 2022), shared by CARD and DiffMIC: an image encoder whose
pooled feature scales a time-conditioned MLP on [y_t, prior]."""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.nn.encoders import PooledEncoder
from bench.nn.heads import TimeScaledMLP


class CARDNet(nn.Module):
    def __init__(
        self, encoder: str, in_chans: int, feature_dim: int, small_input_stem: bool,
        num_classes: int, timesteps: int,
    ):  # fmt: skip
        super().__init__()
        self.encoder = PooledEncoder(encoder, in_chans, feature_dim, small_input_stem)
        self.norm = nn.BatchNorm1d(feature_dim)
        self.head = TimeScaledMLP(2 * num_classes, feature_dim, num_classes, timesteps + 1)

    @classmethod
    def from_config(cls, cfg, num_classes: int, in_chans: int) -> CARDNet:
        """From a method config with `encoder`, `feature_dim`, `small_input_stem`, `timesteps`."""
        return cls(
            cfg.encoder, in_chans, cfg.feature_dim, cfg.small_input_stem, num_classes, cfg.timesteps
        )

    def feature(self, x):
        return self.norm(self.encoder(x))

    def forward(self, y_t, t, prior, feature):
        """y_t [B, C] at t [B], or D draws per image: y_t [B, D, C] at t [B, D]."""
        if y_t.dim() == 2:
            return self.forward(y_t[:, None], t[:, None], prior, feature)[:, 0]
        return self.head(torch.cat([y_t, prior[:, None].expand_as(y_t)], dim=2), t, feature)
