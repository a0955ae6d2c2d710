"""A cache of pretrained parts (a DCG prior, CARD's f_phi, D-Cube's stage 1, the FID
extractor): trained once per payload (data, seed, config, budget) and shared between the
units and methods that need the same one."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.api.method import RunContext
from bench.api.record import atomic_write


def cache_key(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_pretraining(
    kind: str,
    payload: dict[str, Any],
    model: nn.Module,
    train: Callable[[], dict],
    ctx: RunContext,
    own_training: bool = False,
) -> dict:
    """Load `model`'s weights from the shared cache if a run with the same `payload`
    (data + splits, seed, config, budget) trained it before; else train and store them.
    Its resume checkpoints are kept under the cache, by the same key: a unit killed
    mid-training resumes there whichever unit needs the part next (a guidance grid whose
    next run starts at another point). A pretrained part reports nothing to a sweep's
    pruner; a method's `own_training` (a generator whose units differ only in how they
    sample) reports its validation scores to the pruner as the unit's own.

    Returns the pretraining summary, with ``cache`` = "hit" or "miss" and the file used.
    """
    key = cache_key({"kind": kind, "data": ctx.data_id, "seed": ctx.seed, **payload})
    root = Path(ctx.cache_dir or ctx.checkpoint_dir) / kind
    path = root / f"{key}.pt"
    root.mkdir(parents=True, exist_ok=True)
    # one process trains a part at a time: another that needs it (`bench run --jobs`, or
    # runs sharing a work folder) waits, then loads it from the cache
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _load_or_train(kind, path, payload, model, train, ctx, own_training)


def _load_or_train(kind, path: Path, payload, model, train, ctx, own_training) -> dict:
    root = path.parent
    blob = None
    if path.is_file():
        try:  # weights only: a file planted in the shared cache must not run code on load
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a foreign or damaged file: train again over it
            ctx.log(
                f"ignoring the cached {kind} {path}: it cannot be loaded as weights ({type(e).__name__}); training it again"
            )
    if blob is not None:
        model.load_state_dict(blob["state"])
        model.to(ctx.device).eval()
        return {**blob["summary"], "cache": "hit", "file": str(path)}
    # a sweep prunes on the method's own training, not on its pretraining; and the resume
    # checkpoints are kept under the part's own key: in a shared directory (the FID
    # extractor's is the cache) one part's "train" stage would resume from another's with
    # the same plan, and in a unit's work folder another unit sharing the part would not
    # find them
    on_eval, checkpoint_dir = ctx.on_eval, ctx.checkpoint_dir
    work = root / f"{path.stem}.resume"
    ctx.checkpoint_dir = work
    if not own_training:
        ctx.on_eval = None
    try:
        summary = train()
    finally:
        ctx.on_eval, ctx.checkpoint_dir = on_eval, checkpoint_dir
    stored = {
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "summary": summary,
        "payload": payload,
    }
    atomic_write(path, lambda staged: torch.save(stored, staged), by_path=True)
    shutil.rmtree(work, ignore_errors=True)  # stored: nothing left to resume
    model.eval()
    return {**summary, "cache": "miss", "file": str(path)}
