"""The prepared GPU run (scripts/gpu-run.sh) cannot run here, but what it runs can be
checked: with `bench` replaced by `echo` and a stand-in `nvidia-smi`, its steps are the
perf measurements issue 36 asks for and issue 34's ODM/DM sweeps (their workers packed
on the GPU), each under its own time limit, and it refuses to run from uncommitted code."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-run.sh"


@pytest.fixture
def clone(tmp_path):
    """A checkout of the committed code (the script checks that it runs from one)."""
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    return path


def run_script(tmp_path, cwd):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BENCH": "echo bench"}
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), "/data"], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, out


def test_the_gpu_run_measures_perf_and_runs_the_odm_and_dm_sweeps(tmp_path, clone):
    done, out = run_script(tmp_path, clone)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if "exit" in line or "workers" in line] == [
        "perf-28px", "perf-diffmic_v2-224px", "sweeps",
    ]  # fmt: skip
    assert "sweeps: 10 workers, 0 failed" in done.stdout
    perf = (out / "perf-28px.log").read_text().split()
    assert perf[:6] == ["bench", "perf", "--suite", "classification", "--preset", "full"]
    big = (out / "perf-diffmic_v2-224px.log").read_text()
    assert "--method diffmic_v2 --image-size 224 --channels 3" in big
    # issue 34's grid: ODM's 4 weights x 3 guidance scales and the DM's 3, seeds 0 and 1,
    # every worker of a study on the same journal storage with its own worker number
    for seed in (0, 1):
        odm = [(out / "sweeps" / f"odm-seed{seed}-worker{w}.log").read_text() for w in range(4)]
        for w, line in enumerate(odm):
            assert line.startswith("bench sweep odm --params guidance,ordinal_weight")
            assert (
                f"--seed {seed} --worker {w} --storage journal://{out}/sweeps/odm-seed{seed}.log"
                in line
            )
            assert (
                "--grid --values guidance=1.0,1.5,2.0" in line
                and f"--results-dir {out}/results" in line
            )
        dm = (out / "sweeps" / f"dm-seed{seed}-worker0.log").read_text()
        assert dm.startswith("bench sweep dm --params guidance --dataset retinamnist")
    assert not (out / "sweeps" / "dm-seed0-worker1.log").exists()
    assert (out / "gpu.txt").read_text().startswith("NVIDIA H100")


def test_the_gpu_run_refuses_uncommitted_code(tmp_path, clone):
    (clone / "bench" / "cli.py").write_text("# changed\n")
    done, _ = run_script(tmp_path, cwd=clone)
    assert done.returncode == 2 and "uncommitted changes" in done.stderr
