"""Image-conditioned diffusion for restoration (denoising, modality conversion), the
IDDPM-style model of the survey's Tables 9, 10 and 12: a DDPM U-Net (diffusers
``UNet2DModel``) predicts the noise of x_t given the degraded image concatenated as
extra input channels (SR3 / Palette style); cosine noise schedule (Improved DDPM);
DDIM sampling (eta 0) from pure noise to the restored image. Learned variances, the
other half of IDDPM, are not used (DDIM does not need them). Weights are selected on
validation PSNR of sampled restorations; ``ema_decay`` (None by default) validates and
restores with a weight average instead, as IDDPM samples from one (0.9999)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.api.errors import BenchError
from bench.api.method import RestorationMethod, RunContext, register_method
from bench.nn.diffusion import diffusers_unet, reverse_process
from bench.nn.ema import with_ema
from bench.nn.image_to_image import restore_batched, to_device, train_image_to_image
from bench.nn.noise_floor import floor_block, shrinkage_mse
from bench.train.batches import batches

SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


@dataclass
class DiffusionRestorerConfig:
    block_out_channels: tuple = (64, 128, 128, 128)
    layers_per_block: int = 2
    attention_resolution: int = 8
    norm_num_groups: int = 32
    dropout: float = 0.1
    timesteps: int = 1000
    schedule: str = "cosine"  # Improved DDPM's; "linear" = Ho et al.'s 1e-4..0.02
    lr: float = 1e-4
    sampling_steps: int = 50
    num_samples: int = (
        1  # posterior samples averaged per image (1: one sample, as scored before this option)
    )
    eval_every: int = 5
    ema_decay: float | None = None  # an EMA of the weights validates and restores (bench/nn/ema.py)

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        if self.schedule not in SCHEDULES:
            raise BenchError(
                f"diffusion_restorer schedule must be one of {sorted(SCHEDULES)}, not {self.schedule!r}"
            )
        if self.num_samples < 1:
            raise BenchError(
                f"diffusion_restorer num_samples must be at least 1, not {self.num_samples}"
            )


@register_method(
    "diffusion_restorer",
    "Image-conditioned DDPM (cosine schedule, IDDPM-style), DDIM sampling: denoising / translation",
)
class DiffusionRestorer(RestorationMethod):
    Config = DiffusionRestorerConfig

    def schedulers(self):
        from diffusers import DDIMScheduler, DDPMScheduler

        cfg = self.config
        kw = dict(
            num_train_timesteps=cfg.timesteps,
            beta_schedule=SCHEDULES[cfg.schedule],
            clip_sample=True,
        )
        return DDPMScheduler(**kw), DDIMScheduler(**kw, set_alpha_to_one=True)

    def fit(self, train, val, ctx: RunContext) -> dict:
        cfg, ch = self.config, self.spec.channels
        unet = diffusers_unet(
            self.spec.size,
            2 * ch,
            ch,
            cfg.block_out_channels,
            cfg.layers_per_block,
            cfg.attention_resolution,
            cfg.norm_num_groups,
            cfg.dropout,
        ).to(ctx.device)
        trained, self.unet, update_ema = with_ema(unet, cfg.ema_decay)  # self.unet restores
        ddpm, _ = self.schedulers()
        gen = torch.Generator().manual_seed(ctx.seed + 53)

        def loss(x, y):  # x: degraded, y: target, both on [0, 1]
            x0, cond = y * 2 - 1, x * 2 - 1
            t = torch.randint(0, cfg.timesteps, (len(x0),), generator=gen).to(x0.device)
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            x_t = ddpm.add_noise(x0, noise, t)
            return F.mse_loss(unet(torch.cat([x_t, cond], dim=1), t).sample.float(), noise)

        summary = train_image_to_image(
            trained,
            loss,
            lambda inputs: self.restore(inputs, ctx),
            train,
            val,
            ctx,
            lr=cfg.lr,
            eval_every=cfg.eval_every,
            generators=(gen,),
            after_step=update_ema,
            desc="diffusion restorer",
        )
        return {**summary, "noise_floor": self.noise_floor(train, val, ctx)}

    @torch.no_grad()
    def noise_floor(self, train, val, ctx: RunContext, limit: int = 256) -> dict:
        """The restoring weights' noise loss on a fixed validation probe (its targets, their
        degraded inputs, fixed t and noise) against the per-pixel linear denoiser's, which
        knows the training targets' pixel means and variances but not the degraded input:
        a conditional model that does not beat it has learned nothing (bench/nn/noise_floor.py)."""
        ddpm, _ = self.schedulers()
        idx = np.linspace(0, len(val) - 1, min(limit, len(val))).round().astype(int)
        gen = torch.Generator().manual_seed(1234)
        x0 = to_device(val.targets[idx], "cpu") * 2 - 1
        t = torch.randint(0, self.config.timesteps, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        self.unet.eval()
        total = 0.0
        for chunk in batches(len(idx), ctx.budget.eval_batch_size):
            cond = to_device(val.inputs[idx[chunk]], ctx.device) * 2 - 1
            x_t = ddpm.add_noise(x0[chunk], noise[chunk], t[chunk]).to(ctx.device)
            with ctx.accelerator.autocast():
                eps = self.unet(torch.cat([x_t, cond], dim=1), t[chunk].to(ctx.device)).sample
            total += ((eps.float().cpu() - noise[chunk]) ** 2).sum().item()
        targets = (
            torch.from_numpy(np.asarray(train.targets, np.float64)).permute(0, 3, 1, 2) * 2 - 1
        )
        floor = shrinkage_mse(
            targets.mean(0), targets.var(0, unbiased=False), x0, t, noise, ddpm.alphas_cumprod
        )
        return floor_block(floor, total / noise.numel(), "per pixel")

    @torch.no_grad()
    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        self.unet.eval()
        _, ddim = self.schedulers()
        ddim.set_timesteps(self.config.sampling_steps)
        gen = torch.Generator().manual_seed(ctx.seed + 59)

        def run(
            x,
        ):  # the mean of num_samples restorations: the posterior mean, the MSE-optimal estimate
            cond = x * 2 - 1
            total = torch.zeros_like(cond)
            for _ in range(self.config.num_samples):
                z = torch.randn(cond.shape, generator=gen).to(cond.device)
                z = reverse_process(
                    lambda z_t, t: self.unet(torch.cat([z_t, cond], dim=1), t).sample, z, ddim
                )
                total += (z.clamp(-1, 1) + 1) / 2
            return total / self.config.num_samples

        return restore_batched(run, np.asarray(inputs), ctx)
