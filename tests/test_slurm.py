"""`bench run --executor slurm` on a real single-node SLURM (Debian's slurm-wlm and munge,
started by .ci/slurm-up, which .ci/run calls; the tests start it themselves where it is
not running and skip, saying why, only where it cannot be had): an array runs every unit
once at most --max-parallel at a time, with the metrics of a local run; a second
submission submits nothing; a preempted unit is requeued and resumes. The sbatch script
for given options is checked without a cluster."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY_SUITE, whole_checkpoints

from bench.cli import main
from bench.tools.slurm import SlurmOptions, sbatch_script

CONF = Path("/tmp/bench-slurm/slurm.conf")


def test_the_sbatch_script_carries_the_options_and_nothing_site_specific(tmp_path):
    options = SlurmOptions(
        partition="gpu", account="lab", gpus=1, cpus=4, mem="16G", time_min=90, max_parallel=2
    )
    script = sbatch_script(options, tmp_path / "%j", 4).splitlines()
    for line in (
        "#SBATCH --array=0-3%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --time=90",
        "#SBATCH --signal=USR2@90",
        "export OMP_NUM_THREADS=4",
    ):
        assert line in script, line
    plain = sbatch_script(SlurmOptions(), tmp_path / "%j", 3)
    assert "--partition" not in plain and "--account" not in plain and "--gpus" not in plain
    assert "#SBATCH --array=0-2%3" in plain.splitlines()  # submitit: at most the tasks


def node_idle(env) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip().split()[:1] in (["idle"], ["mix"], ["alloc"])


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running single-node SLURM, or a skip that says why there is none."""
    env = {**os.environ, "SLURM_CONF": str(CONF)}
    if not (shutil.which("sinfo") and CONF.is_file() and node_idle(env)):
        up = subprocess.run(
            [str(REPO / ".ci" / "slurm-up"), str(CONF.parent)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if up.returncode != 0:
            pytest.skip(f"no SLURM here: {up.stderr.strip()}")
    os.environ["SLURM_CONF"] = str(CONF)
    return env


def wait_for(condition, timeout: float, what: str, every: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def squeue(env, job: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True
    )
    return out.stdout.split()


def submit(args, capsys) -> tuple[int, str, str | None]:
    code = main(["run", *args, "--executor", "slurm"])
    out = capsys.readouterr().out
    job = next(
        (
            w
            for line in out.splitlines()
            if line.startswith("submitted SLURM array")
            for w in line.split()[3:4]
        ),
        None,
    )
    return code, out, job


@pytest.mark.slow
def test_an_array_runs_every_unit_once_as_a_local_run_would(slurm, tmp_path, data_dir, capsys):
    common = ["--suite", TINY_SUITE, "--preset", "smoke", "--data-dir", str(data_dir)]
    code, out, job = submit(
        [*common, "--results-dir", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w"),
         "--max-parallel", "2"], capsys,
    )  # fmt: skip
    assert code == 0 and "4 units: 0 complete, 0 running, 4 to submit" in out and job
    running = []

    def done():
        states = squeue(slurm, job)
        running.append(states.count("RUNNING"))
        return not states

    wait_for(done, 600, f"array {job} to finish", every=0.5)
    assert max(running) <= 2  # --max-parallel
    records = sorted((tmp_path / "r").rglob("seed*.json"))
    assert len(records) == 4
    ours = {p.relative_to(tmp_path / "r"): json.loads(p.read_text()) for p in records}
    assert all(r["status"] == "ok" for r in ours.values())
    logs = sorted((tmp_path / "w" / "slurm").glob(f"{job}_*/*_log.out"))
    assert len(logs) == 4 and sum("  ok " in p.read_text() for p in logs) == 4  # each once
    # the same units by a local `bench run`: the same metrics
    assert main(["run", *common, "--results-dir", str(tmp_path / "local"), "--no-progress",
                 "--work-dir", str(tmp_path / "lw")]) == 0  # fmt: skip
    for rel, record in ours.items():
        local = json.loads((tmp_path / "local" / rel).read_text())
        assert local["metrics"]["test"] == pytest.approx(record["metrics"]["test"]), rel
    # submitted again: everything is complete, nothing is submitted
    code, out, job = submit(
        [*common, "--results-dir", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w")], capsys
    )
    assert code == 0 and "4 units: 4 complete, 0 running, 0 to submit" in out and job is None
    assert main(["status", *common, "--results-dir", str(tmp_path / "r")]) == 0
    assert "4 units: 4 complete" in capsys.readouterr().out


@pytest.mark.slow
def test_a_preempted_unit_is_requeued_and_resumes(slurm, tmp_path, data_dir, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "task: classification\ndatasets: [breastmnist]\n"
        "methods: [{name: resnet18, options: {input_size: 32}}]\nseeds: [0]\n"
        "presets: {p: {budget: {epochs: 20, batch_size: 64}}}\n"
    )
    code, out, job = submit(
        ["--suite", str(suite), "--preset", "p", "--data-dir", str(data_dir), "--results-dir",
         str(tmp_path / "r"), "--work-dir", str(tmp_path / "w"), "--checkpoint-every", "0"], capsys,
    )  # fmt: skip
    assert code == 0 and job
    wait_for(lambda: whole_checkpoints(tmp_path / "w"), 300, "a first checkpoint", every=0.2)
    plan = json.loads((tmp_path / "w" / "slurm" / job / "plan.json").read_text())
    task = plan["units"][0]["task"]  # submitit submits a single task as a plain job
    cancel = subprocess.run(
        ["scancel", "--signal=USR2", task], env=slurm, capture_output=True, text=True
    )
    assert cancel.returncode == 0, (cancel.stderr, squeue(slurm, task))
    wait_for(lambda: squeue(slurm, task) == ["PENDING"], 120, "the requeued task")
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], env=slurm)
    wait_for(lambda: not squeue(slurm, task), 600, "the requeued task to finish")
    record = json.loads(next((tmp_path / "r").rglob("seed0.json")).read_text())
    assert record["status"] == "ok" and record["selection"]["resumed_after_epoch"] >= 1
    log = "".join(p.read_text() for p in (tmp_path / "w" / "slurm").rglob("*_log.*"))
    assert "this job is preempted" in log and "resuming after epoch" in log


def test_sqlite_on_a_network_file_system_is_refused_and_a_journal_works(tmp_path, monkeypatch):
    import optuna

    import bench.tools.optuna_storage as sweep
    from bench.api.errors import BenchError

    monkeypatch.setattr(sweep, "file_system", lambda path: "nfs")
    with pytest.raises(BenchError, match=r"SQLite on a network file system \(nfs\).*journal://"):
        sweep.open_storage(f"sqlite:///{tmp_path}/study.db")
    storage = sweep.open_storage(f"journal://{tmp_path}/j/study.log")
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(
        study_name="s", storage=sweep.open_storage(f"journal://{tmp_path}/j/study.log")
    )
    assert len(again.trials) == 2


@pytest.mark.slow
def test_a_sweep_on_slurm_shares_one_journal_study_between_its_workers(
    slurm, tmp_path, data_dir, capsys
):
    import optuna

    from bench.tools.optuna_storage import open_storage

    code = main(
        ["sweep", "resnet18", "--dataset", "breastmnist", "--params", "wd", "--grid",
         "--suite", TINY_SUITE, "--preset", "smoke", "--data-dir", str(data_dir),
         "--results-dir", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w"),
         "--executor", "slurm", "--workers", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "2 workers sharing journal://" in out
    job = next(line.split()[3] for line in out.splitlines() if line.startswith("submitted SLURM"))
    wait_for(lambda: not squeue(slurm, job), 600, f"sweep array {job}", every=0.5)
    log = tmp_path / "r" / "sweeps" / "resnet18-breastmnist-smoke-wd.log"
    study = optuna.load_study(
        study_name="resnet18-breastmnist-smoke-wd", storage=open_storage(f"journal://{log}")
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["wd"] for t in done) == [0.0, 1e-4, 1e-3]  # each grid point once
    assert len(study.trials) == 3
