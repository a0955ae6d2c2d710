"""Batches from in-memory uint8 arrays and on-device preprocessing: images stay uint8 in
memory; each batch is moved to the device, scaled to [-1, 1] (MedMNIST's mean 0.5 / std
0.5) and resized there when the method's input size differs from the data's. Also the
step plan of a budget, the shared augmentation, and batched class probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.api.dataset import SplitData
from bench.api.method import Budget, RunContext


def to_device_batch(images: np.ndarray, device, size: int | None = None) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float [B, C, size, size] in [-1, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    x = x.div_(127.5).sub_(1.0)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def from_device_batch(x: torch.Tensor, size: int | None = None) -> np.ndarray:
    """The inverse: float [B, C, h, w] in [-1, 1] -> uint8 [B, size, size, C] on the CPU
    (generated images back in the loaders' format; resized with antialiasing)."""
    x = x.detach().float()
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[np.ndarray]:
    order = (
        torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    )
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def targets_tensor(labels: np.ndarray, device, multilabel: bool) -> torch.Tensor:
    t = torch.from_numpy(labels).to(device)
    return t.float() if multilabel else t.long()


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, split: SplitData, ctx: RunContext, size: int | None, multilabel: bool
) -> np.ndarray:
    model.eval()
    out = []
    for idx in batches(len(split), ctx.budget.eval_batch_size):
        x = to_device_batch(split.images[idx], ctx.device, size)
        with ctx.accelerator.autocast():
            out.append(probabilities(model(x), multilabel).cpu())
    return torch.cat(out).numpy().astype(np.float64)


@dataclass(frozen=True)
class Schedule:
    """How long a training stage runs: `total_steps` optimiser steps over `epochs` passes
    of `n_train` examples in batches of `batch_size`."""

    n_train: int
    batch_size: int
    total_steps: int
    epochs: int

    @classmethod
    def plan(cls, n_train: int, batch_size: int, epochs: int, max_steps: int | None) -> Schedule:
        """The steps `epochs` passes take, capped at `max_steps`, and the epochs then run."""
        steps_per_epoch = max(1, n_train // batch_size) if n_train > batch_size else 1
        total = epochs * steps_per_epoch
        if max_steps:
            total = min(total, max_steps)
        return cls(n_train, batch_size, total, math.ceil(total / steps_per_epoch))

    @classmethod
    def of_budget(cls, n_train: int, budget: Budget) -> Schedule:
        """The suite's budget (epochs, batch size, step cap) for `n_train` examples."""
        return cls.plan(n_train, budget.batch_size, budget.epochs, budget.max_steps)


def random_flip_rotate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and 90-degree rotations, per image."""
    n = x.shape[0]
    draws = torch.randint(0, 2, (3, n), generator=generator).bool().to(x.device)
    x = torch.where(draws[0, :, None, None, None], x.flip(-1), x)
    x = torch.where(draws[1, :, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(draws[2, :, None, None, None], x.transpose(-1, -2), x)
    return x


def augmented_batch(
    images: np.ndarray,
    idx: np.ndarray,
    ctx: RunContext,
    size: int | None,
    augment: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """A training batch on the device, randomly flipped and rotated when `augment`."""
    x = to_device_batch(images[idx], ctx.device, size)
    return random_flip_rotate(x, generator) if augment else x
