"""`bench run --jobs N`: N processes share one suite run through the units' locks: every
unit runs exactly once, the cores are divided between them, a pretrained part two of them
need is trained once; bad input is refused once, before any process starts."""

import json
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO

from bench.engine.jobs import job_environment, without_jobs

BENCH = [sys.executable, "-m", "bench.cli"]


def test_the_jobs_divide_the_threads_and_lose_the_option(monkeypatch):
    assert without_jobs(["run", "--jobs", "2", "--suite", "s", "--jobs=3"]) == [
        "run",
        "--suite",
        "s",
    ]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert job_environment(1, 2)["OMP_NUM_THREADS"] == "2"
    assert job_environment(1, 2)["BENCH_JOB"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert job_environment(0, 2)["OMP_NUM_THREADS"] == "1"  # never 0


@pytest.mark.slow
def test_two_jobs_run_every_unit_exactly_once(tmp_path, data_dir):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "task: classification\ndatasets: [breastmnist]\n"
        "methods: [{name: resnet18, options: {input_size: 32}}]\nseeds: [0, 1, 2, 3]\n"
        "presets: {p: {budget: {epochs: 1, batch_size: 32, max_steps: 3}}}\n"
    )
    cmd = BENCH + [
        "run", "--suite", str(suite), "--preset", "p", "--results-dir", str(tmp_path / "r"),
        "--work-dir", str(tmp_path / "w"), "--no-progress", "--jobs", "2", "--data-dir", str(data_dir),
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bench run --jobs 2: 2 processes, 1 thread(s) each" in out.stdout
    lines = out.stdout.splitlines()
    ran = [line for line in lines if "  ok breastmnist/resnet18/seed" in line]
    assert sorted(line.split("seed")[1].split(":")[0] for line in ran) == ["0", "1", "2", "3"]
    assert {line[:7] for line in ran} == {"[job 0]", "[job 1]"}  # both worked
    records = sorted((tmp_path / "r").rglob("seed*.json"))
    assert len(records) == 4
    assert all(json.loads(p.read_text())["status"] == "ok" for p in records)
    assert all("x1 threads" in json.loads(p.read_text())["provenance"]["device"] for p in records)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "  ok " not in again.stdout  # all complete: nothing runs


def test_bad_input_is_refused_once_before_any_job_starts(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("task: classification\ndatasets: [breastmnist]\nmethods: [resnet18]\n")
    out = subprocess.run(
        BENCH + ["run", "--suite", str(suite), "--preset", "nope", "--jobs", "2",
                 "--results-dir", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("bench: error:") == 1
    assert "[job" not in out.stdout + out.stderr and not (tmp_path / "r").exists()


def test_a_pretrained_part_two_processes_need_is_trained_once(tmp_path):
    """cached_pretraining holds a lock per part: the second caller waits, then loads."""
    from bench.api.method import Budget, RunContext
    from bench.nn.pretraining import cached_pretraining
    from bench.train.device import make_accelerator

    acc = make_accelerator("fp32", cpu=True)[0]
    trained = []

    def part(name):  # each its own unit (work folder), one shared cache
        ctx = RunContext(acc, 0, Budget(epochs=1), tmp_path / name, cache_dir=tmp_path / "cache")
        model = torch.nn.Linear(2, 2)

        def train():
            trained.append(name)
            time.sleep(0.5)
            torch.nn.init.constant_(model.weight, 3.0)
            return {"steps": 1}

        out[name] = cached_pretraining("toy", {"p": 1}, model, train, ctx), model

    out = {}
    threads = [threading.Thread(target=part, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1
    assert sorted(s["cache"] for s, _ in out.values()) == ["hit", "miss"]
    assert all(torch.all(m.weight == 3.0) for _, m in out.values())
