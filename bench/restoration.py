"""Shared pieces of the restoration suite: paired patches on the device, batched
restoration, validation PSNR, the supervised image-to-image loop (DnCNN, and any
method whose training step is one loss), and scoring a restoration unit."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bench.image_quality import per_image_quality
from bench.method import RunContext, Scored
from bench.training import batches, plan_steps, train_loop

#: the training-free restoration methods that make a table's floor (baselines/identity.py,
#: baselines/classical_denoisers.py): listed as floor rows, never ranked, and a learned
#: method's cell that does not beat the best of them is flagged (bench/leaderboard.py)
FLOOR_METHODS = ("identity", "clip_input", "nlm")


def is_floor_method(label: str) -> bool:
    """`label` (a method, or a table's variant label 'nlm · bf16', 'nlm [hash]') is a floor."""
    return label.split(" · ")[0].split(" [")[0] in FLOOR_METHODS


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
    desc: str = "restore",
) -> dict:
    """Adam on loss_fn(input, target) over paired patches (random flips), keeping the
    weights with the best validation PSNR; `generators`: those `loss_fn` draws from."""
    budget = ctx.budget
    total, epochs = plan_steps(len(train), budget.batch_size, budget.epochs, budget.max_steps)
    opt = torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(betas))
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
        lambda: validation_psnr(restore, val),
        ctx,
        n_train=len(train),
        batch_size=budget.batch_size,
        total_steps=total,
        epochs=epochs,
        optimizer=opt,
        metric_name="psnr",
        eval_every=eval_every,
        generators=(gen, *generators),
        desc=desc,
    )


def score_restoration_unit(method, bundle, ctx: RunContext, strip_count: int = 6) -> Scored:
    """Restore val and test once; per-image metrics (means in the record, values in the
    .npz), the input's own scores for reference, and an input/output/target strip."""
    import time

    metrics, arrays, outputs, out_s = {}, {}, {}, 0.0
    data_range = bundle.spec.data_range
    for s in ("val", "test"):
        split = bundle.splits[s]
        t0 = time.perf_counter()
        outputs[s] = np.asarray(method.restore(split.inputs, ctx), dtype=np.float32)
        out_s = time.perf_counter() - t0
        if outputs[s].shape != split.targets.shape:
            from bench.errors import TrainingError

            raise TrainingError(
                f"{type(method).__name__}.restore returned {outputs[s].shape}, expected {split.targets.shape}"
            )
        q = per_image_quality(outputs[s], split.targets, data_range)
        metrics[s] = {k: float(v.mean()) for k, v in q.items()}
        arrays.update({f"{s}_{k}": v.astype(np.float32) for k, v in q.items()})
        arrays[f"{s}_ids"] = np.array(split.ids)
    test = bundle.splits["test"]
    degraded = {
        k: float(v.mean())
        for k, v in per_image_quality(test.inputs, test.targets, data_range).items()
    }
    if ctx.artifact_stem is not None:
        from bench.images import save_strip

        pick = (
            np.linspace(0, len(test) - 1, min(strip_count, len(test))).round().astype(int)
        )  # the scored outputs
        save_strip(
            [test.inputs[pick], outputs["test"][pick], test.targets[pick]],
            ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.strip.png",
        )
    fields = {
        "metrics": metrics,
        "per_class": {},
        "evaluation": {
            "data_range": data_range,
            "degradation": bundle.spec.degradation,
            "input_scores_test": degraded,
            "strip_png": f"{ctx.artifact_stem.name}.strip.png" if ctx.artifact_stem else None,
        },
    }
    return Scored(fields, arrays, len(test), out_s)
