"""Optuna sweeps over a method's declared search space (``SEARCH_SPACE`` on its class).

Each trial is a normal unit of the suite, with the trial's values as option overrides,
written as a normal record under ``results/sweeps/<study>/``; the objective is a
*validation* number of that record (``metrics.val[metric]``, or the method's own
validation selection value for tasks without validation metrics) and never a test
number. Seeds are fixed. The study lives in an Optuna RDB storage (SQLite in
``results/sweeps/<study>.db`` by default; any URL for several workers): a rerun loads
it and runs only the trials still missing (finished and pruned trials count), a
trial left running by a killed worker runs again (`trial_workers`), and a trial whose
record is already complete is not trained again. Intermediate validation
scores are reported to a median pruner. Outputs: ``<study>.best.json``, a markdown
table of the trials, and PNG plots (optimisation history, parameter importances,
metric against each parameter).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.api.errors import BenchError
from bench.api.method import Param
from bench.api.record import Record
from bench.api.registry import TASKS
from bench.tools.optuna_storage import open_storage
from bench.tools.trial_workers import (
    queued_point,
    requeue_abandoned_trials,
    trial_point,
    worker_identity,
)


def declared_space(method: str, params: list[str]) -> dict[str, Param]:
    from bench.api.registry import METHODS

    space = getattr(METHODS.get(method).cls, "SEARCH_SPACE", {})
    if not space:
        raise BenchError(f"method {method!r} declares no search space (SEARCH_SPACE)")
    unknown = [p for p in params if p not in space]
    if unknown or not params:
        raise BenchError(
            f"{method}: unknown sweep parameters {unknown or params} (declared: {sorted(space)})"
        )
    return {p: space[p] for p in params}


def _objective_value(record: Record, metric: str | None) -> float:
    """The validation number a trial is judged by (never a test number)."""
    val = record.split_metrics("val")
    if metric:
        if metric not in val or val[metric] is None:
            raise BenchError(f"the record has no validation {metric!r} (has {sorted(val)})")
        return float(val[metric])
    value = record.selection.best_val_value
    if value is None:
        raise BenchError("the method reported no validation selection value to optimise")
    return float(value)


def _direction(metric: str | None, selection_metric: str | None) -> str:
    from bench.api.registry import METRICS, UnknownNameError

    name = metric or selection_metric
    if (
        name == "noise_mse"
    ):  # the diffusion generators' validation noise loss (not a registered metric)
        return "minimize"
    if name is None:  # a method without a selection metric (e.g. the GAN): optuna's default
        return "maximize"
    try:
        return "maximize" if METRICS.get(name).higher_is_better else "minimize"
    except UnknownNameError as exc:
        raise BenchError(f"cannot tell whether {name!r} should be maximised: {exc}") from exc


def run_sweep(
    method: str,
    dataset: str,
    params: list[str],
    *,
    suite_name: str = "classification",
    preset_name: str = "smoke",
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    metric: str | None = None,
    grid: bool = False,
    values: dict[str, list] | None = None,
    prune: bool | None = None,
    worker: int = 0,
    data_dir=None,
    results_dir="results",
    work_dir="runs",
    progress: bool = False,
    allow_dirty: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a study until it holds `trials` finished trials. Several workers
    share a study through `storage`; give each its own `worker` number so their
    samplers propose different trials. A grid is not pruned unless asked (its point is
    the whole curve), and a grid point without a complete trial (pruned, failed) runs
    again. `values` restricts a grid to some of a parameter's declared values (a CPU-sized
    curve); the default study name carries the seed (from seed 1 on), so that each seed of
    the same sweep is its own study."""
    import optuna

    from bench.api.registry import METHODS
    from bench.data.load import dataset_source
    from bench.engine.config import MethodEntry, load_suite
    from bench.engine.outcome import UnitStatus
    from bench.engine.planning import make_unit
    from bench.engine.provenance import environment
    from bench.engine.records import is_complete, read_record, refuse_unpublished
    from bench.engine.runner import PreparedUnit, RunSettings, data_block, run_and_record
    from bench.train.device import make_accelerator

    space = declared_space(method, params)
    values = values or {}
    if values and not grid:
        raise BenchError("--values chooses grid points: it needs --grid")
    if set(values) - set(params):
        raise BenchError(
            f"--values names {sorted(set(values) - set(params))}, not swept ({params})"
        )
    suite = load_suite(suite_name)
    preset = suite.preset(preset_name)
    refuse_unpublished(preset, Path(results_dir), allow_dirty)
    spec = METHODS.get(method)
    entry = next((m for m in suite.methods if m.name == method), MethodEntry(method))
    base = suite.options_for(entry, preset, spec.preset_options_of, dataset)
    source_entry = next(
        (d for d in suite.datasets if (d if isinstance(d, str) else d.get("name")) == dataset),
        dataset,
    )
    bundle = dataset_source(source_entry).load(data_dir=data_dir)
    why = spec.inapplicable(base, bundle.spec.class_names)
    if why:
        raise BenchError(f"{method} does not apply to {bundle.spec.name}: {why}")
    if (
        metric is None
    ):  # the task's first key metric (generation's FID: its noise loss cannot judge guidance)
        metric = next(iter(TASKS.get(suite.task).key_metrics), None)
    study_name = study_name or (
        f"{method}-{bundle.spec.name}-{preset.name}-{'-'.join(params)}"
        + (f"-seed{seed}" if seed else "")
    )
    root = Path(results_dir) / "sweeps"
    root.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage or f"sqlite:///{(root / f'{study_name}.db').resolve()}")
    selection_metric = (
        getattr(spec.make_config(base), "selection_metric", None) if metric is None else None
    )
    grid_space = {p: space[p].grid(values.get(p)) for p in params} if grid else None
    # a grid point counts once it has a complete trial; other studies count pruned trials as done
    counted = (optuna.trial.TrialState.COMPLETE,) + (
        () if grid else (optuna.trial.TrialState.PRUNED,)
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=True,
        direction=_direction(metric, selection_metric),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if (prune if prune is not None else not grid)
        else optuna.pruners.NopPruner(),
    )
    done = len(study.get_trials(deepcopy=False, states=counted))
    # a resumed study (or another worker) gets a fresh random stream, or TPE's start-up
    # trials would propose the first trials' values again; a grid runs as queued trials
    # (below): optuna's GridSampler counts pruned points as visited and stops the study
    # once every point was tried, so it cannot repair a grid
    sampler_seed = seed * 1_000_003 + done + 7919 * worker
    study.sampler = (
        optuna.samplers.RandomSampler(seed=sampler_seed)
        if grid
        else optuna.samplers.TPESampler(seed=sampler_seed)
    )
    study.set_user_attr("method", method)
    study.set_user_attr("dataset", bundle.spec.name)
    study.set_user_attr("objective", f"validation {metric or 'selection value'}")
    study.set_user_attr("metric", metric)
    accelerator, precision = make_accelerator()
    env = environment(accelerator.device, precision, 1)
    sweep_suite = dataclasses.replace(suite, name=study_name)
    if suite.task == "generation":  # trials are judged on samples for the validation labels
        sweep_suite = dataclasses.replace(
            sweep_suite, evaluation={**suite.evaluation, "validation": True}
        )

    def objective(trial):
        trial.set_user_attr("worker", worker_identity(worker))
        if grid and not queued_point(trial):
            # another worker took the last queued point between our check and this ask
            raise optuna.TrialPruned("no grid point left to run")
        values = {p: space[p].suggest(trial, p) for p in params}
        options = {**base, **{space[p].field: v for p, v in values.items()}}
        unit = make_unit(
            spec, method, options, bundle.spec.name, seed, preset, precision, root, study_name
        )
        stem = unit.stem
        trial.set_user_attr("record", str(stem.with_suffix(".json")))

        def report(step: int, value: float):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {step} (validation {value:.4f})")

        if not is_complete(stem, data_block(bundle)):
            outcome = run_and_record(
                PreparedUnit(unit, spec, bundle),
                RunSettings(sweep_suite, preset, accelerator, env, Path(work_dir), progress),
                passthrough=(optuna.TrialPruned,),
                on_eval=report,
            )
            if outcome.status is not UnitStatus.OK:
                raise BenchError(f"trial {trial.number} failed: {outcome.error}")
        return _objective_value(read_record(stem.with_suffix(".json"))[0], metric)

    target = (
        trials
        if trials is not None
        else (int(np.prod([len(v) for v in grid_space.values()])) if grid else 20)
    )
    requeued = requeue_abandoned_trials(study, worker)
    if requeued:
        print(
            f"{study_name}: trial(s) {', '.join(map(str, requeued))} left running by this worker's "
            "earlier process (killed or preempted): failed, and their points queued again",
            flush=True,
        )
    if grid:
        queue_grid(study, params, grid_space, worker)
        # each worker takes queued points until none is left, so that no point runs twice
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        waiting = (optuna.trial.TrialState.WAITING,)
        while study.get_trials(deepcopy=False, states=waiting):
            study.optimize(objective, n_trials=1, catch=(BenchError,))
    elif done < target:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(
            objective,
            n_trials=target - done,
            catch=(BenchError,),
            callbacks=[optuna.study.MaxTrialsCallback(target, states=counted)],
        )
    return write_outputs(study, root, params, space)


def queue_grid(
    study, params: list[str], grid_space: dict, worker: int, wait_s: float = 120
) -> None:
    """Queue every grid point without a complete (or running, or queued) trial. Worker 0
    queues; the others wait (up to `wait_s`) until it has, so that two workers starting
    together do not queue the grid twice."""
    import itertools
    import time

    import optuna

    live = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.WAITING,
    )
    if worker:
        deadline = time.time() + wait_s
        while "grid_queued" not in study.user_attrs and time.time() < deadline:
            time.sleep(1)
            study = optuna.load_study(study_name=study.study_name, storage=study._storage)
        if "grid_queued" in study.user_attrs:
            return
    have = {
        tuple(trial_point(t).get(p) for p in params)
        for t in study.get_trials(deepcopy=False, states=live)
    }
    for combo in itertools.product(*grid_space.values()):
        if combo not in have:
            study.enqueue_trial(dict(zip(params, combo)))
    study.set_user_attr("grid_queued", True)


def write_outputs(study, root: Path, params: list[str], space: dict[str, Param]) -> dict[str, Any]:
    """best.json, a markdown table of the trials, and the plots; returns a summary."""
    import optuna

    name = study.study_name
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    out = {"study": name, "trials": len(study.trials), "complete": len(complete), "files": []}
    if complete:
        best = study.best_trial
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "config": {space[p].field: v for p, v in best.params.items()},
            "record": best.user_attrs.get("record"),
        }
        path = root / f"{name}.best.json"
        path.write_text(json.dumps(out["best"], indent=1))
        out["files"].append(str(path))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = sorted(
        study.trials,
        key=lambda t: (t.value is None, -(t.value or 0) if reverse else (t.value or 0)),
    )
    metric = study.user_attrs.get("metric")
    flags = {  # a trial judged by its record: a complete one (a failed one's may be its rerun's)
        t.number: _trial_flag(t.user_attrs.get("record"), metric)
        if t.state == optuna.trial.TrialState.COMPLETE
        else ""
        for t in rows
    }
    lines = [
        f"# Sweep `{name}`",
        "",
        f"_Written by `bench sweep` from the Optuna study; objective: "
        f"{study.user_attrs.get('objective')} ({study.direction.name.lower()}); do not edit by hand. "
        f"⚠: the trial's model is no result (its test number at or below the floor of its split, or one class "
        f"predicted; bench/report/floors.py); {sum(map(bool, flags.values()))} of {len(rows)} trials._",
        "",
        "| trial | state | " + " | ".join(params) + " | value | record | floor |",
        "|---|---|" + "---|" * (len(params) + 3),
    ]
    for t in rows:
        value = "" if t.value is None else f"{t.value:.4f}"
        if complete and t.number == study.best_trial.number and not flags[t.number]:
            value = f"**{value}**"
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | "
            + " | ".join(_fmt(trial_point(t).get(p, "")) for p in params)
            + f" | {value} | {t.user_attrs.get('record', '')} | {'⚠ ' + flags[t.number] if flags[t.number] else ''} |"
        )
    notes = []
    for kind, plot in (
        ("history", "plot_optimization_history"),
        ("importances", "plot_param_importances"),
        ("slice", "plot_slice"),
    ):
        png = root / f"{name}.{kind}.png"
        try:
            _save_plot(study, plot, png, params)
            out["files"].append(str(png))
            lines += ["", f"![{kind}]({png.name})"]
        except Exception as exc:  # noqa: BLE001 - e.g. importances need 2+ complete trials with varied values
            notes.append(f"- no {kind} plot: {exc}")
    md = root / f"{name}.md"
    md.write_text("\n".join(lines + ([""] + notes if notes else [])) + "\n")
    out["files"].append(str(md))
    return out


def _trial_flag(record_path: str | None, metric: str | None = None) -> str:
    """A trial record's floor flag on the sweep's metric, else on its selection metric
    when that is a registered metric, else on its task's first floored metric ('' for a
    result)."""
    from bench.api.registry import METHODS, METRICS
    from bench.engine.records import read_record
    from bench.report.floors import record_flag

    record = read_record(Path(record_path))[0] if record_path else None
    if not record or not record.ok:
        return ""
    task = TASKS.get(METHODS.get(record.method).cls.task)
    selection = record.selection.selection_metric
    if metric is None:
        metric = selection if selection in METRICS.names() else None
    metric = metric or (task.floored_metrics or task.key_metrics)[0]
    return record_flag(record, metric, task)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _save_plot(study, plot: str, path: Path, params: list[str]) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    # optuna's plots apply their style to the whole process (plt.style.use): kept inside
    # this context, or every later figure of the process (paper plots, the page) changes
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        kwargs = {"params": params} if plot == "plot_slice" else {}
        ax = getattr(ovm, plot)(study, **kwargs)
        fig = (ax if hasattr(ax, "figure") else ax.flat[0]).figure
        fig.set_size_inches(max(6, 3 * len(params)) if plot == "plot_slice" else 6, 4)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
