"""What makes a unit complete, and that no work is lost or done twice: the data it was
computed from is part of its identity, several processes share a results folder
through per-unit locks, and a record that cannot be written costs no retraining."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_leaderboard, tiny_run

from bench.api import record as record_module
from bench.api.record import Data, Record
from bench.cli import main
from bench.engine import records
from bench.engine.records import load_records, refuse_unpublished, unit_lock

BENCH = [sys.executable, "-m", "bench.cli"]


def _shuffled_copy(data_dir, target):
    """BreastMNIST with its training labels permuted: same shapes and split sizes, other data."""
    target.mkdir()
    with np.load(data_dir / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["train_labels"] = np.random.default_rng(0).permutation(arrays["train_labels"])
    np.savez_compressed(target / "breastmnist.npz", **arrays)
    return target


def test_a_record_made_from_other_data_is_run_again_and_says_what_it_replaced(
    data_dir, tmp_path, monkeypatch, capsys
):
    assert main(tiny_run(tmp_path)) == 0
    (first,) = load_records(tmp_path / "r", "tiny")
    monkeypatch.setenv("BENCH_DATA_DIR", str(_shuffled_copy(data_dir, tmp_path / "shuffled")))
    capsys.readouterr()
    assert main(tiny_run(tmp_path)) == 0
    out = capsys.readouterr().out
    assert (
        "1 units run, 0 already complete" in out
        and "1 of them have a record made from other data" in out
    )
    (second,) = load_records(tmp_path / "r", "tiny")
    assert list(second.data.files.values()) != list(first.data.files.values())
    assert second.replaces["files"] == first.data.files
    assert second.replaces["finished"] == first.provenance.finished
    assert main(tiny_run(tmp_path)) == 0  # the same data again: complete
    assert "0 units run, 1 already complete" in capsys.readouterr().out
    assert (
        main(tiny_run(tmp_path, "--rerun")) == 0
    )  # asked for: runs even so, and says what it replaced
    assert "1 units run, 0 already complete" in capsys.readouterr().out
    (third,) = load_records(tmp_path / "r", "tiny")
    assert third.replaces["finished"] == second.provenance.finished


def test_two_processes_on_one_results_folder_share_its_units(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = BENCH + tiny_run(tmp_path, one_unit=False)
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    ran = [
        int(line.split(" units run")[0])
        for out, _ in outs
        for line in out.splitlines()
        if " units run, " in line
    ]
    assert sum(ran) == 4, [
        o for o, _ in outs
    ]  # each of the 4 units trained once, by one of the two
    assert all(n >= 1 for n in ran), (
        "one process did all the work: the other could not start in time to share"
    )
    assert len(load_records(tmp_path / "r", "tiny")) == 4
    assert not list((tmp_path / "r").rglob("*.lock")) and not list((tmp_path / "r").rglob("*.tmp"))


def test_a_lock_is_exclusive_and_never_stale_after_kill_9(tmp_path):
    stem = tmp_path / "r" / "seed0"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from bench.engine.records import unit_lock\n"
                f"with unit_lock(Path({str(stem)!r})) as ok:\n    print(ok, flush=True); time.sleep(600)"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    with unit_lock(stem) as got:
        assert got is False
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert stem.with_suffix(".lock").exists()  # left behind by the killed holder ...
    with unit_lock(stem) as got:  # ... and free all the same
        assert got is True
    assert not stem.with_suffix(".lock").exists()


def test_a_record_that_cannot_be_written_is_one_error_and_its_rerun_does_not_train(
    data_dir, tmp_path, monkeypatch, capsys
):
    real_write = record_module.atomic_write

    def disk_full(path, write):
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, write)

    monkeypatch.setattr(record_module, "atomic_write", disk_full)
    assert main(tiny_run(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "cannot write its record" in err[0]
        and "No space left on device" in err[0]
    ), err
    assert "rerun writes the record without training again" in err[0]
    assert not [
        p for p in (tmp_path / "r").rglob("*") if p.is_file()
    ]  # no orphan .npz, .tmp or .lock
    assert list((tmp_path / "w").rglob("*.resume.pt"))  # the trained state is kept

    monkeypatch.setattr(record_module, "atomic_write", real_write)
    assert main(tiny_run(tmp_path)) == 0
    (rec,) = load_records(tmp_path / "r", "tiny")
    epochs = rec.selection.epochs_run
    assert (
        f"resuming after epoch {epochs} of {epochs}" in capsys.readouterr().out
    )  # nothing left to train
    assert rec.selection.other["resumed_after_epoch"] == epochs
    assert not list((tmp_path / "w").rglob("*.resume.pt"))  # removed once the record is safe


def test_records_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        record = Record(
            suite="s", preset="p", dataset="d", method="m", seed=0, config_hash="h", status="ok"
        )
        records.write_record(tmp_path / "seed0", record, {"test_probs": np.zeros((1, 2))})
    finally:
        os.umask(old)
    assert {p.suffix: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        ".json": 0o644,
        ".npz": 0o644,
    }


def test_published_records_come_from_committed_code(monkeypatch):
    from bench.engine import provenance
    from bench.engine.config import load_suite

    standard = load_suite("classification").preset("standard")
    monkeypatch.setattr(provenance, "git_state", lambda: {"git_commit": "abc", "git_dirty": True})
    with pytest.raises(records.BenchError, match="uncommitted changes.*--allow-dirty"):
        refuse_unpublished(standard, REPO / "results")
    refuse_unpublished(standard, REPO / "results", allow_dirty=True)
    refuse_unpublished(standard, REPO / "runs" / "results")  # a user's own folder takes any code
    monkeypatch.setattr(provenance, "git_state", lambda: {"git_commit": "abc", "git_dirty": False})
    refuse_unpublished(standard, REPO / "results")


def test_named_dataset_falls_back_to_its_synthetic_twin(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing"))
    assert main(tiny_run(tmp_path, "--datasets", "breastmnist", "--fallback-synthetic")) == 0
    assert "NO REAL DATA for breastmnist" in capsys.readouterr().out
    (rec,) = load_records(tmp_path / "r", "tiny")
    assert rec.dataset == "synthetic_lesions"
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "breastmnist.npz").write_bytes(
        b"not a zip file"
    )  # there, but bad: never replaced
    capsys.readouterr()
    assert main(tiny_run(tmp_path, "--datasets", "breastmnist", "--fallback-synthetic")) == 2
    assert "breastmnist.npz: not a readable MedMNIST .npz file" in capsys.readouterr().err
    assert len(load_records(tmp_path / "r", "tiny", status=None)) == 1  # the synthetic record only


def test_a_registered_dataset_outside_the_suite_runs_with_its_methods(data_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(
        data_dir / "breastmnist.npz", other / "pneumoniamnist.npz"
    )  # same format, not the official file
    assert main(tiny_run(tmp_path, "--datasets", "pneumoniamnist", "--data-dir", str(other))) == 0
    (rec,) = load_records(tmp_path / "r", "tiny")
    assert rec.dataset == "pneumoniamnist" and rec.method == "resnet18"
    assert any("not the official" in note for note in rec.data.notes), rec.data
    assert main(tiny_leaderboard(tmp_path)) == 0
    md = (tmp_path / "lb" / "tiny.md").read_text()
    assert "## pneumoniamnist" in md and "⚠ pneumoniamnist.npz: MD5" in md
    capsys.readouterr()
    assert main(tiny_run(tmp_path, "--datasets", "pneumoniamnst")) == 2
    err = capsys.readouterr().err
    assert "'pneumoniamnst' is neither in suite 'tiny'" in err and "pneumoniamnist" in err


def test_data_identity_ignores_paths_and_compares_pixels_where_both_records_have_them():
    def same_data(a, b):
        return Data.from_dict(a).same_as(Data.from_dict(b))

    a = {"split_hash": "s", "files": {"/x/a.csv": "m"}, "images_sha256": "i1"}
    assert same_data(
        a, {**a, "files": {"/elsewhere/a.csv": "m"}}
    )  # another machine's path, same file
    assert not same_data(a, {**a, "files": {"/x/a.csv": "m2"}})
    assert not same_data(
        a, {**a, "images_sha256": "i2"}
    )  # an image changed under the same manifest
    assert not same_data(a, {**a, "split_hash": "t"})
    assert same_data(
        {k: v for k, v in a.items() if k != "images_sha256"}, a
    )  # a record from before the pixel hash


def test_make_run_writes_only_into_an_ignored_folder():
    """The main job is the user's: it trains into runs/make-run/ (git-ignored), never
    into the published results/ or leaderboards/ (whose records would count as done)."""
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    commands = [
        line for line in dry.splitlines() if "bench run" in line or "bench leaderboard" in line
    ]
    assert len(commands) == 2, dry
    for line in commands:
        dirs = [
            line.split(flag)[1].split()[0]
            for flag in ("--results-dir ", "--work-dir ", "--out-dir ")
            if flag in line
        ]
        assert dirs and all(d.startswith("runs/make-run/") for d in dirs), line
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "runs/make-run/results/x.json"], cwd=REPO
    )
    assert ignored.returncode == 0


def test_dataset_options_size_a_method_for_one_dataset_and_leave_the_others_alone(tmp_path):
    """The classification suite's 64 px BreastMNIST: DiffMIC-v2 at the images' own size
    with its ROI tiles scaled; the 28 px units keep their options and hashes, and the
    ablation variants (sized like diffmic_v2) follow it on that dataset too."""
    from bench.engine.config import load_suite
    from bench.engine.planning import plan_units

    suite = load_suite("classification")
    units, _ = plan_units(
        suite,
        suite.preset("standard"),
        ["breastmnist", "breastmnist_64"],
        ["diffmic_v2", "diffmic_v2_c3", "resnet18"],
        [0],
        tmp_path,
        "bf16",
    )
    by = {(u.dataset, u.method): u for u in units}
    assert by["breastmnist", "diffmic_v2"].config_hash == "538fb77514"  # the committed records'
    assert by["breastmnist", "diffmic_v2"].config["image_size"] == 28
    for method in ("diffmic_v2", "diffmic_v2_c3"):
        config = by["breastmnist_64", method].config
        assert (config["image_size"], config["roi_size"]) == (64, 16)
        assert config["global_encoder_kwargs"] == {"patch_size": 8}
        assert config["latent_dim"] == 1024  # the preset's options stay under the override
    assert by["breastmnist_64", "resnet18"].config == by["breastmnist", "resnet18"].config


def test_bad_dataset_options_are_one_error_naming_the_preset(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "task: classification\ndatasets: [breastmnist]\nmethods: [resnet18]\n"
        "presets: {p: {budget: {epochs: 1}, dataset_options: {breastmnist: [resnet18]}}}\n"
    )
    assert main(["run", "--suite", str(bad), "--results-dir", str(tmp_path / "r")]) == 2
    assert (
        "preset 'p': 'dataset_options' must map dataset -> method -> options"
        in capsys.readouterr().err
    )
