"""The optimiser loop every method shares (`train_loop`): NaN check, validation-based
model selection, resumable checkpoints, and bench perf's measuring probe. Batches and
preprocessing are in bench/engine/batches.py, supervised classifiers in
bench/engine/supervised.py."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.api.errors import TrainingError
from bench.api.method import RunContext
from bench.engine.batches import batches
from bench.engine.device import sync_device, to_channels_last
from bench.engine.resume import (
    checkpoint_path,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)


def train_loop(
    module: torch.nn.Module,
    train_step: Callable[[np.ndarray], torch.Tensor],
    evaluate: Callable[[], float] | None,
    ctx: RunContext,
    *,
    n_train: int,
    batch_size: int,
    total_steps: int,
    epochs: int,
    optimizer,
    scheduler=None,
    higher_is_better: bool = True,
    metric_name: str = "score",
    eval_every: int = 1,
    grad_clip: float | None = None,
    after_step: Callable[[int], None] | None = None,
    generators: tuple = (),
    stateful: tuple = (),
    desc: str = "train",
) -> dict:
    """The optimiser loop every method shares: batches, NaN check, validation every
    `eval_every` epochs (and after the last), keeping `module`'s best weights.
    Convolutional modules are put in channels-last memory format (bench/engine/device.py).

    `train_step(indices)` returns the loss of one batch (it may update other parts
    itself first, e.g. a GAN's discriminator); `evaluate()` scores the current weights
    on the validation split (None: no validation, the last weights are kept);
    `after_step(step)` runs after each optimiser step (e.g. an EMA update). Raises
    TrainingError on a non-finite loss. Under ``ctx.probe`` (bench perf) the stage is
    measured for a few steps instead (`probe_stage`).

    Resumable (bench/engine/resume.py): the stage named `desc` is checkpointed in
    `ctx.checkpoint_dir` and a rerun continues from there. `module` must hold every
    trained weight (EMA copies included), `generators` every torch or numpy generator
    `train_step` draws from, and `stateful` any other object with a state (a second
    optimiser), so that the resumed run equals an uninterrupted one.
    """
    to_channels_last(module)
    gen = torch.Generator().manual_seed(ctx.seed)

    def update(loss: torch.Tensor, step: int, epoch: int | None = None) -> None:
        """Check the loss, then one optimiser (and scheduler) step."""
        if not torch.isfinite(loss):
            where = f"epoch {epoch + 1}, " if epoch is not None else ""
            raise TrainingError(f"{desc}: loss became {loss.item()} at {where}step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        ctx.accelerator.backward(loss)
        if grad_clip:  # over what this optimiser updates (`module` may hold other trained parts)
            ctx.accelerator.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], grad_clip
            )
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step + 1)

    if ctx.probe is not None:
        return probe_stage(
            module, train_step, update, ctx, gen, n_train=n_train, batch_size=batch_size, desc=desc
        )
    all_generators = (gen, *generators)
    best = {"value": -math.inf, "epoch": None, "state": None}
    history, step, seen, t_train, start_epoch, stale, stopped = [], 0, 0, 0.0, 0, 0, False
    path = checkpoint_path(ctx.checkpoint_dir, desc)
    plan = {
        "total_steps": total_steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "n_train": n_train,
        "seed": ctx.seed,
    }
    saved = load_checkpoint(path, module, len(all_generators), len(stateful), plan, ctx.log)
    if saved is not None:
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        for obj, state in zip(stateful, saved["stateful"], strict=True):
            obj.load_state_dict(state)
        restore_rng_states(saved["rng"], all_generators)
        start_epoch, step, seen, t_train = (
            saved["epoch"],
            saved["step"],
            saved["seen"],
            saved["t_train"],
        )
        history, best = saved["history"], saved["best"]
        stale, stopped = saved.get("stale", 0), saved.get("stopped", False)
        ctx.log(f"{desc}: resuming after epoch {start_epoch} of {epochs} from {path}")
        if ctx.on_eval is not None:  # a sweep's pruner sees the whole curve again
            for entry in history:
                if f"val_{metric_name}" in entry:
                    ctx.on_eval(entry["epoch"], entry[f"val_{metric_name}"])
    last_save = time.monotonic()

    def checkpoint(epochs_done: int) -> None:
        """At most every `checkpoint_every_s`, and always after the last epoch (or an early
        stop): a unit whose record cannot be written (disk full) then reruns without training."""
        nonlocal last_save
        if (
            time.monotonic() - last_save < ctx.checkpoint_every_s
            and epochs_done < epochs
            and not stopped
        ):
            return
        save_checkpoint(
            path,
            {
                "plan": plan,
                "epoch": epochs_done,
                "step": step,
                "seen": seen,
                "t_train": t_train,
                "history": history,
                "best": best,
                "stale": stale,
                "stopped": stopped,
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_states(all_generators),
                "stateful": [obj.state_dict() for obj in stateful],
            },
        )
        last_save = time.monotonic()

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=desc,
        leave=False,
        disable=None if ctx.progress else True,
        dynamic_ncols=True,
    )
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        module.train()
        t0 = time.perf_counter()
        losses = []
        for idx in batches(n_train, batch_size, gen, drop_last=n_train > batch_size):
            if step >= total_steps:
                break
            loss = train_step(idx)
            update(loss, step, epoch)
            step += 1
            seen += len(idx)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        t_train += time.perf_counter() - t0
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None}
        history.append(entry)
        if evaluate is None:  # no validation: the last weights are the result
            best = {"value": math.nan, "epoch": epoch + 1, "state": None, "raw": None}
            checkpoint(epoch + 1)
        elif (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            module.eval()
            value = float(evaluate())
            entry[f"val_{metric_name}"] = value
            if ctx.on_eval is not None:
                ctx.on_eval(epoch + 1, value)
            score = value if higher_is_better else -value
            if not math.isfinite(score):
                score = -math.inf
            if best["state"] is None or score > best["value"]:
                best = {
                    "value": score,
                    "epoch": epoch + 1,
                    "state": copy.deepcopy(module.state_dict()),
                    "raw": value,
                }
                stale = 0
            else:
                stale += 1
            stopped = bool(ctx.budget.patience) and stale >= ctx.budget.patience
            if stopped:
                ctx.log(
                    f"{desc}: stopping after epoch {epoch + 1}: no better validation {metric_name} in {stale} evaluations"
                )
            checkpoint(epoch + 1)
    bar.close()
    if best["state"] is not None:
        module.load_state_dict(best["state"])
    module.eval()
    return {
        "selection_metric": metric_name if evaluate is not None else None,
        "best_epoch": best["epoch"],
        "best_val_value": best["raw"],
        "epochs_run": history[-1]["epoch"] if history else epochs,
        "stopped_early": stopped,
        "steps": step,
        "train_images_seen": seen,
        "train_compute_s": t_train,
        "history": history,
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
