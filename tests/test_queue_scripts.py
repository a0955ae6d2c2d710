"""The queue that makes the published records (scripts/queue-worker.sh,
scripts/publish-records.sh), run against a stand-in project: a git repository whose
`bench` writes one record, and whose `.venv` tools log their calls instead of rebuilding
tables. What is checked is the scripts' own work: the line's commit is the code that runs,
the worker's defaults never override the line's own flags, records move from the clean
clone into `results/`, superseded folders go once their replacement has 3 seeds, and
nothing is published from uncommitted code."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FAKE_CLI = """import json, pathlib, sys
VERSION = {version}
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--results-dir") + 1]) / "classification/breastmnist/dcube/abc"
out.mkdir(parents=True, exist_ok=True)
seed = int(args[args.index("--seeds") + 1]) if "--seeds" in args else 0
(out / f"seed{{seed}}.lock").write_text("")
(out / f"seed{{seed}}.json").write_text(json.dumps({{
    "dataset": "breastmnist", "method": "dcube", "seed": seed, "preset": "standard", "status": "ok",
    "metrics": {{"test": {{"auroc": 0.9}}}}, "timings": {{"wall_s": 12.0}},
    "argv": args, "version": VERSION}}))
"""


def git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def make_project(tmp_path) -> Path:
    """A repository with the two scripts, a `bench` at two commits (VERSION 1, then 2) and
    stand-in `.venv` tools that log what they are asked to do."""
    repo = tmp_path / "project"
    (repo / "scripts").mkdir(parents=True)
    for name in ("queue-worker.sh", "publish-records.sh"):
        shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
    (repo / "bench").mkdir()
    (repo / "bench" / "__init__.py").write_text("")
    (repo / ".gitignore").write_text(".venv/\n*.lock\n/runs/\n")
    for folder in ("results", "leaderboards"):
        (repo / folder).mkdir()
        (repo / folder / "README").write_text(f"{folder}\n")
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "calls.log"
    (venv / "bench").write_text(f'#!/bin/sh\necho "bench $*" >> {log}\n')
    (venv / "python").write_text(  # pytest is logged; anything else is the real Python
        f'#!/bin/sh\nif [ "$1 $2" = "-m pytest" ]; then echo "pytest" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    for tool in venv.iterdir():
        tool.chmod(0o755)
    for version in (1, 2):
        (repo / "bench" / "cli.py").write_text(FAKE_CLI.format(version=version))
        git(repo, *(["init", "-q", "-b", "main"] if version == 1 else ["status"]))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"v{version}")
    return repo


def run(repo, script, *args, queue_dir):
    env = {**os.environ, "QUEUE_DIR": str(queue_dir), "BENCH_DATA_DIR": "/data",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["bash", str(repo / "scripts" / script), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_worker_runs_the_lines_commit_in_a_clean_clone_and_publishes_its_records(tmp_path):
    repo = make_project(tmp_path)
    unit = Path("results/classification/breastmnist/dcube/abc")
    (repo / unit).mkdir(parents=True)
    (repo / unit / "seed1.json").write_text("{}")  # made again by the second line (--rerun)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "seed 1 as it was")
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    (queue_dir / "qA.queue").write_text(
        f"{first} run --suite classification --seeds 0\n{first} run --rerun --seeds 1\n"
    )
    done = run(repo, "queue-worker.sh", "qA", queue_dir=queue_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ends with exit 0") == 2 and "queue empty" in done.stdout
    assert (queue_dir / "qA.queue").read_text() == ""
    record = json.loads((repo / unit / "seed0.json").read_text())
    assert record["version"] == 1  # the line's commit ran, not the newer HEAD
    assert record["argv"] == [
        "run", "--suite", "classification", "--seeds", "0", "--no-progress",
        "--results-dir", "results", "--work-dir", f"{queue_dir}/shared-work",
        "--checkpoint-every", "120",
    ]  # fmt: skip
    assert json.loads((repo / unit / "seed1.json").read_text())["argv"][:2] == ["run", "--rerun"]
    assert not (repo / unit / "seed0.lock").exists()  # locks are not records
    assert not (queue_dir / "qA" / unit / "seed0.json").exists()  # moved, not copied
    calls = (tmp_path / "calls.log").read_text()
    assert "bench rescore --suite classification --data-dir /data" in calls
    assert "bench paper odm" in calls and "pytest" in calls
    log = git(repo, "log", "-3", "--format=%s").splitlines()
    assert log[0].startswith("Records from the queue (qA): breastmnist dcube seed 1")
    assert log[0].endswith("12 s, made again); tables rebuilt")
    assert log[1].startswith("Records from the queue (qA): breastmnist dcube seed 0")
    assert "(standard, ok: auroc 0.900, 12 s)" in log[1]
    assert git(repo, "status", "--porcelain") == ""


def test_a_lines_own_flags_win_over_the_workers_defaults(tmp_path):
    repo = make_project(tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    elsewhere = tmp_path / "sweep-results"
    (queue_dir / "qB.queue").write_text(f"{head} sweep odm --results-dir {elsewhere}\n")
    done = run(repo, "queue-worker.sh", "qB", queue_dir=queue_dir)
    assert done.returncode == 0, done.stderr
    record = json.loads(next(elsewhere.rglob("seed0.json")).read_text())
    assert record["version"] == 2
    assert record["argv"] == [
        "sweep", "odm", "--results-dir", str(elsewhere), "--no-progress",
        "--work-dir", f"{queue_dir}/shared-work",
    ]  # fmt: skip
    # (no --checkpoint-every: a sweep has none)
    assert "nothing new in results/" in done.stdout  # its records stay where it put them


def test_publishing_removes_superseded_folders_and_refuses_uncommitted_code(tmp_path):
    repo = make_project(tmp_path)
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    unit = repo / "results" / "classification" / "breastmnist" / "dcube"
    (unit / "old").mkdir(parents=True)
    (unit / "old" / "seed0.json").write_text("{}")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "old record")
    (queue_dir / "superseded.txt").write_text("classification/breastmnist/dcube old new\n")
    (unit / "new").mkdir()
    for seed in (0, 1):
        (unit / "new" / f"seed{seed}.json").write_text(json.dumps({
            "dataset": "breastmnist", "method": "dcube", "seed": seed, "preset": "standard",
            "status": "ok", "metrics": {"test": {"auroc": 0.8}}}))  # fmt: skip
    (repo / "bench" / "cli.py").write_text("# edited\n")
    done = run(repo, "publish-records.sh", queue_dir=queue_dir)
    assert done.returncode == 1 and "uncommitted changes" in done.stdout
    assert "bench/cli.py" in done.stdout and git(repo, "log", "-1", "--format=%s") == "old record"
    git(repo, "checkout", "bench/cli.py")
    done = run(repo, "publish-records.sh", "Test", queue_dir=queue_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (unit / "old").exists()  # 2 seeds of the replacement: the old folder stays
    assert git(repo, "log", "-1", "--format=%s").startswith("Test: breastmnist dcube seed 0")
    (unit / "new" / "seed2.json").write_text((unit / "new" / "seed1.json").read_text())
    done = run(repo, "publish-records.sh", "Test", queue_dir=queue_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "superseded by new" in done.stdout and not (unit / "old").exists()
    assert git(repo, "status", "--porcelain") == ""
