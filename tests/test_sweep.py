"""bench sweep: Optuna studies over declared search spaces, resumed from storage,
shared by several processes, with a validation-only objective."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import optuna
import pytest
from conftest import REPO, TINY_SUITE

from bench.api.errors import BenchError
from bench.tools.sweep import declared_space, run_sweep
from bench.tools.trial_workers import abandoned_by, queued_point, trial_point, worker_identity


def sweep(tmp_path, trials=None, params=("lr",), **kw):
    return run_sweep(
        "resnet18",
        "breastmnist",
        list(params),
        suite_name=TINY_SUITE,
        trials=trials,
        results_dir=tmp_path / "results",
        work_dir=tmp_path / "runs",
        **kw,
    )


def study(tmp_path, name="resnet18-breastmnist-smoke-lr"):
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'results' / 'sweeps' / (name + '.db')}"
    )


def records(tmp_path):
    return sorted((tmp_path / "results" / "sweeps").rglob("seed0.json"))


@pytest.mark.slow
def test_a_sweep_resumes_from_its_storage_without_repeating_trials(data_dir, tmp_path):
    out = sweep(tmp_path, 2)
    first = [(t.number, t.params, t.value) for t in study(tmp_path).trials]
    assert out["complete"] == 2 and len(records(tmp_path)) == 2
    out = sweep(tmp_path, 3)  # one more, the first two untouched
    trials = study(tmp_path).trials
    assert [(t.number, t.params, t.value) for t in trials[:2]] == first and len(trials) == 3
    assert len(records(tmp_path)) == 3 and out["best"]["value"] == max(t.value for t in trials)
    sweep(tmp_path, 3)  # complete: nothing runs
    assert len(study(tmp_path).trials) == 3
    md = (tmp_path / "results" / "sweeps" / "resnet18-breastmnist-smoke-lr.md").read_text()
    assert "objective: validation auroc (maximize)" in md and md.count("| complete |") == 3
    assert (tmp_path / "results" / "sweeps" / "resnet18-breastmnist-smoke-lr.history.png").is_file()
    best = json.loads(
        (tmp_path / "results" / "sweeps" / "resnet18-breastmnist-smoke-lr.best.json").read_text()
    )
    assert set(best["config"]) == {"lr"} and os.path.isfile(best["record"])


@pytest.mark.slow
def test_two_processes_on_one_sqlite_study_lose_no_trial(data_dir, tmp_path):
    db = tmp_path / "shared.db"
    cmd = [
        sys.executable,
        "-m",
        "bench.cli",
        "sweep",
        "resnet18",
        "--dataset",
        "breastmnist",
        "--params",
        "lr",
        "--trials",
        "4",
        "--suite",
        TINY_SUITE,
        "--storage",
        f"sqlite:///{db}",
        "--study",
        "shared",
        "--no-progress",
        "--results-dir",
        str(tmp_path / "results"),
        "--work-dir",
        str(tmp_path / "runs"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            cmd + ["--worker", str(w)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}").trials
    finished = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    )  # pruning on validation is allowed
    assert all(t.state in finished for t in trials), [
        (t.number, t.state) for t in trials
    ]  # none failed or left running
    assert len(trials) >= 4  # each process may start one trial before it sees the total reached
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 2 and all(os.path.isfile(t.user_attrs["record"]) for t in complete)
    assert len({t.user_attrs["record"] for t in trials}) == len(
        trials
    )  # the two workers proposed different trials


@pytest.mark.slow
def test_the_objective_never_reads_the_test_split(data_dir, tmp_path, monkeypatch):
    """Same trials on data whose test split is scrambled: same objective values, while the
    records' test metrics (computed for the record, not the objective) do change."""
    import bench.data.load as load

    sweep(tmp_path / "a", 3)
    real_source = load.dataset_source

    def scrambled(entry):
        source = real_source(entry)

        def load_scrambled(**kw):
            bundle = source.load(**kw)
            test = bundle.splits["test"]
            rng = np.random.default_rng(0)
            test.images[:] = rng.integers(0, 256, test.images.shape, dtype=np.uint8)
            test.labels[:] = rng.permutation(test.labels)
            return bundle

        return type(source)(source.name, source.task, load_scrambled, source.description)

    monkeypatch.setattr(load, "dataset_source", scrambled)
    sweep(tmp_path / "b", 3)
    a, b = study(tmp_path / "a").trials, study(tmp_path / "b").trials
    assert [(t.params, t.value) for t in a] == [(t.params, t.value) for t in b]
    test_a = [
        json.loads(p.read_text())["metrics"]["test"]["auroc"] for p in records(tmp_path / "a")
    ]
    test_b = [
        json.loads(p.read_text())["metrics"]["test"]["auroc"] for p in records(tmp_path / "b")
    ]
    assert test_a != test_b


def test_declared_spaces_are_checked():
    assert set(declared_space("diffmic_v2", ["np", "k", "h"])) == {"np", "k", "h"}
    assert declared_space("diffmic_v2", ["np"])["np"].grid() == list(range(1, 11))
    with pytest.raises(
        BenchError, match=r"unknown sweep parameters \['n_p'\].*declared: \['h', 'k', 'np'\]"
    ):
        declared_space("diffmic_v2", ["n_p"])
    with pytest.raises(BenchError, match="declares no search space"):
        declared_space("identity", ["x"])


def test_pretraining_reports_nothing_to_the_pruner(tmp_path):
    """cached_pretraining hides ctx.on_eval while a prior (DCG, CARD's f_phi, D-Cube's
    stage 1) trains, so a trial's intermediate values are the method's own."""
    import torch

    from bench.api.method import Budget, RunContext
    from bench.nn.pretraining import cached_pretraining

    reported = []
    ctx = RunContext(
        None,
        0,
        Budget(),
        tmp_path,
        cache_dir=tmp_path,
        on_eval=lambda step, v: reported.append(step),
    )
    seen_inside = []
    cached_pretraining(
        "x", {}, torch.nn.Linear(1, 1), lambda: seen_inside.append(ctx.on_eval) or {}, ctx
    )
    assert seen_inside == [None] and ctx.on_eval is not None


@pytest.mark.slow
def test_a_grid_is_not_pruned_and_reruns_a_point_left_without_a_complete_trial(data_dir, tmp_path):
    """A grid sweep's point is the whole curve: no pruning by default, and a grid point
    whose only trial was pruned (e.g. by an earlier run with pruning) is run again."""
    name = "resnet18-breastmnist-smoke-wd"
    storage = f"sqlite:///{tmp_path / 'results' / 'sweeps' / (name + '.db')}"
    (tmp_path / "results" / "sweeps").mkdir(parents=True)
    earlier = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.GridSampler({"wd": [0.0, 1e-4, 1e-3]}),
    )
    pruned = (
        earlier.ask()
    )  # a grid trial (grid id set, so the grid sampler counts it as visited), then pruned
    earlier.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    out = sweep(tmp_path, params=["wd"], grid=True)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = {t.params["wd"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert complete == {0.0, 1e-4, 1e-3} and out["complete"] == 3
    assert not any(
        t.state == optuna.trial.TrialState.PRUNED for t in trials[1:]
    )  # nothing pruned this time
    assert len(trials) == 4  # no grid point evaluated twice


def test_grid_values_are_checked_against_the_declared_space():
    space = declared_space("diffmic_v2", ["np", "k"])
    assert space["np"].grid(["2", "10"]) == [2, 10] and space["k"].grid(["4"]) == [4]
    wd = declared_space("resnet18", ["wd"])["wd"]
    assert wd.grid(["1e-4", "0.001", "0"]) == [1e-4, 1e-3, 0.0]  # a choice however it is written
    with pytest.raises(BenchError, match=r"'11' is not a declared value of num_points"):
        space["np"].grid(["11"])
    with pytest.raises(BenchError, match=r"'2.5' is not a declared value of num_points"):
        space["np"].grid(["2.5"])
    with pytest.raises(BenchError, match=r"'3' is not a declared value of num_rois.*\[2, 4, 6"):
        space["k"].grid(["3"])


@pytest.mark.slow
def test_a_grid_of_chosen_values_runs_only_them_in_a_study_of_its_own_seed(data_dir, tmp_path):
    with pytest.raises(BenchError, match="needs --grid"):
        sweep(tmp_path, None, values={"lr": ["1e-3"]})
    out = sweep(tmp_path, params=["wd"], grid=True, values={"wd": ["0.001"]}, seed=1)
    assert out["study"] == "resnet18-breastmnist-smoke-wd-seed1" and out["complete"] == 1
    (record,) = (tmp_path / "results" / "sweeps").rglob("seed1.json")
    r = json.loads(record.read_text())
    assert r["config"]["weight_decay"] == 1e-3 and r["seed"] == 1


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_worker_takes_back_only_the_trials_it_abandoned(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    me = worker_identity(1)
    assert me["slurm_task"] == "77_1"
    # SLURM: the same array task before its requeue, on another node, is this worker's
    assert abandoned_by(me, {**me, "host": "node-a", "pid": 12345})
    assert not abandoned_by(me, {**me, "host": "node-a", "worker": 0, "slurm_task": "77_0"})
    assert not abandoned_by(me, me) and not abandoned_by(me, {})  # itself; a trial of old
    # one machine: this worker number, this host, its process gone
    local = {**me, "slurm_task": None}
    assert abandoned_by(me, {**local, "pid": dead_pid()})
    assert not abandoned_by(me, {**local, "pid": os.getppid()})  # alive
    assert not abandoned_by(me, {**local, "pid": dead_pid(), "worker": 0})  # another worker's
    assert not abandoned_by(me, {**local, "pid": dead_pid(), "host": "elsewhere"})


def test_a_queued_point_is_read_without_optunas_deprecation_warning():
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.01})
    queued, sampled = study.ask(), study.ask()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert queued_point(queued) == {"lr": 0.01} and queued_point(sampled) == {}
    assert not [w for w in seen if issubclass(w.category, FutureWarning)]
    queued.suggest_float("lr", 1e-4, 1.0, log=True)
    study.tell(queued, 0.5)
    assert trial_point(study.trials[0]) == {"lr": 0.01}  # a finished trial: its FrozenTrial


@pytest.mark.slow
def test_a_grid_point_left_running_by_a_killed_worker_runs_again(data_dir, tmp_path):
    """A killed worker's trial stays RUNNING in the study; a resumed grid sweep fails it
    and runs its point again, but leaves alone the point a live worker is running."""
    name = "resnet18-breastmnist-smoke-wd"
    storage = f"sqlite:///{tmp_path / 'results' / 'sweeps' / (name + '.db')}"
    (tmp_path / "results" / "sweeps").mkdir(parents=True)
    earlier = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    earlier.enqueue_trial({"wd": 0.0})
    earlier.enqueue_trial({"wd": 1e-3})
    killed, running = earlier.ask(), earlier.ask()
    killed.set_user_attr("worker", {**worker_identity(0), "pid": dead_pid()})
    alive = subprocess.Popen(["sleep", "600"])
    running.set_user_attr("worker", {**worker_identity(0), "pid": alive.pid})
    try:
        out = sweep(tmp_path, params=["wd"], grid=True, values={"wd": ["0", "0.001"]})
    finally:
        alive.kill()
    trials = optuna.load_study(study_name=name, storage=storage).trials
    State = optuna.trial.TrialState
    assert [t.state for t in trials[:2]] == [State.FAIL, State.RUNNING]
    assert [t.params["wd"] for t in trials if t.state == State.COMPLETE] == [0.0]
    assert out["complete"] == 1 and len(trials) == 3
    md = (tmp_path / "results" / "sweeps" / f"{name}.md").read_text()
    (failed,) = [line for line in md.splitlines() if line.startswith("| 0 | fail | 0 |")]
    assert failed.endswith("|  |")  # not judged by the record its rerun wrote


def test_a_sweep_plot_leaves_the_process_matplotlib_style_alone(tmp_path):
    """optuna's plots apply their style to the whole process: without containing it, every
    later figure of the process (paper plots, the page) came out different (found as a
    committed figure 'stale' in the parallel test run, after a sweep test in one worker)."""
    import matplotlib

    from bench.tools.sweep import _save_plot

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    matplotlib.use("Agg")  # as _save_plot does: the backend is not the style
    before = dict(matplotlib.rcParams)
    for plot in ("plot_optimization_history", "plot_slice"):
        _save_plot(study, plot, tmp_path / f"{plot}.png", ["x"])
        assert (tmp_path / f"{plot}.png").stat().st_size > 1000
    assert dict(matplotlib.rcParams) == before
