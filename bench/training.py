"""Shared training machinery: batches from in-memory uint8 arrays, on-device
preprocessing, and a supervised loop with validation-based model selection.

Images stay uint8 in memory; each batch is moved to the device, scaled to [-1, 1]
(MedMNIST's mean 0.5 / std 0.5) and resized there when the method's input size
differs from the data's.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.data.spec import SplitData
from bench.errors import TrainingError
from bench.method import RunContext
from bench.metrics import METRICS


def to_device_batch(images: np.ndarray, device, size: int | None = None) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float [B, C, size, size] in [-1, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    x = x.div_(127.5).sub_(1.0)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def batches(n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[np.ndarray]:
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
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
def predict_probs(model: torch.nn.Module, split: SplitData, ctx: RunContext, size: int | None, multilabel: bool) -> np.ndarray:
    model.eval()
    out = []
    for idx in batches(len(split), ctx.budget.eval_batch_size):
        x = to_device_batch(split.images[idx], ctx.device, size)
        with ctx.accelerator.autocast():
            out.append(probabilities(model(x), multilabel).cpu())
    return torch.cat(out).numpy().astype(np.float64)


@dataclass
class SupervisedSettings:
    lr: float
    weight_decay: float
    lr_milestones: tuple[float, ...]  # fractions of training where lr is multiplied by gamma
    lr_gamma: float
    selection_metric: str
    input_size: int | None
    hflip: bool = False


def make_optimizer(model: torch.nn.Module, s: SupervisedSettings, total_steps: int):
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    milestones = sorted({max(1, int(round(f * total_steps))) for f in s.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=s.lr_gamma)
    return opt, sched


def train_supervised(
    model: torch.nn.Module,
    train: SplitData,
    val: SplitData,
    ctx: RunContext,
    s: SupervisedSettings,
    task: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Train with Adam + step decay; keep the weights with the best validation metric.

    Raises TrainingError on a non-finite loss (the runner records the unit as failed).
    """
    multilabel = task == "multilabel"
    loss_fn = loss_fn or (F.binary_cross_entropy_with_logits if multilabel else F.cross_entropy)
    metric = METRICS.get(s.selection_metric)
    budget = ctx.budget
    steps_per_epoch = math.ceil(len(train) / budget.batch_size)
    total_steps = budget.epochs * steps_per_epoch
    if budget.max_steps:
        total_steps = min(total_steps, budget.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    opt, sched = make_optimizer(model, s, total_steps)
    gen = torch.Generator().manual_seed(ctx.seed)
    best = {"value": -math.inf, "epoch": None, "state": None}
    history, step, seen, t_train = [], 0, 0, 0.0
    bar = tqdm(total=total_steps, desc="train", leave=False, disable=None if ctx.progress else True, dynamic_ncols=True)
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for idx in batches(len(train), budget.batch_size, gen, drop_last=len(train) > budget.batch_size):
            if step >= total_steps:
                break
            x = to_device_batch(train.images[idx], ctx.device, s.input_size)
            if s.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
            y = targets_tensor(train.labels[idx], ctx.device, multilabel)
            with ctx.accelerator.autocast():
                loss = loss_fn(model(x).float(), y)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            opt.zero_grad(set_to_none=True)
            ctx.accelerator.backward(loss)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        t_train += time.perf_counter() - t0
        probs = predict_probs(model, val, ctx, s.input_size, multilabel)
        value = metric(val.labels, probs, task)
        history.append({"epoch": epoch + 1, "loss": float(loss.item()), f"val_{s.selection_metric}": value})
        score = value if metric.higher_is_better else -value
        if not math.isfinite(score):
            score = -math.inf
        if best["state"] is None or score > best["value"]:
            best = {"value": score, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
    bar.close()
    model.load_state_dict(best["state"])
    return {
        "selection_metric": s.selection_metric,
        "best_epoch": best["epoch"],
        "best_val_value": history[best["epoch"] - 1][f"val_{s.selection_metric}"],
        "epochs_run": epochs,
        "steps": step,
        "train_images_seen": seen,
        "train_compute_s": t_train,
        "history": history,
    }
