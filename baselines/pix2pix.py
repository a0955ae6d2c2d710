"""Pix2pix (Isola et al., CVPR 2017): a U-Net generator (4x4 stride-2 convs, skips,
dropout 0.5 in the three innermost decoder blocks) and a PatchGAN discriminator on
(input, output) pairs, trained with the GAN (binary cross-entropy) loss plus
lambda_L1 = 100 times the L1 distance to the target; Adam 2e-4, betas (0.5, 0.999).
The U-Net's depth follows the patch size (down to 1 x 1), so 32 px patches have 5
levels where the paper's 256 px images have 8. Weights are selected on validation PSNR.

``upsampling``: "transpose" (the paper's 4x4 stride-2 transposed convolutions, whose
uneven overlap prints a checkerboard on flat regions) or "resize" (nearest-neighbour x2
then a 3x3 convolution, Odena et al. 2016, which cannot make one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.api.errors import BenchError, TrainingError
from bench.api.method import RestorationMethod, RunContext, register_method
from bench.nn.image_to_image import restore_batched, to_device, validation_psnr
from bench.train.batches import Schedule
from bench.train.training import Optimisation, Validation, train_loop


@dataclass
class Pix2pixConfig:
    width: int = 64
    lambda_l1: float = 100.0
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    disc_layers: int = 3  # PatchGAN depth (3 = the paper's 70 x 70 receptive field)
    upsampling: str = "transpose"  # "transpose" (paper) | "resize" (no checkerboard)
    eval_every: int = 1


def upsample_conv(cin: int, cout: int, how: str, bias: bool) -> nn.Module:
    """x2 upsampling with a learned convolution, as a transposed conv or resize + conv."""
    if how == "transpose":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1, bias=bias))


class UNetGenerator(nn.Module):
    def __init__(self, channels: int, size: int, width: int, upsampling: str = "transpose"):
        super().__init__()
        if upsampling not in ("transpose", "resize"):
            raise BenchError(
                f"pix2pix: upsampling must be 'transpose' or 'resize', not {upsampling!r}"
            )
        levels = int(math.log2(size))
        if 2**levels != size or levels < 2:
            raise BenchError(f"pix2pix: patch size must be a power of two >= 4, got {size}")
        chans = [min(width * 2**i, width * 8) for i in range(levels)]
        self.down = nn.ModuleList()
        cin = channels
        for i, c in enumerate(chans):
            layers = [nn.LeakyReLU(0.2)] if i else []
            layers.append(nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=False))
            if 0 < i < levels - 1:
                layers.append(nn.BatchNorm2d(c))
            self.down.append(nn.Sequential(*layers))
            cin = c
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            cout = chans[i - 1] if i else channels
            cin_up = chans[i] if i == levels - 1 else 2 * chans[i]
            layers = [nn.ReLU(), upsample_conv(cin_up, cout, upsampling, bias=i == 0)]
            if i:
                layers.append(nn.BatchNorm2d(cout))
                if i >= levels - 3:
                    layers.append(nn.Dropout(0.5))
            else:
                layers.append(nn.Tanh())
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for i, block in enumerate(self.up):
            x = block(x if i == 0 else torch.cat([x, skips.pop()], dim=1))
        return x


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int, width: int, layers: int):
        super().__init__()
        mods = [nn.Conv2d(2 * channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers):
            n = min(width * 2**i, width * 8)
            mods += [
                nn.Conv2d(c, n, 4, stride=2 if i < layers - 1 else 1, padding=1, bias=False),
                nn.BatchNorm2d(n),
                nn.LeakyReLU(0.2),
            ]
            c = n
        mods.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], dim=1))


@register_method("pix2pix", "Pix2pix: U-Net generator + PatchGAN, GAN + 100 x L1 loss")
class Pix2pix(RestorationMethod):
    Config = Pix2pixConfig

    def fit(self, train, val, ctx: RunContext) -> dict:
        """GAN + L1 steps through the shared loop: each step updates the PatchGAN inside
        the step, then the generator; the generator is selected on validation PSNR."""
        cfg, ch = self.config, self.spec.channels
        self.G = UNetGenerator(ch, self.spec.size, cfg.width, cfg.upsampling).to(ctx.device)
        D = PatchDiscriminator(ch, cfg.width, cfg.disc_layers).to(ctx.device)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        budget = ctx.budget
        schedule = Schedule.of_budget(len(train), budget)
        gen = torch.Generator().manual_seed(ctx.seed + 47)
        bce = F.binary_cross_entropy_with_logits

        def step(idx):
            x = to_device(train.inputs[idx], ctx.device) * 2 - 1  # the GAN works on [-1, 1]
            y = to_device(train.targets[idx], ctx.device) * 2 - 1
            with ctx.accelerator.autocast():
                fake = self.G(x)
                real_logits, fake_logits = D(x, y), D(x, fake.detach())
                d_loss = 0.5 * (
                    bce(real_logits, torch.ones_like(real_logits))
                    + bce(fake_logits, torch.zeros_like(fake_logits))
                )
            if not torch.isfinite(d_loss):
                raise TrainingError(f"pix2pix: the discriminator's loss became {d_loss.item()}")
            opt_d.zero_grad(set_to_none=True)
            ctx.accelerator.backward(d_loss)
            opt_d.step()
            with ctx.accelerator.autocast():
                logits = D(x, fake)
                return bce(logits, torch.ones_like(logits)).float() + cfg.lambda_l1 * F.l1_loss(
                    fake.float(), y
                )

        return train_loop(
            nn.ModuleDict({"G": self.G, "D": D}),
            step,
            ctx,
            schedule,
            Optimisation(opt_g),
            Validation(
                lambda: validation_psnr(lambda a: self.restore(a, ctx), val),
                "psnr",
                every=cfg.eval_every,
            ),
            generators=(gen,),
            stateful=(opt_d,),
            desc="pix2pix",
        )

    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        self.G.eval()
        return restore_batched(lambda x: (self.G(x * 2 - 1) + 1) / 2, inputs, ctx)
