"""Bad suite values, bad seeds, damaged records and files, planted caches, SIGTERM and
near-floor models (issue 35): each is one clear line, and nothing is written or lost."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    TINY_SUITE,
    real_data_dir,
    tiny_leaderboard,
    tiny_run,
    whole_checkpoints,
    write_binary_record,
)

from bench.api.method import Budget, RunContext
from bench.cli import main
from bench.nn.pretraining import cached_pretraining
from bench.train.device import make_accelerator
from bench.train.resume import load_checkpoint

BENCH = [sys.executable, "-m", "bench.cli"]


def suite_file(
    tmp_path,
    budget="{epochs: 1, batch_size: 32, max_steps: 2}",
    options="{input_size: 32}",
    seeds="[0]",
):
    path = tmp_path / "s.yaml"
    path.write_text(
        "task: classification\ndatasets: [breastmnist]\n"
        f"methods: [{{name: resnet18, options: {options}}}]\nseeds: {seeds}\n"
        f"presets: {{p: {{budget: {budget}}}}}\n"
    )
    return str(path)


def run(args, capsys):
    code = main(args)
    return code, capsys.readouterr()


# 1. suite values are type-checked where they enter
@pytest.mark.parametrize(
    "budget, options, line",
    [
        (
            "{epochs: ten}",
            "{input_size: 32}",
            "preset 'p': budget: option 'epochs' must be an integer, not 'ten' (str)",
        ),
        (
            "{epochs: 1}",
            "{input_size: thirty-two}",
            "method 'resnet18': TimmClassifier: option 'input_size' must be an integer or null, not 'thirty-two' (str)",
        ),
        ("{epochs: 1}", "{lr: fast}", "option 'lr' must be a number, not 'fast' (str)"),
    ],
)
def test_a_suite_value_of_the_wrong_type_is_one_line_and_nothing_is_written(
    tmp_path, capsys, budget, options, line
):
    suite = suite_file(tmp_path, budget=budget, options=options)
    code, out = run(
        ["run", "--suite", suite, "--preset", "p", "--results-dir", str(tmp_path / "r")], capsys
    )
    assert code == 2 and line in out.err and len(out.err.strip().splitlines()) == 1
    assert "suite file" in out.err and not (tmp_path / "r").exists()


# 2. seeds are integers in 0..2**32 - 1, on the command line and in a suite
@pytest.mark.parametrize("where", ["cli", "suite", "sweep"])
def test_a_negative_or_too_large_seed_is_refused_before_anything_runs(tmp_path, capsys, where):
    results = str(tmp_path / "r")
    if where == "cli":
        args = [
            "run",
            "--suite",
            suite_file(tmp_path),
            "--preset",
            "p",
            "--seeds",
            "-1",
            "--results-dir",
            results,
        ]
        line = "bench run --seeds: seed -1 is out of range (0 to 2**32 - 1)"
    elif where == "suite":
        args = [
            "run",
            "--suite",
            suite_file(tmp_path, seeds="[4294967296]"),
            "--preset",
            "p",
            "--results-dir",
            results,
        ]
        line = "seeds: seed 4294967296 is out of range"
    else:
        args = [
            "sweep",
            "resnet18",
            "--dataset",
            "breastmnist",
            "--params",
            "lr",
            "--seed",
            "-3",
            "--results-dir",
            results,
        ]
        line = "bench sweep --seed: seed -3 is out of range"
    code, out = run(args, capsys)
    assert code == 2 and line in out.err and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def one_record(tmp_path_factory):
    """A tiny real run: one ok record of the tiny suite (resnet18, seed 0)."""
    tmp = tmp_path_factory.mktemp("one")
    assert main(tiny_run(tmp, "--data-dir", str(real_data_dir()))) == 0
    return tmp


def copy_results(src, dst):
    import shutil

    shutil.copytree(src / "r", dst / "r")
    return next((dst / "r").rglob("seed0.json"))


# 3. a record that is JSON but not an object; 4. a damaged record
@pytest.mark.parametrize(
    "content, why",
    [
        ("[1, 2]", "not a record: a JSON list, not an object"),
        ('{"status": "ok", "metr', "not valid JSON"),
    ],
)
def test_a_damaged_record_is_named_by_the_leaderboard_not_a_crash(
    one_record, tmp_path, capsys, content, why
):
    record = copy_results(one_record, tmp_path)
    record.write_text(content)
    code, out = run(
        tiny_leaderboard(tmp_path),
        capsys,
    )
    assert code == 2 and str(record) in out.err and why in out.err
    assert not (tmp_path / "lb").exists()


def test_a_damaged_record_beside_good_ones_is_listed_under_its_table(one_record, tmp_path, capsys):
    good = copy_results(one_record, tmp_path)
    bad = good.with_name("seed1.json")
    bad.write_text("[]")
    code, _ = run(
        tiny_leaderboard(tmp_path),
        capsys,
    )
    md = (tmp_path / "lb" / "tiny.md").read_text()
    assert code == 0 and f"`{bad}` (not a record: a JSON list, not an object)" in md
    assert f"records in `{(tmp_path / 'r').as_posix()}/`" in md  # 9: the folder it read


def test_a_run_over_a_damaged_record_says_so_and_keeps_its_bytes(one_record, tmp_path, capsys):
    record = copy_results(one_record, tmp_path)
    record.write_text('{"status": "ok", "metr')
    args = tiny_run(tmp_path)
    code, out = run(args, capsys)
    assert code == 0
    assert (
        f"its record {record} is not valid JSON" in out.out
        and "the old file is kept as seed0.json.unreadable" in out.out
    )
    kept = record.with_name("seed0.json.unreadable")
    assert kept.read_text() == '{"status": "ok", "metr'
    new = json.loads(record.read_text())
    assert new["status"] == "ok" and new["replaces"]["kept_as"] == kept.name
    assert new["replaces"]["unreadable"].startswith("not valid JSON")
    # 9: the work folders of a complete unit do not stay behind, empty
    assert not [d for d in (tmp_path / "w").rglob("*") if d.is_dir() and not any(d.iterdir())]


# 5. non-whole labels; 9. float images
def write_npz(tmp_path, data_dir, change):
    with np.load(data_dir / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "breastmnist.npz", **arrays)
    return str(tmp_path / "d")


@pytest.mark.parametrize(
    "change, line",
    [
        (
            lambda a: a.update(
                val_labels=np.where(
                    np.arange(len(a["val_labels"]))[:, None] == 3, 0.7, a["val_labels"]
                ).astype(float)
            ),
            "val_labels: label 0.7 in row 3 is not a whole number; 1 such labels",
        ),
        (
            lambda a: a.update(test_images=a["test_images"].astype(np.float32) / 255),
            "test_images holds float32 values in 0-1 (scaled images?), where uint8 0-255 is expected",
        ),
        (
            lambda a: a.update(
                train_images=np.where(
                    np.arange(a["train_images"].size).reshape(a["train_images"].shape) == 5,
                    np.nan,
                    a["train_images"],
                ).astype(np.float32)
            ),
            "train_images holds float32 values with NaN or infinity",
        ),
    ],
)
def test_bad_labels_and_float_images_name_the_file_and_the_cause(
    tmp_path, capsys, data_dir, change, line
):
    d = write_npz(tmp_path, data_dir, change)
    args = [
        "run",
        "--suite",
        suite_file(tmp_path),
        "--preset",
        "p",
        "--data-dir",
        d,
        "--results-dir",
        str(tmp_path / "r"),
    ]
    code, out = run(args, capsys)
    assert code == 2 and line in out.err and "breastmnist.npz" in out.err
    assert not list((tmp_path / "r").rglob("*.json")) if (tmp_path / "r").exists() else True


def test_whole_float_labels_are_read_as_the_integers_they_are(tmp_path, data_dir):
    from bench.data.sources.medmnist import load_medmnist

    d = write_npz(
        tmp_path, data_dir, lambda a: a.update(train_labels=a["train_labels"].astype(float))
    )
    bundle = load_medmnist("breastmnist", 28, data_dir=d)
    with np.load(data_dir / "breastmnist.npz") as npz:
        assert np.array_equal(bundle.splits["train"].labels, npz["train_labels"].ravel())
    assert bundle.splits["train"].labels.dtype == np.int64


# 6. a planted file in the shared cache or a work folder runs no code
class Planted:
    """Unpickling calls `open(marker, "w")`: a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_in_the_cache_or_a_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    model = torch.nn.Linear(2, 2)
    logs = []
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(),
        tmp_path / "ck",
        logs.append,
        False,
        tmp_path / "cache",
        "data",
    )
    first = cached_pretraining("part", {"x": 1}, model, lambda: {"trained": 1}, ctx)
    torch.save({"state": Planted(marker), "summary": {}}, first["file"])
    calls = []
    again = cached_pretraining(
        "part", {"x": 1}, model, lambda: calls.append(1) or {"trained": 2}, ctx
    )
    assert not marker.exists() and calls == [1] and again["cache"] == "miss"
    assert any(
        "ignoring the cached part" in line and "cannot be loaded as weights" in line
        for line in logs
    )
    checkpoint = tmp_path / "stage.resume.pt"
    torch.save({"module": Planted(marker)}, checkpoint)
    assert load_checkpoint(checkpoint, model, 0, 0, {}, logs.append) is None
    assert not marker.exists() and "ignoring unreadable checkpoint" in logs[-1]


# 7. SIGTERM: like Ctrl-C, and its rerun says what it does
@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly_and_its_rerun_says_it_resumes(tmp_path, data_dir):
    suite = suite_file(tmp_path, budget="{epochs: 12, batch_size: 64}")  # signalled after epoch 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_DATA_DIR": str(data_dir)}
    cmd = BENCH + [
        "run",
        "--suite",
        suite,
        "--preset",
        "p",
        "--results-dir",
        str(tmp_path / "r"),
        "--work-dir",
        str(tmp_path / "w"),
        "--no-progress",
        "--checkpoint-every",
        "0",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not whole_checkpoints(tmp_path / "w") and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "bench: terminated (SIGTERM); complete units are kept and a rerun resumes" in err
    assert not list((tmp_path / "r").rglob("*.lock")) and not list(
        (tmp_path / "r").rglob("seed*.json")
    )
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0
    assert (
        "its previous run was stopped (terminated at" in rerun.stdout
        and "resuming from its checkpoint" in rerun.stdout
    )
    assert "resuming after epoch" in rerun.stdout + rerun.stderr


def linear_stage(tmp_path, on_step, epochs=4):
    """A 4-step-per-epoch training stage that checkpoints only when forced (every 3600 s),
    calling `on_step(step)` before each step."""
    from bench.api.method import Budget, RunContext
    from bench.train.batches import Schedule
    from bench.train.device import make_accelerator
    from bench.train.training import Optimisation, Validation, train_loop

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.arange(64) % 2
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0], 0, Budget(epochs=epochs, batch_size=16),
        tmp_path, lambda line: None, False, checkpoint_every_s=3600,
    )  # fmt: skip
    steps = iter(range(10**6))

    def step(idx):
        on_step(next(steps))
        return torch.nn.functional.cross_entropy(model(x[idx]), y[idx])

    return train_loop(
        model,
        step,
        ctx,
        Schedule(64, 16, 4 * epochs, epochs),
        Optimisation(opt),
        Validation(lambda: 0.5),
        desc="stage",
    )


def test_sigterm_in_training_checkpoints_the_epoch_within_the_grace_period(tmp_path, capsys):
    """SIGTERM in epoch 2: the epoch ends, a checkpoint is written (none was due for an
    hour), Terminated is raised, and the rerun continues after epoch 2."""
    from bench.train import interrupt

    interrupt.handle_sigterm()
    try:
        with pytest.raises(interrupt.Terminated):
            linear_stage(tmp_path, lambda s: s == 5 and os.kill(os.getpid(), signal.SIGTERM))
        assert "finishing this epoch to write a checkpoint" in capsys.readouterr().err
        assert torch.load(tmp_path / "stage.resume.pt", weights_only=True)["epoch"] == 2
        resumed = linear_stage(tmp_path, lambda s: None)
        assert resumed["resumed_after_epoch"] == 2 and resumed["steps"] == 16
        # past the grace period the run stops where it is, without a checkpoint
        monkey = pytest.MonkeyPatch()
        monkey.setattr(interrupt, "GRACE_S", 0.2)
        slow = tmp_path / "slow"
        with pytest.raises(interrupt.Terminated):
            linear_stage(
                slow, lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 1 else time.sleep(0.3)
            )
        monkey.undo()
        assert not (slow / "stage.resume.pt").exists()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# 8. a model near its floor is flagged, not ranked, and the reason is printed
def test_a_model_predicting_nearly_one_class_is_flagged_with_its_reason(tmp_path):
    from bench.tools.leaderboard import write_leaderboard

    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 110)
    right = rng.random(150) < 0.85  # resnet18: right on 85 % of the images
    write_binary_record(tmp_path, "resnet18", np.where(right, labels, 1 - labels), labels)
    once = (np.arange(150) > 0).astype(int)  # class 1 but once
    write_binary_record(tmp_path, "vit_tiny_patch16_224", once, labels)
    md = write_leaderboard(TINY_SUITE, tmp_path, tmp_path / "lb")[0].read_text()
    row = next(x for x in md.splitlines() if x.startswith("| vit_tiny_patch16_224 ⚠"))
    assert "⚠ at its floor (1/1 seeds)" in row and "**" not in row
    assert (
        "⚠ At its floor (not ranked): vit_tiny_patch16_224 seed 0: predicts one class for 99.3% of test "
        "images (over 95%)." in md
    )
    assert "resnet18 seed" not in md.split("At its floor")[1]


def test_near_floor_reads_a_balanced_accuracy_interval_that_reaches_chance():
    from bench.tasks.classification.floors import balanced_accuracy_interval

    low, high = balanced_accuracy_interval([0.9, 0.12], [100, 10])  # a rare class barely found
    assert low <= 0.5 < high
    assert balanced_accuracy_interval([0.8, 0.7], [400, 400])[0] > 0.5


# 9. a manifest path outside the root names its row
def test_a_manifest_path_outside_the_root_names_its_row(tmp_path):
    from bench.api.errors import DataError
    from bench.data.folder import load_folder

    root = tmp_path / "data"
    root.mkdir()
    (root / "labels.csv").write_text("path,label\n../../etc/passwd,1\nok.png,0\n")
    with pytest.raises(
        DataError, match=r"row 2: path '\.\./\.\./etc/passwd' points outside the data root"
    ):
        load_folder("mine", root, "labels.csv", task="binary", size=28, channels=1)


def test_every_config_default_fits_its_declared_type():
    """The type check (bench/api/options.py) reads each Config's annotations: a default
    that does not fit its own annotation would refuse the method's paper settings."""
    import dataclasses
    import typing

    from bench.api.options import fits
    from bench.api.registry import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name).cls.Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()
            assert fits(default, hints[f.name]), (name, f.name, hints[f.name], default)
    assert (
        not fits(True, int) and fits(3, float) and not fits("3", float) and fits(None, int | None)
    )
