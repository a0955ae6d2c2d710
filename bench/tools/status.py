"""`bench status`: where a suite run stands, read from its plan and the results folder
(nothing runs, nothing is written): each unit complete, running (its lock is held by a
live process), failed (its record says why), or pending (no record yet, a record of other
data, or an unreadable one)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from bench.api.record import Data
from bench.engine.config import load_suite
from bench.engine.planning import method_inapplicable, plan_units, resolve_datasets
from bench.engine.records import is_complete, read_record
from bench.train.device import resolve_precision


def held_locks() -> set[int] | None:
    """Inodes of the files with a lock held now (Linux's /proc/locks), or None where it
    cannot be read. Reading it takes no lock, so a status check never makes a starting
    run skip a unit."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    inodes = set()
    for line in text.splitlines():
        fields = line.split()
        ids = next((f for f in fields if f.count(":") == 2), None)
        if ids:
            inodes.add(int(ids.rsplit(":", 1)[1]))
    return inodes


def unit_state(stem: Path, data: Data | None, held: set[int] | None) -> tuple[str, str]:
    """(state, detail) of one unit."""
    if is_complete(stem, data):
        return "complete", ""
    lock = stem.with_suffix(".lock")
    try:
        if held is not None and os.stat(lock).st_ino in held:
            return "running", f"lock {lock.name} held"
    except FileNotFoundError:
        pass
    path = stem.with_suffix(".json")
    if not path.exists():
        return "pending", ""
    record, why = read_record(path)
    if why:
        return "pending", f"its record is {why}"
    if not record.ok:
        return "failed", str(record.error or "")[:200]
    return "pending", "its record was made from other data, or its predictions are missing"


def suite_status(
    suite_name: str,
    preset_name: str,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    data_dir: str | None = None,
    results_dir: str | Path = "results",
    precision: str = "auto",
    cpu: bool = False,
    work_dir: str | Path = "runs",
) -> list[dict[str, Any]]:
    """One row per planned unit: dataset, method, seed, state, detail, record. A unit of
    a SLURM array submitted from `work_dir` (bench/tools/slurm.py) that squeue lists is
    queued or running."""
    import torch

    from bench.engine.runner import data_block
    from bench.tools.slurm import queued_tasks

    suite = load_suite(suite_name)
    preset = suite.preset(preset_name)
    precision = resolve_precision(precision, cpu or not torch.cuda.is_available())
    bundles, errors = resolve_datasets(suite, datasets, data_dir, None, False, lambda msg: None)
    units, _ = plan_units(
        suite, preset, list(bundles) + list(errors), methods, seeds or suite.seeds,
        Path(results_dir), precision,
    )  # fmt: skip
    held = held_locks()
    tasks = queued_tasks(Path(work_dir))
    rows = []
    for u in units:
        bundle = bundles.get(u.dataset)
        why = bundle and method_inapplicable(
            suite, preset, u.method, bundle.spec.class_names, u.dataset
        )
        state, detail = (
            ("not applicable", why)
            if why
            else unit_state(u.stem, data_block(bundle) if bundle else None, held)
        )
        if u.dataset in errors:
            detail = f"data: {errors[u.dataset]}"
        task = tasks.get(str(u.stem.with_suffix(".json").resolve()))
        if task and state not in ("complete", "running"):
            state, detail = task.split(" ", 1)[0], task.split(" ", 1)[1].strip("()")
        rows.append(
            {
                "dataset": u.dataset,
                "method": u.method,
                "seed": u.seed,
                "state": state,
                "detail": detail,
                "record": str(u.stem.with_suffix(".json")),
            }
        )
    return rows


def status_lines(rows: list[dict[str, Any]], suite: str, preset: str) -> list[str]:
    counts = Counter(r["state"] for r in rows)
    order = ("complete", "running", "queued", "failed", "pending", "not applicable")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    lines = [f"suite {suite} / preset {preset}: {len(rows)} units: {summary}"]
    for r in rows:
        if r["state"] != "complete":
            detail = f" ({r['detail']})" if r["detail"] else ""
            lines.append(f"  {r['state']:<8} {r['dataset']}/{r['method']}/seed{r['seed']}{detail}")
    return lines
