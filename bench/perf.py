"""``bench perf``: throughput of a method with random weights on random images.

Measures training images/s (loss, backward, optimiser step), inference images/s at a
batch size, batch-1 latency and peak memory, and writes them with provenance to
``results/perf/<method>/<config hash>/<device>-<precision>-<pattern>.json``.
``--authors-pattern`` reproduces the reference implementation's inference (every
encoder re-run at each sampling step, fp32) for the side-by-side.

A method is benchmarkable when it offers ``build(ctx)``, ``training_loss(x, y0, gen)``
and ``sample_scores(x, gen)`` (DiffMIC-v2 does).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.spec import DatasetSpec
from bench.errors import BenchError
from bench.method import Budget, RunContext, config_dict, config_hash
from bench.provenance import environment, peak_memory, reset_peak_memory
from bench.registry import METHODS
from bench.runner import make_accelerator, now


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    """Seconds per call of `fn` after one warm-up call."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def run_perf(method: str, *, options: dict[str, Any] | None = None, classes: int = 5, channels: int = 3, image_size: int = 224,
             batch_size: int = 64, train_batch_size: int = 64, train_steps: int = 3, repeats: int = 3,
             authors_pattern: bool = False, precision: str = "auto", cpu: bool = False,
             results_dir: str | Path = "results", log=print) -> tuple[dict, Path]:
    spec_entry = METHODS.get(method)
    options = dict(options or {})
    if authors_pattern:
        options["recompute_conditions"] = True
        precision = "fp32"
    config = spec_entry.make_config(options)
    accelerator, precision = make_accelerator(precision, cpu)
    device = accelerator.device
    data = DatasetSpec(name=f"random-{image_size}px", task="multiclass", class_names=tuple(f"c{i}" for i in range(classes)),
                       channels=channels, size=image_size, source="random uint8 images (perf)", synthetic=True)
    m = spec_entry.cls(config, data)
    if not all(hasattr(m, a) for a in ("build", "training_loss", "sample_scores")):
        raise BenchError(f"bench perf: {method} does not offer build / training_loss / sample_scores")
    ctx = RunContext(accelerator, 0, Budget(epochs=1, batch_size=train_batch_size, eval_batch_size=batch_size),
                     Path(results_dir) / "perf" / "_scratch", log, False)
    m.ctx = ctx
    m.build(ctx)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def images(n):
        x = torch.from_numpy(rng.integers(0, 256, (n, channels, image_size, image_size), dtype=np.uint8)).to(device)
        x = x.float().div_(127.5).sub_(1.0)
        size = getattr(config, "image_size", None)
        return x if not size or size == image_size else torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")

    result: dict[str, Any] = {}
    opt = torch.optim.Adam(m.net.parameters(), lr=1e-4)
    x_train = images(train_batch_size)
    y_train = torch.nn.functional.one_hot(torch.randint(0, classes, (train_batch_size,), generator=gen), classes).float().to(device)

    def train_step():
        loss = m.training_loss(x_train, y_train, gen)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()

    reset_peak_memory(device)
    m.net.train()
    s = _timed(train_step, device, train_steps)
    result["train_images_per_s"] = train_batch_size / s
    result["train_peak_memory"] = peak_memory(device)
    m.net.eval()
    for bs, key in ((batch_size, "inference"), (1, "batch1")):
        x = images(bs)
        reset_peak_memory(device)
        with torch.no_grad(), accelerator.autocast():
            s = _timed(lambda: m.sample_scores(x, gen), device, repeats)
        result[f"{key}_images_per_s"] = bs / s
        result[f"{key}_ms_per_image"] = 1000 * s / bs
        result[f"{key}_peak_memory"] = peak_memory(device)
    cfg = config_dict(config)
    record = {
        "kind": "perf",
        "method": method,
        "config": cfg,
        "config_hash": config_hash(method, cfg, ctx.budget),
        "pattern": "authors (encoders re-run every step, fp32)" if authors_pattern else "conditions computed once per image",
        "input": {"image_size": image_size, "channels": channels, "classes": classes, "weights": "random"},
        "batch_size": batch_size,
        "train_batch_size": train_batch_size,
        "results": result,
        "provenance": {**environment(device, precision, 1), "finished": now()},
    }
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device.type}-{precision}-{'authors' if authors_pattern else 'cached'}-b{batch_size}").strip("-")
    path = Path(results_dir) / "perf" / method / record["config_hash"] / f"{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record, path
