"""Mid-unit training checkpoints, so that a killed run resumes where it stopped.

`train_loop` saves one file per training stage (``<unit work dir>/<desc>.resume.pt``, or
under the cache key of a part trained through the cache: bench/nn/pretraining.py)
after a validation epoch once ``ctx.checkpoint_every_s`` has passed since the last save
or the start, and always after the last epoch (so that a unit whose record could not be
written reruns without training). It holds everything the rest of training
depends on: the module, optimiser and scheduler states, the best weights so far, the
history, and every random stream (torch, CUDA, numpy, python, and the stage's own
generators), so a resumed run continues the same sequence of batches and noise as an
uninterrupted one. The runner deletes these files once the unit's record is written.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.api.naming import safe_name
from bench.api.record import atomic_write

SUFFIX = ".resume.pt"


Generator = torch.Generator | np.random.Generator


def checkpoint_path(checkpoint_dir: Path, desc: str) -> Path:
    return Path(checkpoint_dir) / f"{safe_name(desc)}{SUFFIX}"


def rng_states(generators: tuple[Generator, ...]) -> dict[str, Any]:
    """Every random stream's state, in types a weights-only load accepts (no pickled
    numpy arrays: numpy's global state is kept as a list)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "generators": [
            g.get_state() if isinstance(g, torch.Generator) else g.bit_generator.state
            for g in generators
        ],
    }


def restore_rng_states(states: dict[str, Any], generators: tuple[Generator, ...]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    for g, s in zip(generators, states["generators"], strict=True):
        if isinstance(g, torch.Generator):
            g.set_state(s)
        else:
            g.bit_generator.state = s


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Whole or not at all (`atomic_write`): a checkpoint that exists is whole."""
    atomic_write(path, lambda staged: torch.save(payload, staged), by_path=True)


def load_checkpoint(
    path: Path,
    module: torch.nn.Module,
    n_generators: int,
    n_stateful: int,
    plan: dict[str, Any],
    log: Callable[[str], None],
) -> dict | None:
    """The saved state, or None (and a message) when there is none, it does not fit
    `module` (the code changed since it was written) or it was written for another
    training `plan` (steps, epochs, batch size, train size, seed): training then starts afresh."""
    if not path.exists():
        return None
    try:
        # weights only: a file planted in a shared work dir must not run code on load
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file must not stop the run
        log(
            f"ignoring unreadable checkpoint {path} ({type(e).__name__}: {e}); training from the start"
        )
        return None
    current = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state.get("module", {}).items()}
    if (
        saved != current
        or len(state.get("rng", {}).get("generators", ())) != n_generators
        or len(state.get("stateful", ())) != n_stateful
    ):
        log(
            f"ignoring checkpoint {path}: it does not match this model (written by other code?); training from the start"
        )
        return None
    if state.get("plan") != plan:
        log(
            f"ignoring checkpoint {path}: written for another training plan ({state.get('plan')}, now {plan}); "
            "training from the start"
        )
        return None
    return state


def remove_checkpoints(checkpoint_dir: Path, up_to: Path | None = None) -> None:
    """Delete a unit's checkpoints; then its folder and the folders above it up to (not
    including) `up_to`, each if it is left empty."""
    for path in Path(checkpoint_dir).glob(f"*{SUFFIX}"):
        path.unlink(missing_ok=True)
    if up_to is None:
        return
    folder, stop = Path(checkpoint_dir).resolve(), Path(up_to).resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only an empty folder: anything else left there stays
        except OSError:
            break
        folder = folder.parent


@dataclass
class LoopProgress:
    """Where a training stage is: what a resumed stage continues from."""

    epoch: int = 0  # epochs done
    step: int = 0
    seen: int = 0  # training images seen
    t_train: float = 0.0  # seconds spent in training steps
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"value": -math.inf, "epoch": None, "state": None})
    stale: int = 0  # validations since the best one
    stopped: bool = False  # early stop (patience)


class StageCheckpoint:
    """The resumable state of one `train_loop` stage: its module, optimiser, scheduler,
    other stateful objects, random generators and `LoopProgress`, in one file of
    ``ctx.checkpoint_dir`` named after the stage, written for one training `plan`."""

    PROGRESS = ("epoch", "step", "seen", "t_train", "history", "best", "stale", "stopped")

    def __init__(self, ctx, desc, plan, module, optimizer, scheduler, stateful, generators):
        self.path = checkpoint_path(ctx.checkpoint_dir, desc)
        self.ctx, self.desc, self.plan = ctx, desc, plan
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.stateful, self.generators = stateful, generators
        self.last_save = time.monotonic()

    def restore(self) -> LoopProgress:
        """The saved progress with every state restored, or a fresh start."""
        saved = load_checkpoint(
            self.path, self.module, len(self.generators), len(self.stateful), self.plan,
            self.ctx.log,
        )  # fmt: skip
        if saved is None:
            return LoopProgress()
        self.module.load_state_dict(saved["module"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        for obj, state in zip(self.stateful, saved["stateful"], strict=True):
            obj.load_state_dict(state)
        restore_rng_states(saved["rng"], self.generators)
        progress = LoopProgress(
            **{k: saved[k] for k in self.PROGRESS if k in saved}  # stale, stopped came later
        )
        self.ctx.log(
            f"{self.desc}: resuming after epoch {progress.epoch} of {self.plan['epochs']} from {self.path}"
        )
        return progress

    def save(self, progress: LoopProgress, force: bool = False) -> None:
        """At most every ``ctx.checkpoint_every_s`` unless `force`d (the last epoch, an early
        stop: a unit whose record cannot be written then reruns without training)."""
        if not force and time.monotonic() - self.last_save < self.ctx.checkpoint_every_s:
            return
        save_checkpoint(
            self.path,
            {
                "plan": self.plan,
                **{k: getattr(progress, k) for k in self.PROGRESS},
                "module": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": rng_states(self.generators),
                "stateful": [obj.state_dict() for obj in self.stateful],
            },
        )
        self.last_save = time.monotonic()
