"""The optimiser loop every method shares (`train_loop`): NaN check, validation-based
model selection, resumable checkpoints, and bench perf's measuring probe. Batches and
preprocessing are in bench/train/batches.py, supervised classifiers in
bench/train/supervised.py."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.api.errors import TrainingError
from bench.api.method import RunContext
from bench.train.batches import Schedule, batches
from bench.train.device import guard_strided_convs, sync_device, to_channels_last
from bench.train.interrupt import checkpoint_window, termination_due
from bench.train.resume import StageCheckpoint


@dataclass
class Optimisation:
    """How a stage's weights are updated: the optimiser (and scheduler) stepped after each
    batch, the gradient norm clipped to `grad_clip` over what the optimiser updates, and
    `after_step(step)` run after each step (e.g. an EMA update)."""

    optimizer: Any
    scheduler: Any = None
    grad_clip: float | None = None
    after_step: Callable[[int], None] | None = None


@dataclass
class Validation:
    """How a stage is selected: `evaluate()` scores the current weights on the validation
    split every `every` epochs (and after the last); the best weights are kept."""

    evaluate: Callable[[], float]
    metric: str = "score"
    higher_is_better: bool = True
    every: int = 1


def train_loop(
    module: torch.nn.Module,
    train_step: Callable[[np.ndarray], torch.Tensor],
    ctx: RunContext,
    schedule: Schedule,
    optimisation: Optimisation,
    validation: Validation | None = None,
    *,
    generators: tuple = (),
    stateful: tuple = (),
    desc: str = "train",
) -> dict:
    """The optimiser loop every method shares: batches of `schedule`, NaN check,
    `validation` (None: no validation, the last weights are kept), keeping `module`'s best
    weights. Convolutional modules are put in channels-last memory format, and strided
    convolutions compute in fp32 on 1-pixel inputs under CPU bf16 (bench/train/device.py).

    `train_step(indices)` returns the loss of one batch (it may update other parts
    itself first, e.g. a GAN's discriminator). Raises TrainingError on a non-finite loss.
    Under ``ctx.probe`` (bench perf) the stage is measured for a few steps instead
    (`probe_stage`).

    Resumable (bench/train/resume.py): the stage named `desc` is checkpointed in
    `ctx.checkpoint_dir` and a rerun continues from there. `module` must hold every
    trained weight (EMA copies included), `generators` every torch or numpy generator
    `train_step` draws from, and `stateful` any other object with a state (a second
    optimiser), so that the resumed run equals an uninterrupted one.
    """
    n_train, batch_size = schedule.n_train, schedule.batch_size
    total_steps, epochs = schedule.total_steps, schedule.epochs
    optimizer, scheduler = optimisation.optimizer, optimisation.scheduler
    metric_name = validation.metric if validation else None
    guard_strided_convs(to_channels_last(module))
    gen = torch.Generator().manual_seed(ctx.seed)

    def update(loss: torch.Tensor, step: int, epoch: int | None = None) -> None:
        """Check the loss, then one optimiser (and scheduler) step."""
        if not torch.isfinite(loss):
            where = f"epoch {epoch + 1}, " if epoch is not None else ""
            raise TrainingError(f"{desc}: loss became {loss.item()} at {where}step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        ctx.accelerator.backward(loss)
        if (
            optimisation.grad_clip
        ):  # over what this optimiser updates (`module` may hold other trained parts)
            ctx.accelerator.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], optimisation.grad_clip
            )
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if optimisation.after_step is not None:
            optimisation.after_step(step + 1)

    if ctx.probe is not None:
        return probe_stage(
            module, train_step, update, ctx, gen, n_train=n_train, batch_size=batch_size, desc=desc
        )
    plan = {
        "total_steps": total_steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "n_train": n_train,
        "seed": ctx.seed,
    }
    ckpt = StageCheckpoint(
        ctx, desc, plan, module, optimizer, scheduler, stateful, (gen, *generators)
    )
    run = ckpt.restore()
    start_epoch = run.epoch
    if start_epoch and ctx.on_eval is not None:  # a sweep's pruner sees the whole curve again
        for entry in run.history:
            if f"val_{metric_name}" in entry:
                ctx.on_eval(entry["epoch"], entry[f"val_{metric_name}"])

    bar = tqdm(
        total=total_steps,
        initial=run.step,
        desc=desc,
        leave=False,
        disable=None if ctx.progress else True,
        dynamic_ncols=True,
    )
    with checkpoint_window():  # a SIGTERM lets the epoch end and checkpoint (interrupt.py)
        for epoch in range(start_epoch, epochs):
            if run.stopped:
                break
            module.train()
            t0 = time.perf_counter()
            losses = []
            for idx in batches(n_train, batch_size, gen, drop_last=n_train > batch_size):
                if run.step >= total_steps:
                    break
                loss = train_step(idx)
                update(loss, run.step, epoch)
                run.step += 1
                run.seen += len(idx)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            run.t_train += time.perf_counter() - t0
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None}
            run.history.append(entry)
            run.epoch = epoch + 1
            if validation is None:  # no validation: the last weights are the result
                run.best = {"value": math.nan, "epoch": epoch + 1, "state": None, "raw": None}
                ckpt.save(run, force=epoch + 1 == epochs)
            elif (epoch + 1) % validation.every == 0 or epoch + 1 == epochs:
                module.eval()
                value = float(validation.evaluate())
                entry[f"val_{metric_name}"] = value
                if ctx.on_eval is not None:
                    ctx.on_eval(epoch + 1, value)
                score = value if validation.higher_is_better else -value
                if not math.isfinite(score):
                    score = -math.inf
                if run.best["state"] is None or score > run.best["value"]:
                    run.best = {
                        "value": score,
                        "epoch": epoch + 1,
                        "state": copy.deepcopy(module.state_dict()),
                        "raw": value,
                    }
                    run.stale = 0
                else:
                    run.stale += 1
                run.stopped = bool(ctx.budget.patience) and run.stale >= ctx.budget.patience
                if run.stopped:
                    ctx.log(
                        f"{desc}: stopping after epoch {epoch + 1}: no better validation {metric_name} in {run.stale} evaluations"
                    )
                ckpt.save(run, force=epoch + 1 == epochs or run.stopped)
            if termination_due():  # SIGTERM: checkpoint this epoch; the window then stops the run
                ckpt.save(run, force=True)
                break
    bar.close()
    if run.best["state"] is not None:
        module.load_state_dict(run.best["state"])
    module.eval()
    return {
        "selection_metric": metric_name,
        "best_epoch": run.best["epoch"],
        "best_val_value": run.best["raw"],
        "epochs_run": run.history[-1]["epoch"] if run.history else epochs,
        "stopped_early": run.stopped,
        "steps": run.step,
        "train_images_seen": run.seen,
        "train_compute_s": run.t_train,
        "history": run.history,
        "resumed_after_epoch": start_epoch or None,
    }


def probe_stage(
    module: torch.nn.Module,
    train_step,
    update,
    ctx: RunContext,
    gen: torch.Generator,
    *,
    n_train: int,
    batch_size: int,
    desc: str,
) -> dict:
    """train_loop under ``ctx.probe``: warm-up steps, one step under the FLOP counter, then
    timed steps (the same work as in training: loss, backward, optimiser, scheduler and
    after-step hook); no validation, no checkpoint; the stage's numbers go to the probe."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = ctx.probe
    module.train()
    step, timed_images, flops, t0 = 0, 0, 0.0, 0.0
    while step < probe.total_steps:
        for idx in batches(n_train, batch_size, gen, drop_last=n_train > batch_size):
            if step == probe.warmup:
                with FlopCounterMode(display=False) as counter:
                    update(train_step(idx), step)
                flops = counter.get_total_flops() / len(idx)
                sync_device(ctx.device)
                t0 = time.perf_counter()
            else:
                update(train_step(idx), step)
                timed_images += len(idx) if step > probe.warmup else 0
            step += 1
            if step >= probe.total_steps:
                break
    sync_device(ctx.device)
    seconds = time.perf_counter() - t0
    probe.stages.append(
        {
            "stage": desc,
            "batch_size": min(batch_size, n_train),
            "timed_steps": probe.steps,
            "images_per_s": timed_images / seconds,
            "flops_per_image": flops,
        }
    )
    module.eval()
    return {
        "selection_metric": None,
        "best_epoch": None,
        "best_val_value": None,
        "epochs_run": 0,
        "steps": step,
        "train_images_seen": timed_images,
        "train_compute_s": seconds,
        "history": [],
        "resumed_after_epoch": None,
        "probe": True,
    }
