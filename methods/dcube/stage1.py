"""Stage 1's training: the noise loss on both images of a pair plus the contrastive loss on
their mid-block features, cached by a hash of its settings, data and seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.api.dataset import SplitData
from bench.api.method import (
    RunContext,
)
from bench.nn.diffusion import ddpm_scheduler, q_sample
from bench.nn.labels import require_single_label
from bench.nn.noise_floor import floor_block, linear_denoiser_mse
from bench.nn.pretraining import cached_pretraining
from bench.train.batches import Schedule, batches, to_device_batch
from bench.train.training import Optimisation, Validation, train_loop
from methods.dcube.uvit import Stage1Config, UViT, stage1_identity


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, different: torch.Tensor, margin: float, reduction: str = "sum"
) -> torch.Tensor:
    """Per pair: d = squared L2 between the flattened features (summed, or averaged per
    feature); loss = d for the same class, max(0, margin - d) for different classes
    (the authors' form). Returns the per-pair losses [B]."""
    sq = (a.flatten(1).float() - b.flatten(1).float()) ** 2
    d = sq.sum(dim=1) if reduction == "sum" else sq.mean(dim=1)
    different = different.to(d.dtype)
    return (1 - different) * d + different * torch.clamp(margin - d, min=0)


def partner_indices(
    labels: np.ndarray, anchors: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor, a partner of the same class (probability 1/2) or of another
    class; returns (partner indices, different-class flags). With one class present,
    every partner is of the same class."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    partners, different = np.empty(len(anchors), dtype=np.int64), np.zeros(len(anchors), dtype=bool)
    for i, a in enumerate(anchors):
        own = labels[a]
        others = [c for c in by_class if c != own]
        if others and rng.random() < 0.5:
            pool = by_class[others[rng.integers(len(others))]]
            different[i] = True
        else:
            pool = by_class[own]
        partners[i] = pool[rng.integers(len(pool))]
    return partners, different


def train_stage1(
    unet: UViT,
    cfg: Stage1Config,
    train: SplitData,
    val: SplitData,
    ctx: RunContext,
    image_size: int,
) -> dict:
    """Noise MSE on both images of each pair (per-image sums over pixels, as the code)
    + contrastive loss on the mid-block tokens; AdamW; keeps the weights with the lowest
    validation noise loss (fixed t and noise), stopping at a plateau when ``cfg.patience``
    is set. The suite's ``max_steps`` caps it."""
    alphas = ddpm_scheduler(cfg.timesteps, cfg.beta_start, cfg.beta_end).alphas_cumprod.to(
        ctx.device
    )
    schedule = Schedule.plan(len(train), cfg.batch_size, cfg.epochs, ctx.budget.max_steps)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(ctx.seed + 11)
    rng = np.random.default_rng(ctx.seed + 11)
    labels = np.asarray(train.labels)

    def step(idx):
        partners, different = partner_indices(labels, idx, rng)
        x1 = to_device_batch(train.images[idx], ctx.device, image_size)
        x2 = to_device_batch(train.images[partners], ctx.device, image_size)
        t = torch.randint(1, cfg.timesteps, (len(idx),), generator=gen).to(ctx.device)
        noise = torch.randn(x1.shape, generator=gen).to(ctx.device)
        y1 = torch.as_tensor(labels[idx], device=ctx.device).long()
        y2 = torch.as_tensor(labels[partners], device=ctx.device).long()
        with ctx.accelerator.autocast():
            e1, m1 = unet(q_sample(alphas, x1, t, noise), t, y1, return_mid=True)
            e2, m2 = unet(q_sample(alphas, x2, t, noise), t, y2, return_mid=True)
        mse = ((e1.float() - noise) ** 2).flatten(1).sum(1) + ((e2.float() - noise) ** 2).flatten(
            1
        ).sum(1)
        con = contrastive_loss(
            m1,
            m2,
            torch.as_tensor(different, device=ctx.device),
            cfg.margin,
            cfg.contrastive_reduction,
        )
        return (mse + cfg.contrastive_weight * con).mean()

    probe = np.arange(min(len(val), 256))
    probe_gen = torch.Generator().manual_seed(1234)
    probe_t = torch.randint(1, cfg.timesteps, (len(probe),), generator=probe_gen)
    probe_noise = torch.randn(
        (len(probe), unet.in_chans, image_size, image_size), generator=probe_gen
    )

    @torch.no_grad()
    def evaluate():  # mean per-image noise loss on a fixed validation probe (lower is better)
        total_loss = 0.0
        for chunk in batches(len(probe), ctx.budget.eval_batch_size):
            x = to_device_batch(val.images[probe[chunk]], ctx.device, image_size)
            t, n = probe_t[chunk].to(ctx.device), probe_noise[chunk].to(ctx.device)
            y = torch.as_tensor(val.labels[probe[chunk]], device=ctx.device).long()
            with ctx.accelerator.autocast():
                eps = unet(q_sample(alphas, x, t, n), t, y).float()
            total_loss += ((eps - n) ** 2).flatten(1).sum(1).sum().item()
        return total_loss / len(probe)

    # stage 1's own patience (a plateau of its noise loss), not the head's budget
    stage_ctx = dataclasses.replace(
        ctx, budget=dataclasses.replace(ctx.budget, patience=cfg.patience)
    )
    summary = train_loop(
        unet,
        step,
        stage_ctx,
        schedule,
        Optimisation(opt),
        Validation(evaluate, "noise_mse", higher_is_better=False, every=cfg.eval_every),
        generators=(gen, rng),
        desc="D-Cube stage 1",
    )
    floor = (
        linear_denoiser_mse(
            train.images, val.images[probe], probe_t, probe_noise, alphas, image_size
        )
        * probe_noise[0].numel()
    )
    return {**summary, "noise_floor": floor_block(floor, summary["best_val_value"], "per image")}


def stage1_model(
    cfg: Stage1Config, spec, train: SplitData, val: SplitData, ctx: RunContext
) -> tuple[UViT, dict]:
    """The trained stage-1 U-ViT for this data, seed and config: from the shared cache
    when it was trained before (by D-Cube or by a "+Syn" run), else trained and stored.
    With ``cfg.seed`` set, every unit's seed gets the one trained with that seed."""
    require_single_label("D-Cube", spec)
    size = cfg.image_size or spec.size
    if cfg.seed is None:
        unet = UViT(cfg, size, spec.channels, spec.num_classes).to(ctx.device)
    else:  # shared by the seeds of a dataset: the same start whichever unit trains it
        ctx = dataclasses.replace(ctx, seed=cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            unet = UViT(cfg, size, spec.channels, spec.num_classes).to(ctx.device)
    payload = {
        "model": "dcube-uvit",
        "stage1": stage1_identity(cfg),
        "image_size": size,
        "classes": spec.num_classes,
        "channels": spec.channels,
        "max_steps": ctx.budget.max_steps,
    }
    summary = cached_pretraining(
        "dcube_stage1", payload, unet, lambda: train_stage1(unet, cfg, train, val, ctx, size), ctx
    )
    unet.requires_grad_(False).eval()
    return unet, summary
