import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_SUITE, tiny_leaderboard, tiny_run

from baselines.timm_classifier import TimmClassifierConfig
from bench.api.method import ClassificationMethod, MethodSpec
from bench.api.registry import METHODS
from bench.cli import main
from bench.data.locate import md5sum
from bench.engine.outcome import UnitStatus
from bench.engine.records import load_records
from bench.engine.runner import run_suite
from bench.metrics.classification import compute_all
from bench.nn.timm_models import build_timm_model
from bench.train.device import cpu_has_native_bf16
from bench.train.supervised import SupervisedSettings, train_supervised

BENCH = [sys.executable, "-m", "bench.cli"]


def _run(tmp_path, **kw):
    kw.setdefault("progress", False)
    return run_suite(
        TINY_SUITE, "smoke", results_dir=tmp_path / "results", work_dir=tmp_path / "runs", **kw
    )


def test_suite_records_are_complete_and_resume_skips(data_dir, tmp_path):
    outcomes = _run(tmp_path, methods=["resnet18"])
    assert [o.status for o in outcomes] == ["ok", "ok"]
    records = load_records(tmp_path / "results", "tiny")
    assert sorted(r.seed for r in records) == [0, 1]
    r = records[0]
    assert r.schema_version == "1.0" and r.ok and r.preset == "smoke"
    assert r.config["input_size"] == 32 and r.config["model"] == "resnet18"
    assert r.data.files and list(r.data.files.values()) == [md5sum(data_dir / "breastmnist.npz")]
    with np.load(
        data_dir / "breastmnist.npz"
    ) as npz:  # the official file, or the committed subset of it
        n = {s: len(npz[f"{s}_labels"]) for s in ("train", "val", "test")}
    written = json.loads(r.path.read_text())
    assert r.data.n == n and "duplicates_across_splits" in written["data"]
    prov = written["provenance"]
    assert {
        "git_commit",
        "git_dirty",
        "packages",
        "device",
        "precision",
        "started",
        "finished",
    } <= set(prov)
    assert prov["packages"]["torch"].startswith("2.")
    # precision auto: bf16 autocast on a CPU with native bf16, fp32 elsewhere; threads as allowed
    assert (
        prov["precision"]
        == ("bf16" if cpu_has_native_bf16() else "fp32")
        == prov["execution"]["precision"]
    )
    execution = r.provenance.execution
    assert execution.threads == torch.get_num_threads() and execution.allowed_cores >= 1
    # the CPU is named (bf16 kernels, and so last digits, differ between microarchitectures)
    assert execution.cpu_capability == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next((line for line in cpuinfo if line.startswith("flags")), "flags:").split()
    assert set(execution.cpu_isa) <= set(flags) and ("avx2" in execution.cpu_isa) == (
        "avx2" in flags
    )
    assert (
        r.provenance.cpu.startswith(execution.cpu_model) and "not recorded" not in r.provenance.cpu
    )
    assert r.timings.train_images_per_s > 0 and r.timings.inference_images_per_s > 0
    assert r.memory.peak_mb > 0
    assert 1 <= r.selection.best_epoch <= r.selection.epochs_run and r.selection.other["steps"] == 4
    assert len(r.per_class("test")["auroc"]) == 2
    # the stored per-sample scores reproduce the recorded metrics exactly
    preds = r.load_predictions()
    assert compute_all(preds["test_labels"], preds["test_probs"].astype(np.float64), "binary")[
        "accuracy"
    ] == r.metric("test", "accuracy")
    assert preds["test_ids"][0] == "test/0" and preds["val_probs"].shape == (n["val"], 2)
    # different seeds give different models
    assert records[0].split_metrics("test") != records[1].split_metrics("test")

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.json")}
    again = _run(tmp_path, methods=["resnet18"])
    assert [o.status for o in again] == [UnitStatus.COMPLETE] * 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.json")} == mtimes


class NaNLoss(ClassificationMethod):
    """Test double: a real model whose loss turns NaN."""

    Config = TimmClassifierConfig

    def fit(self, train, val, ctx):
        model = build_timm_model(self.config, self.spec.channels, self.spec.num_classes)
        s = SupervisedSettings(1e-3, 0.0, (), 0.1, "auroc", 32)
        return train_supervised(
            model,
            train,
            val,
            ctx,
            s,
            self.spec.task,
            loss_fn=lambda out, y: out.sum() * float("nan"),
        )


def test_failing_unit_is_recorded_and_suite_goes_on(data_dir, tmp_path, capsys):
    METHODS.add("test_nan_loss", MethodSpec(NaNLoss, {"model": "resnet18"}, "test double"))
    code = main(
        [
            "run",
            "--suite",
            TINY_SUITE,
            "--methods",
            "test_nan_loss,resnet18",
            "--seeds",
            "0",
            "--results-dir",
            str(tmp_path / "results"),
            "--work-dir",
            str(tmp_path / "runs"),
            "--no-progress",
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "1 units run" in out and "1 failed" in out and "loss became nan" in out
    failed = load_records(tmp_path / "results", "tiny", status="failed")
    assert len(failed) == 1 and failed[0].method == "test_nan_loss"
    assert failed[0].error.type == "TrainingError" and "epoch 1, step 1" in failed[0].error.message
    assert [r.method for r in load_records(tmp_path / "results", "tiny")] == ["resnet18"]


def test_unknown_method_fails_before_training(tmp_path, capsys):
    assert (
        main(
            ["run", "--suite", TINY_SUITE, "--methods", "resnet81", "--results-dir", str(tmp_path)]
        )
        == 2
    )
    assert "did you mean 'resnet18'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


def test_missing_data_fails_units_or_falls_back_to_synthetic(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing"))
    args = tiny_run(tmp_path, work=False)
    assert main(args) == 2  # no dataset can be loaded: one error line, no record
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "data file 'breastmnist.npz' not found" in err[0]
        and not list((tmp_path / "r").rglob("*.json"))
    )
    assert main(args + ["--fallback-synthetic"]) == 0
    assert "NO REAL DATA for breastmnist" in capsys.readouterr().out
    (rec,) = load_records(tmp_path / "r", "tiny")
    assert rec.dataset == "synthetic_lesions" and rec.data.synthetic
    assert main(tiny_leaderboard(tmp_path)) == 0
    md = (tmp_path / "lb" / "tiny.md").read_text()
    assert "SYNTHETIC DATA" in md and "## synthetic_lesions (smoke) — SYNTHETIC" in md


def test_killed_run_resumes_with_remaining_units_only(data_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = BENCH + tiny_run(tmp_path, one_unit=False)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not list((tmp_path / "r").rglob("seed*.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("seed*.json")}
    assert 1 <= len(first) < 4, "kill landed after the suite finished; cannot test resume"
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600).stdout
    assert f"{4 - len(first)} units run, {len(first)} already complete, 0 failed" in out
    assert len(list((tmp_path / "r").rglob("seed*.json"))) == 4
    assert {p: p.stat().st_mtime_ns for p in first} == first  # finished units untouched
    assert not list((tmp_path / "r").rglob("*.tmp"))


@pytest.mark.slow
def test_two_processes_split_units_and_match_single_process(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads per process as the launched ranks
    common = ["run", "--suite", TINY_SUITE, "--work-dir", str(tmp_path / "w"), "--no-progress"]
    launch = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "bench.cli",
    ]

    def run_multi():
        return subprocess.run(
            launch + common + ["--results-dir", str(tmp_path / "multi")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    multi = run_multi()
    if multi.returncode != 0 and "exitcode: -6" in multi.stderr:
        # a rank dies with SIGABRT inside torch's launcher now and then on a busy 2-core box
        # (2 of ~10 runs in pytest, none of 5 from a shell; its cause is not found yet): the
        # launch is repeated once, and a second abort fails with the ranks' last lines
        warnings.warn(
            "two-process run aborted (SIGABRT in a rank); retried once:\n" + multi.stderr[-3000:],
            stacklevel=1,
        )
        for leftover in ("multi", "w"):
            shutil.rmtree(tmp_path / leftover, ignore_errors=True)
        multi = run_multi()
    assert multi.returncode == 0, multi.stderr[-4000:]
    assert (
        "4 units run, 0 already complete, 0 failed" in multi.stdout
        and "on 2 process(es)" in multi.stdout
    )
    single = subprocess.run(
        BENCH + common + ["--results-dir", str(tmp_path / "single")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    m, s = load_records(tmp_path / "multi", "tiny"), load_records(tmp_path / "single", "tiny")
    assert len(m) == len(s) == 4
    assert {r.provenance.num_processes for r in m} == {2}
    for a, b in zip(m, s):
        assert (a.method, a.seed) == (b.method, b.seed)
        assert a.metrics == b.metrics
        assert np.array_equal(
            a.load_predictions()["test_probs"], b.load_predictions()["test_probs"]
        )


def test_timm_adapters(tmp_path):
    cfg = TimmClassifierConfig(model="resnet18", small_input_stem=True)
    model = build_timm_model(cfg, in_chans=1, num_classes=3)
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(Exception, match="weights_file"):
        build_timm_model(TimmClassifierConfig(pretrained=True), 3, 2)
    source = build_timm_model(TimmClassifierConfig(), 3, 10)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = build_timm_model(
        TimmClassifierConfig(pretrained=True, weights_file=str(tmp_path / "w.pth")), 3, 2
    )
    assert torch.equal(loaded.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert loaded.fc.out_features == 2


def test_a_pipeline_check_preset_is_never_written_into_the_published_results(tmp_path, capsys):
    """smoke is `published: false`: bench run refuses the project's results/ before it
    trains anything, accepts any other folder; and no committed record is a smoke one."""
    import json

    from bench.engine.config import load_suite
    from bench.engine.provenance import REPO

    published = REPO / "results"
    before = sorted(published.rglob("*"))
    assert (
        main(
            [
                "run",
                "--suite",
                "classification",
                "--preset",
                "smoke",
                "--datasets",
                "breastmnist",
                "--methods",
                "resnet18",
                "--seeds",
                "0",
                "--results-dir",
                str(published),
                "--work-dir",
                str(tmp_path / "w"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "preset 'smoke' is a pipeline check and is never published" in capsys.readouterr().err
    assert sorted(published.rglob("*")) == before
    unpublished = {
        (s, p.name)
        for s in ("classification", "generation", "restoration")
        for p in load_suite(s).presets.values()
        if not p.published
    }
    assert ("classification", "smoke") in unpublished
    for path in published.rglob("seed*.json"):
        r = json.loads(path.read_text())
        assert (r["suite"], r["preset"]) not in unpublished, path
