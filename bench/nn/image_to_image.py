"""Image-to-image training pieces shared by the restoration methods: paired patches on
the device, batched restoration, validation PSNR, and the supervised image-to-image loop
(DnCNN, and any method whose training step is one loss)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bench.api.method import RunContext
from bench.metrics.image_quality import per_image_quality
from bench.train.batches import Schedule, batches
from bench.train.training import Optimisation, Validation, train_loop


def to_device(images: np.ndarray, device) -> torch.Tensor:
    """float [B, H, W, C] (data range [0, 1]) -> [B, C, H, W] on `device`."""
    return (
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        .to(device)
        .permute(0, 3, 1, 2)
    )


@torch.no_grad()
def restore_batched(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: np.ndarray, ctx: RunContext
) -> np.ndarray:
    """Apply `fn` ([B, C, H, W] in, same out, data range [0, 1]) in eval batches."""
    out = []
    for idx in batches(len(inputs), ctx.budget.eval_batch_size):
        with ctx.accelerator.autocast():
            out.append(fn(to_device(inputs[idx], ctx.device)).float().cpu())
    return torch.cat(out).permute(0, 2, 3, 1).numpy()


def validation_psnr(restore: Callable[[np.ndarray], np.ndarray], val, limit: int = 256) -> float:
    """Mean PSNR on (up to `limit` evenly spaced) validation patches."""
    idx = np.linspace(0, len(val) - 1, min(limit, len(val))).round().astype(int)
    return float(per_image_quality(restore(val.inputs[idx]), val.targets[idx])["psnr"].mean())


def train_image_to_image(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    restore: Callable[[np.ndarray], np.ndarray],
    train,
    val,
    ctx: RunContext,
    *,
    lr: float,
    betas=(0.9, 0.999),
    eval_every: int = 1,
    generators: tuple = (),
    after_step=None,
    desc: str = "restore",
) -> dict:
    """Adam on loss_fn(input, target) over paired patches (random flips), keeping the
    weights with the best validation PSNR; `generators`: those `loss_fn` draws from;
    `after_step`: train_loop's hook (an EMA update)."""
    budget = ctx.budget
    schedule = Schedule.of_budget(len(train), budget)
    trainable = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr, betas=tuple(betas))
    gen = torch.Generator().manual_seed(ctx.seed + 43)

    def step(idx):
        x, y = to_device(train.inputs[idx], ctx.device), to_device(train.targets[idx], ctx.device)
        flip = (torch.rand(len(idx), generator=gen) < 0.5).to(x.device)[:, None, None, None]
        x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        with ctx.accelerator.autocast():
            return loss_fn(x, y)

    return train_loop(
        module,
        step,
        ctx,
        schedule,
        Optimisation(opt, after_step=after_step),
        Validation(lambda: validation_psnr(restore, val), "psnr", every=eval_every),
        generators=(gen, *generators),
        desc=desc,
    )
