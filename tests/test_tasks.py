"""The task interface: every registered task makes its random data, and its output check
accepts what a method must return and refuses, naming the method, what it must not."""

import numpy as np
import pytest

from bench.api.errors import TrainingError
from bench.api.method import method_tasks
from bench.api.record import Record
from bench.api.registry import TASKS


def data(task: str, n: int = 6):
    rng = np.random.default_rng(0)
    return TASKS.get(task).random_data(8, 1, 3, n, rng, "random (test)")


def test_every_method_task_is_a_registered_task_and_back():
    assert (
        set(TASKS.names()) == set(method_tasks()) == {"classification", "generation", "restoration"}
    )


def test_classification_outputs_are_probability_rows():
    task = TASKS.get("classification")
    spec, split = data("classification")
    good = np.full((6, 3), 1 / 3, dtype=np.float32)
    assert task.check_outputs(good, split, spec, "m").dtype == np.float64
    bad = {
        "shape": good[:, :2],
        "non-finite": np.where(np.eye(6, 3) > 0, np.nan, good),
        r"in \[0, 1\]": np.tile(np.float32([1.5, -0.25, -0.25]), (6, 1)),  # rows sum to 1
        "do not sum to one": good * 0.9,
    }
    for what, probs in bad.items():
        with pytest.raises(TrainingError, match=f"sparkle.predict.*{what}|{what}"):
            task.check_outputs(probs, split, spec, "sparkle")


def test_generation_outputs_are_uint8_images_at_the_data_size():
    task = TASKS.get("generation")
    spec, split = data("generation")
    good = np.zeros((6, 8, 8, 1), np.uint8)
    assert task.check_outputs(good, split, spec, "g").shape == (6, 8, 8, 1)
    for bad in (good.astype(np.float32), good[:, :4], good[:5]):
        with pytest.raises(TrainingError, match="g.sample returned"):
            task.check_outputs(bad, split, spec, "g")


def test_restoration_outputs_match_the_targets_and_are_finite():
    task = TASKS.get("restoration")
    spec, split = data("restoration")
    assert task.check_outputs(split.targets.copy(), split, spec, "r").shape == split.targets.shape
    nan = split.targets.copy()
    nan[0, 0, 0, 0] = np.nan
    for bad, what in ((split.targets[:, :4], "returned"), (nan, "non-finite")):
        with pytest.raises(TrainingError, match=f"r.restore .*{what}|r.restore {what}"):
            task.check_outputs(bad, split, spec, "r")


def test_a_paper_cell_says_in_the_tasks_words_why_its_seeds_are_no_result():
    from bench.report.aggregate import our_cells

    def record(seed, share, task="binary", test=None):
        return Record.from_dict(
            {"suite": "s", "dataset": "d", "method": "m", "preset": "standard", "config_hash": "h",
             "seed": seed, "status": "ok", "task": task, "predicted_share": {"test": share},
             "metrics": {"test": test or {"auroc": 0.8}}}
        )  # fmt: skip

    shares = ([1.0, 0.0], [0.4, 0.6], [0.0, 1.0])
    records = [record(seed, share) for seed, share in enumerate(shares)]
    cell = our_cells(records, "d", "m", "auroc", "standard", TASKS.get("classification"))
    assert cell.flag == "2 of 3 seeds predict one class or are near their floor"
    collapsed = {"fid": 9.0, "diversity": 0.1}
    gen = [record(seed, share, "multiclass", collapsed) for seed, share in enumerate(shares)]
    cell = our_cells(gen, "d", "m", "fid", "standard", TASKS.get("generation"))
    assert cell.flag == "3 of 3 seeds' samples collapsed or copy training images"
