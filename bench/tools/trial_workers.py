"""Who runs a sweep's trial, and whether that worker is gone.

A worker killed mid-trial (a session's end, the OOM killer, a SLURM preemption) leaves
its trial RUNNING in the study for ever; a grid counts a running point as taken, so the
point would never run again. Each trial therefore carries its worker's identity, and a
worker that starts fails the trials that *it* abandoned (its own worker number on this
host, with a dead process; or its own SLURM task, which a requeue restarts) and queues
their points again, so that they rerun (the unit resumes from its checkpoint). Only
one's own trials: two workers never both re-queue one point, and a trial of a live
worker, or of another machine, is never touched.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any


def slurm_task() -> str | None:
    """This process's SLURM task (array job and index, or job), kept across a requeue."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    return f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}" if job else None


def worker_identity(worker: int) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": worker,
        "slurm_task": slurm_task(),
    }


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def abandoned_by(me: dict[str, Any], runner: dict[str, Any]) -> bool:
    """Whether a running trial whose worker is `runner` was abandoned by worker `me`."""
    if not runner or runner.get("pid") == me["pid"] and runner.get("host") == me["host"]:
        return False  # unknown (a trial from before identities), or this very process
    if me["slurm_task"] and runner.get("slurm_task") == me["slurm_task"]:
        return True  # this task's earlier run, preempted and requeued
    pid = runner.get("pid")
    return (
        runner.get("host") == me["host"]
        and runner.get("worker") == me["worker"]
        and isinstance(pid, int)
        and pid > 0
        and not process_alive(pid)
    )


def queued_point(trial) -> dict[str, Any]:
    """The point queued for a trial (`study.enqueue_trial`), empty for a sampled one. Optuna
    keeps it only in the trial's system attributes, deprecated on a live `Trial` since
    optuna 3.1 with no public successor: read here without the warning on every trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return dict(trial.system_attrs.get("fixed_params", {}))


def trial_point(trial) -> dict[str, Any]:
    """A trial's parameter values: suggested, or queued for it (a trial killed before it
    suggested any has only its queued point)."""
    return {**queued_point(trial), **trial.params}


def requeue_abandoned_trials(study, worker: int) -> list[int]:
    """Fail the running trials this worker abandoned and queue their points again;
    returns the failed trials' numbers."""
    import optuna

    me = worker_identity(worker)
    gone = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if abandoned_by(me, t.user_attrs.get("worker", {}))
    ]
    for t in gone:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        point = trial_point(t)
        if point:
            study.enqueue_trial(point)
    return [t.number for t in gone]
