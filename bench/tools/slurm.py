"""`bench run --executor slurm`: the pending units of a suite run as one SLURM job array
through submitit, one unit per array task, at most `max_parallel` at once (and `bench
sweep --executor slurm`: its workers as one array sharing a study).

The plan (which unit is which array task) is written beside submitit's logs in
``<work-dir>/slurm/<job id>/plan.json``, where `bench status` finds it. A task preempted,
or reaching its time limit, is requeued by submitit (its `checkpoint`), and the requeued
task resumes the unit from its last checkpoint as any rerun does (the record's
``selection.resumed_after_epoch`` says so). Units complete (or running) when the array is
submitted are left out, so submitting the same run twice submits nothing the second time.
Nothing site-specific is built in: partition, account, QOS, GPUs, CPUs, memory and time
per unit are options."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api.errors import BenchError
from bench.engine.outcome import Outcome


@dataclass
class SlurmOptions:
    """Resources of one array task (one unit), and the array's concurrency."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 0  # per unit
    cpus: int = 1  # per unit; its OMP_NUM_THREADS
    mem: str | None = None  # per unit, e.g. "16G"
    time_min: int = 120  # per unit; a unit that needs longer is requeued and resumes
    max_parallel: int = 8
    max_requeues: int = 3  # time limits a unit may hit before it counts as failed

    def parameters(self) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters."""
        params = {
            "time": self.time_min,
            "cpus_per_task": self.cpus,
            "ntasks_per_node": 1,
            "array_parallelism": self.max_parallel,
            "job_name": "bench",
            "setup": [f"export OMP_NUM_THREADS={self.cpus}"],
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "mem": self.mem,
            "gpus_per_node": self.gpus or None,
        }
        return {**params, **{k: v for k, v in optional.items() if v is not None}}


class UnitTask:
    """One array task: one unit of a suite run, in this process; `checkpoint` makes
    submitit requeue it on preemption or at its time limit (it then resumes)."""

    def __init__(self, run_kwargs: dict[str, Any]):
        self.run_kwargs = run_kwargs

    def __call__(self, unit: dict[str, Any]) -> Outcome:
        from bench.engine.outcome import UnitStatus
        from bench.engine.runner import run_suite
        from bench.train.device import configure_threads

        configure_threads()
        outcomes = run_suite(
            **self.run_kwargs,
            datasets=[unit["dataset"]],
            methods=[unit["method"]],
            seeds=[unit["seed"]],
        )
        failed = [o for o in outcomes if o.status is UnitStatus.FAILED]
        if failed:
            raise RuntimeError(f"{failed[0].unit} failed: {failed[0].error}")
        return outcomes[0]

    def checkpoint(self, unit: dict[str, Any]):
        import submitit

        return submitit.helpers.DelayedSubmission(UnitTask(self.run_kwargs), unit)


class SweepTask:
    """One array task of a sweep: worker k of a study shared through its storage; a
    preempted worker is requeued, and the trial it was running is run again."""

    def __init__(self, sweep_kwargs: dict[str, Any]):
        self.sweep_kwargs = sweep_kwargs

    def __call__(self, worker: int) -> dict[str, Any]:
        from bench.tools.sweep import run_sweep
        from bench.train.device import configure_threads

        configure_threads()
        return run_sweep(**self.sweep_kwargs, worker=worker, progress=False)

    def checkpoint(self, worker: int):
        import submitit

        return submitit.helpers.DelayedSubmission(SweepTask(self.sweep_kwargs), worker)


def pending_units(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units of `bench status` rows to submit: neither complete, nor running, nor
    inapplicable (a failed unit runs again)."""
    keep = ("pending", "failed")
    return [
        {k: r[k] for k in ("dataset", "method", "seed", "record")}
        for r in rows
        if r["state"] in keep
    ]


def sbatch_script(options: SlurmOptions, folder: Path, n_units: int) -> str:
    """The sbatch script submitit writes for this array (for --dry-run and the tests)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = options.parameters()
    return _make_sbatch_string(
        command=f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}",
        folder=folder,
        map_count=n_units,
        signal_delay_s=90,
        **params,
    )


def submit_array(task, items: list, options: SlurmOptions, root: Path) -> list:
    """Submit `task` over `items` as one array; submitit's jobs."""
    import submitit

    executor = submitit.SlurmExecutor(folder=root / "%j", max_num_timeout=options.max_requeues)
    executor.update_parameters(**options.parameters())
    try:
        return executor.map_array(task, items)
    except Exception as exc:  # noqa: BLE001 - sbatch's own message (no SLURM here, a bad partition)
        raise BenchError(f"SLURM refused the array: {exc}") from exc


def submit_sweep(
    sweep_kwargs: dict[str, Any], workers: int, options: SlurmOptions, dry_run: bool
) -> int:
    """`bench sweep --executor slurm`: `workers` array tasks, each a worker of one study
    in a storage safe on a shared file system (Optuna's journal file by default)."""
    root = Path(sweep_kwargs["work_dir"]).resolve() / "slurm"
    print(f"sweep {sweep_kwargs['method']} on {sweep_kwargs['dataset']}: {workers} workers "
          f"sharing {sweep_kwargs['storage']}")  # fmt: skip
    if dry_run:
        print("sbatch script (--dry-run: nothing submitted):")
        print(sbatch_script(options, root / "%j", workers))
        return 0
    jobs = submit_array(SweepTask(sweep_kwargs), list(range(workers)), options, root)
    print(
        f"submitted SLURM array {jobs[0].job_id.split('_')[0]} ({workers} sweep workers); logs in {root}"
    )
    return 0


def submit_run(run_kwargs: dict[str, Any], rows, options: SlurmOptions, dry_run: bool) -> int:
    """Submit the pending units of a run (`rows` from `bench status`) as one array."""
    units = pending_units(rows)
    root = Path(run_kwargs["work_dir"]).resolve() / "slurm"
    complete = sum(r["state"] == "complete" for r in rows)
    running = sum(r["state"] == "running" for r in rows)
    print(
        f"{len(rows)} units: {complete} complete, {running} running, {len(units)} to submit"
        + (f" as one array (at most {options.max_parallel} at once)" if units else "")
    )
    for u in units:
        print(f"  {u['dataset']}/{u['method']}/seed{u['seed']}")
    if dry_run:
        print("sbatch script (--dry-run: nothing submitted):")
        print(sbatch_script(options, root / "%j", len(units)))
        return 0
    if not units:
        return 0
    jobs = submit_array(UnitTask(run_kwargs), units, options, root)
    array = jobs[0].job_id.split("_")[0]
    plan = {
        "job": array,
        "options": dataclasses.asdict(options),
        "run": {k: str(v) if isinstance(v, Path) else v for k, v in run_kwargs.items()},
        "units": [{**u, "task": j.job_id} for u, j in zip(units, jobs, strict=True)],
    }
    path = root / array / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1))
    print(f"submitted SLURM array {array} ({len(units)} tasks); plan {path}")
    print("follow it with: bench status (same --suite, --preset, --work-dir)")
    return 0


def queued_tasks(work_dir: Path) -> dict[str, str]:
    """record path -> "queued (slurm 12_3)" / "running (slurm 12_3)" for the array tasks
    of this work folder's plans that squeue lists (empty without squeue)."""
    import subprocess

    plans = sorted((Path(work_dir) / "slurm").glob("*/plan.json"))
    if not plans:
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
    found = {}
    for plan in plans:
        for u in json.loads(plan.read_text()).get("units", []):
            state = states.get(u["task"], "").strip()
            if state:
                word = "running" if state in ("RUNNING", "COMPLETING") else "queued"
                found[str(Path(u["record"]).resolve())] = (
                    f"{word} (slurm {u['task']}, {state.lower()})"
                )
    return found
