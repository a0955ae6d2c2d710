"""Run a suite: expand datasets x methods x seeds, skip complete units, run the rest.

Under ``accelerate launch`` with several processes, whole units are dealt out to the
ranks (unit i goes to rank i mod world size); each unit trains on one process, so its
numbers are those of a single-process run with the same seed, and its record is
written once, by its owner. The outcomes are gathered on rank 0 for the summary.
A unit that fails (NaN loss, out of memory, bad data) is recorded as failed and the
suite goes on; nothing already written is touched.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bench.api.dataset import DatasetBundle
from bench.api.errors import BenchError, DataError
from bench.api.method import Budget, MethodSpec, RunContext
from bench.api.record import Data, Memory, Provenance, Record, RunError, Selection, Timings
from bench.api.registry import TASKS
from bench.api.task import ScoringRun
from bench.engine.config import Preset, Suite, load_suite
from bench.engine.outcome import Outcome, UnitStatus
from bench.engine.planning import (
    Unit,
    method_inapplicable,
    plan_units,
    resolve_datasets,
    unit_work_dir,
)
from bench.engine.provenance import environment, now, peak_memory, reset_peak_memory
from bench.engine.records import (
    is_complete,
    read_record,
    refuse_unpublished,
    unit_lock,
    write_record,
)
from bench.train.device import make_accelerator
from bench.train.interrupt import Terminated, interrupted_note, mark_interrupted
from bench.train.resume import SUFFIX, remove_checkpoints


@dataclass
class RunSettings:
    """What the units of one run share (a `bench run`, a sweep's trials)."""

    suite: Suite
    preset: Preset
    accelerator: Any
    env: dict[str, Any]  # the provenance of the run's environment (`environment`)
    work_dir: Path
    progress: bool = True
    checkpoint_every_s: float = 300.0
    shared: dict = field(default_factory=dict)  # what a run builds once (an extractor)


@dataclass
class PreparedUnit:
    """A planned unit with what it runs on: its method's spec and its data, or why the
    data could not be had (the unit is then recorded as failed)."""

    unit: Unit
    spec: MethodSpec
    bundle: DatasetBundle | None
    data_error: str | None = None


def make_context(
    accelerator, seed: int, budget: Budget, work_dir: Path, checkpoint_dir: Path, **optional
) -> RunContext:
    """The one way a RunContext is made (units, rescoring, perf, extractors): checkpoints
    in `checkpoint_dir`, the pretrained parts shared through `work_dir`/cache; `optional`
    sets RunContext's other fields (log, progress, data_id, artifact_stem, ...)."""
    optional = {"log": tqdm.write, "progress": False, "cache_dir": work_dir / "cache", **optional}
    return RunContext(accelerator, seed, budget, checkpoint_dir, **optional)


def run_unit(
    prepared: PreparedUnit, run: RunSettings, on_eval=None
) -> tuple[Record, dict[str, np.ndarray]]:
    """Train and score one unit: its record (which unit, and its results; the
    provenance is `run_and_record`'s) and the arrays of its .npz."""
    from accelerate.utils import set_seed

    unit, bundle, suite, preset = prepared.unit, prepared.bundle, run.suite, run.preset
    set_seed(unit.seed, deterministic=True)
    method = prepared.spec.cls(prepared.spec.make_config(unit.config), bundle.spec)
    ctx = make_context(
        run.accelerator, unit.seed, preset.budget, run.work_dir,
        unit_work_dir(unit, suite, run.work_dir), progress=run.progress,
        data_id=bundle.split_hash, artifact_stem=unit.stem, on_eval=on_eval,
        checkpoint_every_s=run.checkpoint_every_s,
    )  # fmt: skip
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    reset_peak_memory(run.accelerator.device)
    splits = bundle.splits
    t0 = time.perf_counter()
    selection = method.fit(splits["train"], splits["val"], ctx) or {}
    train_s = time.perf_counter() - t0
    scoring = ScoringRun(unit.method, suite.evaluation_for(preset), run.shared)
    scored = TASKS.get(method.task).score(method, bundle, ctx, scoring)
    selection = Selection.from_dict(selection)
    seen, n_out, out_s = selection.train_images_seen, scored.outputs, scored.output_s
    record = Record(
        **unit_identity(unit, suite, preset, bundle),
        status="ok",
        selection=selection,
        timings=Timings(
            train_s=train_s,
            train_images_per_s=seen / (selection.train_compute_s or train_s) if seen else None,
            inference_images_per_s=n_out / out_s if out_s > 0 else None,
        ),
        memory=Memory.from_dict(peak_memory(run.accelerator.device)),
    )
    record.take_scores(scored.fields)
    return record, scored.arrays


def data_block(bundle: DatasetBundle | None) -> Data | None:
    """The record's ``data``: what the unit is computed from (part of its identity)."""
    if bundle is None:
        return None
    return Data(
        split_hash=bundle.split_hash,
        files=bundle.files,
        images_sha256=getattr(bundle, "images_sha256", None),
        duplicates_across_splits=bundle.duplicates_across_splits,
        n={k: len(v) for k, v in bundle.splits.items()},
        source=bundle.spec.source,
        synthetic=bundle.spec.synthetic,
        licence=bundle.spec.licence,
        notes=list(getattr(bundle, "notes", [])),
    )


def unit_identity(
    unit: Unit, suite: Suite, preset: Preset, bundle: DatasetBundle | None
) -> dict[str, Any]:
    """The `Record` fields that say which unit it is and what data it was computed from."""
    return dict(
        suite=suite.name,
        preset=preset.name,
        dataset=unit.dataset,
        method=unit.method,
        seed=unit.seed,
        config_hash=unit.config_hash,
        config=unit.config,
        budget=dataclasses.asdict(preset.budget),
        task=bundle.spec.task if bundle else None,
        class_names=list(bundle.spec.class_names) if bundle else None,
        data=data_block(bundle),
    )


def run_suite(
    suite_name: str,
    preset_name: str = "smoke",
    *,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    data_dir: str | None = None,
    results_dir: str | Path = "results",
    work_dir: str | Path = "runs",
    download: bool | None = None,
    fallback_synthetic: bool = False,
    precision: str = "auto",
    cpu: bool = False,
    progress: bool = True,
    checkpoint_every_s: float = 300.0,
    rerun: bool = False,
    allow_dirty: bool = False,
) -> list[Outcome]:
    """Run (or resume) a suite; return one outcome per unit (all ranks' on rank 0).

    A unit is complete when its record was made from the same data; `rerun` runs the
    selected units again even so (after a code change: a record keeps the commit it was
    made from, and complete units are not rerun just because the code moved on)."""
    from accelerate.utils import gather_object

    accelerator, precision = make_accelerator(precision, cpu)
    log = tqdm.write if accelerator.is_main_process else (lambda msg: None)
    rank = f"[rank {accelerator.process_index}] " if accelerator.num_processes > 1 else ""
    suite = load_suite(suite_name)
    preset = suite.preset(preset_name)
    results_dir, work_dir = Path(results_dir), Path(work_dir)
    refuse_unpublished(preset, results_dir, allow_dirty)
    bundles, data_errors = resolve_datasets(
        suite, datasets, data_dir, download, fallback_synthetic, log
    )
    if data_errors and not bundles:  # nothing can run: an input error, not failed units
        raise DataError(
            "; ".join(
                f"{name}: {msg}" if name not in msg else msg for name, msg in data_errors.items()
            )
        )
    for name, bundle in bundles.items():
        for note in getattr(bundle, "notes", []):
            log(f"{name}: ⚠ {note}")
    names = list(bundles) + list(data_errors)
    units, specs = plan_units(
        suite, preset, names, methods, seeds or suite.seeds, results_dir, precision
    )
    not_applicable = {
        (name, method): why
        for name, bundle in bundles.items()
        for method in specs
        if (why := method_inapplicable(suite, preset, method, bundle.spec.class_names, name))
    }
    for (name, method), why in not_applicable.items():
        log(f"{method} is left out on {name}: {why}")
    units = [u for u in units if (u.dataset, u.method) not in not_applicable]
    if not units:
        raise BenchError(
            "nothing to run: "
            + "; ".join(f"{m} on {d}: {why}" for (d, m), why in not_applicable.items())
        )
    data = {name: data_block(bundle) for name, bundle in bundles.items()}
    pending = [u for u in units if rerun or not is_complete(u.stem, data.get(u.dataset))]
    other_data = [u for u in pending if is_complete(u.stem)]
    accelerator.wait_for_everyone()  # every rank has decided what is pending before anyone writes
    mine = pending[accelerator.process_index :: accelerator.num_processes]
    log(
        f"suite {suite.name} / preset {preset.name}: {len(units)} units, {len(units) - len(pending)} complete, "
        f"{len(pending)} to run on {accelerator.num_processes} process(es) [{accelerator.device}, {precision}]"
    )
    for u in pending:  # a damaged record is run again, and said so
        path = u.stem.with_suffix(".json")
        why = read_record(path)[1] if path.exists() else None
        if why:
            log(
                f"  {u.label}: its record {path} is {why}: run again; the old file is kept as {path.name}.unreadable"
            )
    if other_data and not rerun:
        log(
            f"  {len(other_data)} of them have a record made from other data (split hash, file MD5s or pixels differ): "
            f"run again, the new record says which one it replaces ({other_data[0].label}, ...)"
        )
    run = RunSettings(
        suite, preset, accelerator, environment(accelerator.device, precision, accelerator.num_processes),
        work_dir, progress, checkpoint_every_s,
    )  # fmt: skip
    outcomes = []
    bar = tqdm(
        mine,
        desc=f"rank {accelerator.process_index}" if accelerator.num_processes > 1 else "units",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    for unit in bar:
        bar.set_postfix_str(unit.label)
        with unit_lock(unit.stem) as locked:
            if not locked:  # another process is running it now
                outcomes.append(skipped(unit, UnitStatus.ELSEWHERE))
            elif not rerun and is_complete(
                unit.stem, data.get(unit.dataset)
            ):  # another process finished it meanwhile
                outcomes.append(skipped(unit, UnitStatus.COMPLETE))
            else:
                work = unit_work_dir(unit, suite, Path(work_dir))
                if note := interrupted_note(work, SUFFIX):
                    log(f"  {unit.label}: {note}")
                try:
                    prepared = PreparedUnit(
                        unit,
                        specs[unit.method],
                        bundles.get(unit.dataset),
                        data_errors.get(unit.dataset),
                    )
                    outcome = run_and_record(prepared, run)
                except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: its rerun says what it does
                    mark_interrupted(
                        work, "terminated" if isinstance(stop, Terminated) else "Ctrl-C"
                    )
                    raise
                outcomes.append(outcome)
        tqdm.write(rank + outcomes[-1].line())
    accelerator.wait_for_everyone()
    gathered = gather_object(outcomes) if accelerator.num_processes > 1 else outcomes
    return [skipped(u, UnitStatus.COMPLETE) for u in units if u not in pending] + list(gathered)


def skipped(unit: Unit, status: UnitStatus) -> Outcome:
    return Outcome(unit.label, status, str(unit.stem.with_suffix(".json")))


def run_and_record(
    prepared: PreparedUnit, run: RunSettings, passthrough: tuple = (), on_eval=None
) -> Outcome:
    """Run one unit and write its record, ok or failed; exceptions of a `passthrough`
    type (a sweep's pruning) propagate instead, and nothing is written."""
    unit, bundle, suite, preset = prepared.unit, prepared.bundle, run.suite, run.preset
    work_dir = Path(run.work_dir)
    started = now()
    t0 = time.perf_counter()
    replaces = replaced_record(unit.stem.with_suffix(".json"))
    try:
        if bundle is None:
            raise DataError(prepared.data_error)
        record, arrays = run_unit(prepared, run, on_eval)
        record.timings.wall_s = time.perf_counter() - t0
    except passthrough:
        raise
    except Exception as exc:  # noqa: BLE001 - a unit's failure (NaN, OOM, bad data) must not stop the suite
        arrays = None
        error = RunError(
            type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()
        )
        record = Record(
            **unit_identity(unit, suite, preset, bundle),
            status="failed",
            error=error,
            timings=Timings(wall_s=time.perf_counter() - t0),
        )
    record.provenance = Provenance.from_dict({**run.env, "started": started, "finished": now()})
    record.replaces = replaces
    try:
        path = write_record(unit.stem, record, arrays)
    except OSError as exc:
        raise BenchError(
            f"{unit.label}: cannot write its record {unit.stem.with_suffix('.json')} ({exc.strerror or exc}); nothing "
            f"half-written is left, and its training checkpoints in {unit_work_dir(unit, suite, work_dir)} "
            "are kept, so a rerun writes the record without training again"
        ) from exc
    if record.ok:  # a failed unit keeps them: its rerun resumes
        remove_checkpoints(unit_work_dir(unit, suite, work_dir), up_to=work_dir)
    return Outcome(
        unit.label,
        UnitStatus(record.status),
        str(path),
        error=record.error.message if record.error else None,
        test=record.split_metrics("test"),
        wall_s=record.timings.wall_s,
    )


def replaced_record(path: Path) -> dict[str, Any] | None:
    """The ``replaces`` block of the record about to be written at `path`: the data
    identity, commit and finish time of the ok record there, or, for a file that is not
    a usable record, why (its bytes are kept beside it as ``.unreadable``)."""
    previous, why = read_record(path)
    if why and path.exists():
        kept = path.with_name(path.name + ".unreadable")
        shutil.copyfile(path, kept)
        return {"unreadable": why, "kept_as": kept.name}
    if not (previous and previous.ok):
        return None
    old = previous.data or Data()
    return {
        "split_hash": old.split_hash,
        "files": old.files,
        "images_sha256": old.images_sha256,
        "git_commit": previous.provenance.git_commit,
        "finished": previous.provenance.finished,
    }
