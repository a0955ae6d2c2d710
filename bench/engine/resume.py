"""Mid-unit training checkpoints, so that a killed run resumes where it stopped.

`train_loop` saves one file per training stage (``<unit work dir>/<desc>.resume.pt``)
after a validation epoch once ``ctx.checkpoint_every_s`` has passed since the last save
or the start, and always after the last epoch (so that a unit whose record could not be
written reruns without training). It holds everything the rest of training
depends on: the module, optimiser and scheduler states, the best weights so far, the
history, and every random stream (torch, CUDA, numpy, python, and the stage's own
generators), so a resumed run continues the same sequence of batches and noise as an
uninterrupted one. The runner deletes these files once the unit's record is written.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.engine.records import safe_name

SUFFIX = ".resume.pt"


Generator = torch.Generator | np.random.Generator


def checkpoint_path(checkpoint_dir: Path, desc: str) -> Path:
    return Path(checkpoint_dir) / f"{safe_name(desc)}{SUFFIX}"


def rng_states(generators: tuple[Generator, ...]) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
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
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    for g, s in zip(generators, states["generators"], strict=True):
        if isinstance(g, torch.Generator):
            g.set_state(s)
        else:
            g.bit_generator.state = s


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically (temporary file + rename): a checkpoint that exists is whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        state = torch.load(
            path, map_location="cpu", weights_only=False
        )  # our own file, written by save_checkpoint
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


def remove_checkpoints(checkpoint_dir: Path) -> None:
    for path in Path(checkpoint_dir).glob(f"*{SUFFIX}"):
        path.unlink(missing_ok=True)
