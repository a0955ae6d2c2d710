"""Supervised training of a classifier with cross-entropy (the timm baselines, the
generation suite's feature extractor): its settings, optimiser and schedule, on the
shared loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.api.dataset import SplitData
from bench.api.method import RunContext
from bench.metrics.classification import METRICS
from bench.train.batches import Schedule, predict_probs, targets_tensor, to_device_batch
from bench.train.training import Optimisation, Validation, train_loop


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
    schedule = Schedule.of_budget(len(train), ctx.budget)
    opt, sched = make_optimizer(model, s, schedule.total_steps)
    flips = torch.Generator().manual_seed(ctx.seed + 1)

    def step(idx):
        x = to_device_batch(train.images[idx], ctx.device, s.input_size)
        if s.hflip:
            flip = (torch.rand(len(idx), generator=flips) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = targets_tensor(train.labels[idx], ctx.device, multilabel)
        with ctx.accelerator.autocast():
            return loss_fn(model(x).float(), y)

    def evaluate():
        return metric(val.labels, predict_probs(model, val, ctx, s.input_size, multilabel), task)

    validation = Validation(evaluate, s.selection_metric, metric.higher_is_better)
    return train_loop(
        model, step, ctx, schedule, Optimisation(opt, sched), validation, generators=(flips,)
    )
