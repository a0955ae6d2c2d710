"""`bench run --jobs N`: N processes work through one suite run at once on this machine.

Each process is the same `bench run` (without ``--jobs``); the units' locks
(bench/engine/records.py) deal the units out, so that every unit runs exactly once, and
complete units are skipped as always. On a CPU the cores are divided between the
processes (``OMP_NUM_THREADS``); on a GPU they share it (under CUDA MPS when its daemon
runs). Output lines are prefixed with the job's number; SIGINT and SIGTERM are passed on,
so each process stops its unit as `bench run` does (bench/train/interrupt.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from bench.train.device import allowed_cores


def without_jobs(argv: list[str]) -> list[str]:
    """`argv` less its ``--jobs N`` / ``--jobs=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--jobs":
            skip = True
        elif not arg.startswith("--jobs="):
            out.append(arg)
    return out


def job_environment(k: int, jobs: int) -> dict[str, str]:
    """Job k's environment: its share of the threads this command would have had
    (``OMP_NUM_THREADS``, else the allowed cores)."""
    env = dict(os.environ)
    given = env.get("OMP_NUM_THREADS", "").strip()
    total = int(given) if given.isdigit() and int(given) > 0 else allowed_cores()
    env["OMP_NUM_THREADS"] = str(max(1, total // jobs))
    env["BENCH_JOB"] = str(k)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _relay(k: int, stream, out) -> None:
    for line in stream:
        out.write(f"[job {k}] {line}")
        out.flush()


def run_jobs(argv: list[str], jobs: int) -> int:
    """Run `bench <argv>` (a `run` command) as `jobs` concurrent processes; the exit code
    is the worst of theirs (1 when a unit failed, 143 / 130 when they were stopped)."""
    args = without_jobs(argv)
    print(
        f"bench run --jobs {jobs}: {jobs} processes, {job_environment(0, jobs)['OMP_NUM_THREADS']} thread(s) each",
        flush=True,
    )
    procs, relays = [], []
    for k in range(jobs):
        p = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", *args],
            env=job_environment(k, jobs),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(p)
        relays.append(threading.Thread(target=_relay, args=(k, p.stdout, sys.stdout), daemon=True))
        relays[-1].start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for t in relays:
        t.join(timeout=5)
    worst = max(codes, key=lambda c: (c != 0, c))
    print(f"bench run --jobs {jobs}: exit codes {codes}", flush=True)
    return worst
