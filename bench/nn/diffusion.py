"""Noise schedules, forward noising and reverse processes of the diffusion methods
(diffusers schedulers; label diffusion with a prior mean, as in CARD and DiffMIC),
and the diffusers DDPM U-Net of the image-diffusion methods (ODM, the restorer)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def ddim_scheduler(timesteps: int, beta_start: float, beta_end: float, clip_sample: bool = True):
    """diffusers DDIM with linear betas; x0 clipped to [-1, 1], alpha_prev(0) = 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        clip_sample=clip_sample,
        set_alpha_to_one=True,
    )


def ddpm_scheduler(timesteps: int, beta_start: float, beta_end: float):
    """diffusers DDPM (posterior variance, no clipping), as CARD's reverse chain."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        clip_sample=False,
        variance_type="fixed_small",
    )


def diffusers_unet(
    size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels,
    layers_per_block: int,
    attention_resolution: int,
    norm_num_groups: int,
    dropout: float,
    num_class_embeds: int | None = None,
):
    """Ho et al.'s DDPM U-Net as diffusers ``UNet2DModel``: residual blocks, self-attention
    at the level whose feature map is `attention_resolution` px, optional class embeddings."""
    from diffusers import UNet2DModel

    attn = [size // 2**i == attention_resolution for i in range(len(block_out_channels))]
    return UNet2DModel(
        sample_size=size,
        in_channels=in_channels,
        out_channels=out_channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        norm_num_groups=norm_num_groups,
        dropout=dropout,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        num_class_embeds=num_class_embeds,
    )


def q_sample(
    alphas_cumprod: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """sqrt(ab_t) y0 + sqrt(1 - ab_t) noise, with `t` broadcastable to `y0` (per point)."""
    ab = alphas_cumprod.to(y0.device)[t].to(y0.dtype)
    while ab.dim() < y0.dim():
        ab = ab.unsqueeze(-1)
    return ab.sqrt() * y0 + (1 - ab).sqrt() * noise


def antithetic_timesteps(
    n: int, timesteps: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """CARD's antithetic sampling: t and T-1-t in pairs."""
    t = torch.randint(0, timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, timesteps - 1 - t])[:n].to(device)


def prior_mean_noising(
    alphas_cumprod: torch.Tensor,
    y0: torch.Tensor,
    prior: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """CARD's forward process: sqrt(ab) y0 + (1 - sqrt(ab)) prior + sqrt(1 - ab) noise,
    i.e. plain DDPM noising of the residual y0 - prior, shifted back by the prior."""
    return prior + q_sample(alphas_cumprod, y0 - prior, t, noise)


def noise_draws(
    batch: int, num_classes: int, draws: int, timesteps: int, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`draws` (t, noise) pairs per image for CARD's loss: t [B, D], antithetic over all
    B * D draws, and noise [B, D, C]. One draw per image is CARD's; more reuse an image's
    feature and prior for several pairs, lowering the variance of the same loss at the
    cost of the (small) head only. Noise y_t with `prior_mean_noising` on y0[:, None]."""
    t = antithetic_timesteps(batch * draws, timesteps, generator, device).reshape(batch, draws)
    return t, torch.randn((batch, draws, num_classes), generator=generator).to(device)


@torch.no_grad()
def sample_prior_mean(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    prior: torch.Tensor,
    scheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """CARD's reverse chain, as diffusers DDPM on z = y - prior: z_T ~ N(0, I); each step
    z_{t-1} ~ the DDPM posterior; the last step returns the reparameterised y0 without
    noise. CARD's coefficients gamma_0..2 on (y0, y_t, prior) sum to one, which makes
    its chain exactly this one. `eps_fn(y_t, t)` predicts the noise; the scheduler's
    ``set_timesteps`` decides the steps (T = all of them, as in CARD)."""
    z = torch.randn(prior.shape, generator=generator).to(prior.device)
    return reverse_process(lambda z_t, t: eps_fn(z_t + prior, t), z, scheduler, generator) + prior


@torch.no_grad()
def reverse_process(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scheduler,
    generator: torch.Generator | None = None,
    rederived_eps: bool = False,
) -> torch.Tensor:
    """A diffusers scheduler's reverse chain from x_T over its ``timesteps``: at each,
    ``eps_fn(x_t, t)`` (t: one long per sample) predicts the noise and the scheduler steps.
    `rederived_eps` (DDIM only): the direction term uses the eps re-derived from the
    clipped x0 instead of the raw prediction (see methods/diffmic_v2/classifier.py)."""
    kwargs = {"use_clipped_model_output": True} if rederived_eps else {}
    for t in scheduler.timesteps:
        t_batch = torch.full(x.shape[:1], int(t), device=x.device, dtype=torch.long)
        x = scheduler.step(
            eps_fn(x, t_batch).float(), t, x, generator=generator, **kwargs
        ).prev_sample
    return x
