"""Stopping a run from outside: Ctrl-C (SIGINT) and SIGTERM, what SLURM and most
schedulers send before killing a job, are handled alike. The unit being trained stops
where it is (its lock released, complete units kept); the unit's work folder gets a mark,
so that its rerun says whether it resumes from a checkpoint or, when none had been
written yet, starts afresh (instead of restarting without a word)."""

from __future__ import annotations

import signal
from pathlib import Path

from bench.engine.provenance import now

MARK = "interrupted"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as Ctrl-C raises KeyboardInterrupt."""


def _raise_terminated(signum, frame):
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM raises `Terminated` (exit code 143 in bench.cli) instead of killing the
    process outright."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def mark_interrupted(work_dir: Path, how: str) -> None:
    try:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / MARK).write_text(f"{how} at {now()}\n")
    except OSError:
        pass  # the mark only improves a message


def interrupted_note(work_dir: Path, checkpoint_suffix: str) -> str | None:
    """What a rerun of an interrupted unit does (and the mark is removed), or None."""
    mark = Path(work_dir) / MARK
    if not mark.is_file():
        return None
    when = mark.read_text().strip()
    mark.unlink(missing_ok=True)
    if any(Path(work_dir).glob(f"*{checkpoint_suffix}")):
        return f"its previous run was stopped ({when}): resuming from its checkpoint"
    return f"its previous run was stopped ({when}) before its first checkpoint: training from the start"
