"""A conditional GAN baseline for the generation suite: a DCGAN-style generator with a
class embedding concatenated to the latent, and a spectrally normalised discriminator
with a projection head (Miyato & Koyama 2018), trained with the hinge loss.

It stands in for the ODM paper's StyleGAN2 and is named for what it is: this is not
StyleGAN2 (no mapping network, style modulation, path-length regularisation).
Trained for the suite's budget; the last generator is kept (no validation metric
selects a GAN checkpoint here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from bench.api.dataset import SplitData
from bench.api.errors import BenchError, TrainingError
from bench.api.method import GenerationMethod, RunContext, register_method
from bench.train.batches import Schedule, batches, from_device_batch, to_device_batch
from bench.train.training import Optimisation, train_loop


@dataclass
class ConditionalGANConfig:
    image_size: int = 64  # a power of two >= 8; data of another size is resized
    latent_dim: int = 128
    width: int = 64  # channels of the last generator / first discriminator block
    lr: float = 2e-4
    betas: tuple = (0.0, 0.9)
    d_steps: int = 1  # discriminator updates per generator update
    sample_batch: int = 256


def _levels(size: int) -> int:
    if size < 8 or size & (size - 1):
        raise BenchError(f"cgan: image_size must be a power of two >= 8, got {size}")
    return int(np.log2(size)) - 2  # upsamplings from 4 x 4


class Generator(nn.Module):
    def __init__(self, cfg: ConditionalGANConfig, channels: int, num_classes: int):
        super().__init__()
        n = _levels(cfg.image_size)
        chans = [cfg.width * 2 ** min(i, 3) for i in reversed(range(n + 1))]
        self.embed = nn.Embedding(num_classes, cfg.latent_dim)
        self.fc = nn.Linear(2 * cfg.latent_dim, chans[0] * 16)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.BatchNorm2d(a),
                    nn.ReLU(),
                    nn.Upsample(scale_factor=2),
                    nn.Conv2d(a, b, 3, padding=1),
                )
                for a, b in zip(chans, chans[1:])
            )
        )
        self.out = nn.Sequential(
            nn.BatchNorm2d(chans[-1]),
            nn.ReLU(),
            nn.Conv2d(chans[-1], channels, 3, padding=1),
            nn.Tanh(),
        )
        self.c0 = chans[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(len(z), self.c0, 4, 4)
        return self.out(self.blocks(h))


class Discriminator(nn.Module):
    def __init__(self, cfg: ConditionalGANConfig, channels: int, num_classes: int):
        super().__init__()
        n = _levels(cfg.image_size)
        chans = [cfg.width * 2 ** min(i, 3) for i in range(n + 1)]
        layers = [spectral_norm(nn.Conv2d(channels, chans[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for a, b in zip(chans, chans[1:]):
            layers += [spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(chans[-1], 1))
        self.project = spectral_norm(nn.Embedding(num_classes, chans[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.project(y) * h).sum(dim=1)


@register_method(
    "cgan",
    "Conditional GAN (DCGAN generator, projection discriminator with spectral norm, hinge loss); not StyleGAN2",
)
class ConditionalGAN(GenerationMethod):
    Config = ConditionalGANConfig

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        """Hinge-loss GAN steps through the shared loop: each step updates D (`d_steps`
        times) inside the step, then G; no validation, the last generator is kept."""
        cfg, C, ch = self.config, self.spec.num_classes, self.spec.channels
        self.G = Generator(cfg, ch, C).to(ctx.device)
        self.D = Discriminator(cfg, ch, C).to(ctx.device)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        budget = ctx.budget
        schedule = Schedule.of_budget(len(train), budget)
        gen = torch.Generator().manual_seed(ctx.seed + 37)

        def step(idx):
            real = to_device_batch(train.images[idx], ctx.device, cfg.image_size)
            y = torch.as_tensor(train.labels[idx], device=ctx.device).long()
            for _ in range(cfg.d_steps):
                z = torch.randn(len(idx), cfg.latent_dim, generator=gen).to(ctx.device)
                with ctx.accelerator.autocast():
                    fake = self.G(z, y).detach()
                    d_loss = F.relu(1 - self.D(real, y)).mean() + F.relu(1 + self.D(fake, y)).mean()
                if not torch.isfinite(d_loss):
                    raise TrainingError(f"cgan: the discriminator's loss became {d_loss.item()}")
                opt_d.zero_grad(set_to_none=True)
                ctx.accelerator.backward(d_loss)
                opt_d.step()
            z = torch.randn(len(idx), cfg.latent_dim, generator=gen).to(ctx.device)
            with ctx.accelerator.autocast():
                return -self.D(self.G(z, y), y).mean().float()

        summary = train_loop(
            nn.ModuleDict({"G": self.G, "D": self.D}),
            step,
            ctx,
            schedule,
            Optimisation(opt_g),
            generators=(gen,),
            stateful=(opt_d,),
            desc="cgan",
        )
        return {**summary, "selection": "last generator"}

    @torch.no_grad()
    def sample(
        self, labels: np.ndarray, ctx: RunContext, generator: torch.Generator | None = None
    ) -> np.ndarray:
        cfg = self.config
        self.G.eval()
        generator = generator or torch.Generator().manual_seed(ctx.seed + 41)
        out = []
        for idx in batches(len(labels), cfg.sample_batch):
            y = torch.as_tensor(np.asarray(labels)[idx], device=ctx.device).long()
            z = torch.randn(len(idx), cfg.latent_dim, generator=generator).to(ctx.device)
            with ctx.accelerator.autocast():
                out.append(self.G(z, y).float().cpu())
        return from_device_batch(torch.cat(out), self.spec.size)
