"""Stopping a run from outside: Ctrl-C (SIGINT) and SIGTERM, what SLURM and most
schedulers send before killing a job, are handled alike. The unit being trained stops
(its lock released, complete units kept); the unit's work folder gets a mark, so that its
rerun says whether it resumes from a checkpoint or, when none had been written yet, starts
afresh (instead of restarting without a word).

SIGTERM comes with a grace period before the scheduler's SIGKILL (SLURM's KillWait: 30 s
by default), so a SIGTERM that arrives while a training loop runs (`checkpoint_window`)
lets the loop finish its epoch and write a checkpoint if that takes at most
`GRACE_S` seconds (`BENCH_TERM_GRACE_S`); past it, the run stops where it is. Ctrl-C, a
person at the keyboard, stops at once."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

MARK = "interrupted"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as Ctrl-C raises KeyboardInterrupt."""


GRACE_S = float(os.environ.get("BENCH_TERM_GRACE_S", "20"))
_window = {"open": False, "pending": False}


def _raise_terminated(signum=None, frame=None):
    _cancel_timer()
    raise Terminated()


def _cancel_timer() -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _on_sigterm(signum, frame):
    if not _window["open"] or _window["pending"] or not hasattr(signal, "setitimer"):
        _raise_terminated()
    _window["pending"] = True
    print(
        f"bench: SIGTERM: finishing this epoch to write a checkpoint (at most {GRACE_S:g} s)",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGALRM, _raise_terminated)
    signal.setitimer(signal.ITIMER_REAL, GRACE_S)


def handle_sigterm() -> None:
    """SIGTERM raises `Terminated` (exit code 143 in bench.cli) instead of killing the
    process outright; inside a `checkpoint_window`, after the loop's next checkpoint."""
    signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def checkpoint_window() -> Iterator[None]:
    """While a training loop runs: a SIGTERM waits (up to GRACE_S) for `termination_due`."""
    _window.update(open=True, pending=False)
    try:
        yield
    finally:
        _window["open"] = False
        if _window["pending"]:
            _raise_terminated()


def termination_due() -> bool:
    """True once a SIGTERM has come: write the checkpoint now, then `stop_for_termination`.
    The grace timer stops here, so the checkpoint is never cut off halfway."""
    if _window["pending"]:
        _cancel_timer()
    return _window["pending"]


def mark_interrupted(work_dir: Path, how: str) -> None:
    try:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / MARK).write_text(
            f"{how} at {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        )
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
    return (
        f"its previous run was stopped ({when}) with no checkpoint in its work folder: what it "
        "trains alone starts again; what it shares through the cache (a pretrained part, a "
        "generator's weights) resumes from the cache's checkpoint"
    )
