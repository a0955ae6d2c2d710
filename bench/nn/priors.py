"""Training a method's prior model (CARD's f_phi, the DCG) with cross-entropy, batched
inference, and the warm-up cosine learning-rate schedule of these methods."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from bench.api.method import RunContext
from bench.nn.labels import one_hot_targets, prior_probabilities


def fit_prior(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    train,
    val,
    ctx: RunContext,
    spec,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    image_size: int | None,
    augment: bool,
    desc: str,
) -> dict:
    """Train a prior classifier with cross-entropy (Adam, constant lr), keeping the
    weights with the best validation AUROC. The suite's ``max_steps`` caps it too."""
    from bench.metrics.classification import METRICS
    from bench.train.batches import Schedule, augmented_batch
    from bench.train.training import Optimisation, Validation, train_loop

    multilabel = spec.task == "multilabel"
    schedule = Schedule.plan(len(train), batch_size, epochs, ctx.budget.max_steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(ctx.seed + 2)
    auroc = METRICS.get("auroc")

    def step(idx):
        x = augmented_batch(train.images, idx, ctx, image_size, augment, gen)
        with ctx.accelerator.autocast():
            return loss_fn(
                x, one_hot_targets(train.labels[idx], spec.num_classes, multilabel, ctx.device)
            )

    def evaluate():
        probs = batched_inference(
            lambda x: prior_probabilities(logits_fn(x).float(), multilabel),
            val.images,
            ctx,
            image_size,
        )
        return auroc(val.labels, probs.numpy(), spec.task)

    return train_loop(
        model,
        step,
        ctx,
        schedule,
        Optimisation(opt),
        Validation(evaluate, "auroc"),
        generators=(gen,),
        desc=desc,
    )


@torch.no_grad()
def batched_inference(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    ctx: RunContext,
    image_size: int | None,
) -> torch.Tensor:
    """Apply `fn` to the images in eval batches (on the device, autocast); CPU float result."""
    from bench.train.batches import batches, to_device_batch

    out = []
    for idx in batches(len(images), ctx.budget.eval_batch_size):
        x = to_device_batch(images[idx], ctx.device, image_size)
        with ctx.accelerator.autocast():
            out.append(fn(x).float().cpu())
    return torch.cat(out)


def warmup_cosine(optimizer, total_steps: int, warmup_fraction: float, final_fraction: float = 0.0):
    """Linear warm-up, then half-cosine to `final_fraction` of the lr, per step (CARD/DiffMIC)."""
    import math

    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return final_fraction + (1 - final_fraction) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, progress))
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
