"""DnCNN (Zhang et al., TIP 2017): 17 conv layers of 64 channels (conv-BN-ReLU in the
middle), residual learning (the network predicts the noise; output = input - noise),
MSE, Adam 1e-3. Trained on all noise levels of its data, it is the blind "DnCNN-B" of
the survey's Table 12.

``padding_mode``: "zeros" (the paper's) pads every 3x3 conv with zeros, which on the
suite's small patches leaves a dark or bright rim (17 layers see 17 px of border);
"reflect" pads by reflection, under which a flat patch stays flat to its edges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.api.errors import BenchError
from bench.api.method import RestorationMethod, RunContext, register_method
from bench.nn.image_to_image import restore_batched, train_image_to_image


@dataclass
class DnCNNConfig:
    depth: int = 17
    width: int = 64
    padding_mode: str = "zeros"  # "zeros" (paper) | "reflect" (no rim on small patches)
    lr: float = 1e-3
    eval_every: int = 1


class DnCNNNet(nn.Module):
    def __init__(self, channels: int, depth: int, width: int, padding_mode: str = "zeros"):
        super().__init__()
        if padding_mode not in ("zeros", "reflect"):
            raise BenchError(
                f"dncnn: padding_mode must be 'zeros' or 'reflect', not {padding_mode!r}"
            )
        pad = {"padding": 1, "padding_mode": padding_mode}
        layers = [nn.Conv2d(channels, width, 3, **pad), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(width, width, 3, bias=False, **pad),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, channels, 3, **pad))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)  # residual: the body estimates the noise


@register_method("dncnn", "DnCNN (blind, residual learning): 17 conv layers predicting the noise")
class DnCNN(RestorationMethod):
    Config = DnCNNConfig

    def fit(self, train, val, ctx: RunContext) -> dict:
        cfg = self.config
        self.net = DnCNNNet(self.spec.channels, cfg.depth, cfg.width, cfg.padding_mode).to(
            ctx.device
        )
        return train_image_to_image(
            self.net,
            lambda x, y: F.mse_loss(self.net(x).float(), y),
            lambda inputs: self.restore(inputs, ctx),
            train,
            val,
            ctx,
            lr=cfg.lr,
            eval_every=cfg.eval_every,
            desc="DnCNN",
        )

    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        self.net.eval()
        return restore_batched(self.net, inputs, ctx)
