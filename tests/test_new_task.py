"""Adding a task is one folder's worth of code: a Method base class and a registered Task.
Defined here (a toy "brightness" task: predict each image's mean intensity), it runs
through the unchanged runner, records and leaderboard, and its output check applies."""

import gc
import json

import numpy as np
import pytest

from bench.api.errors import TrainingError
from bench.api.method import Method, RunContext, Scored, method_tasks, register_method
from bench.api.registry import METHODS, TASKS
from bench.api.task import ScoringRun, Task, register_task


@pytest.fixture
def brightness_task():
    class BrightnessMethod(Method):
        task = "brightness"

    @register_task
    class BrightnessTask(Task):
        """Each image's mean intensity in [0, 1], scored by RMSE."""

        name = "brightness"

        def score(self, method, bundle, ctx: RunContext, run: ScoringRun) -> Scored:
            metrics = {}
            for s in ("val", "test"):
                split = bundle.splits[s]
                out = self.check_outputs(self.infer(method, split, ctx), split, bundle.spec, "m")
                truth = split.images.mean(axis=(1, 2, 3)) / 255
                metrics[s] = {"rmse": float(np.sqrt(((out - truth) ** 2).mean()))}
            return Scored({"metrics": metrics}, {}, len(bundle.splits["test"]), 0.01)

        def infer(self, method, split, ctx):
            return method.brightness(split.images)

        def check_outputs(self, outputs, split, spec, method_name):
            outputs = np.asarray(outputs, dtype=np.float64)
            if outputs.shape != (len(split),) or not np.isfinite(outputs).all():
                raise TrainingError(f"{method_name}.brightness returned {outputs.shape}")
            return outputs

    from dataclasses import dataclass

    @dataclass
    class MeanPixelConfig:
        scale: float = 1.0

    @register_method("mean_pixel")
    class MeanPixel(BrightnessMethod):
        """The exact answer, times `scale`."""

        Config = MeanPixelConfig

        def fit(self, train, val, ctx):
            return {}

        def brightness(self, images):
            return self.config.scale * images.mean(axis=(1, 2, 3)) / 255

    yield BrightnessTask
    TASKS._entries.pop("brightness")
    METHODS._entries.pop("mean_pixel")
    del BrightnessMethod, MeanPixel
    gc.collect()
    # checked here, after the tests that registered it (a test of its own could run on another
    # xdist worker, where the toy task never existed, and pass whatever the teardown did)
    assert "brightness" not in TASKS.names() and "brightness" not in method_tasks()


def test_a_new_task_runs_through_the_runner_and_the_leaderboard(
    brightness_task, data_dir, tmp_path
):
    from bench.engine.runner import run_suite
    from bench.tools.leaderboard import write_leaderboard

    assert "brightness" in method_tasks()
    suite = tmp_path / "bright.yaml"
    suite.write_text(
        json.dumps(
            {
                "task": "brightness",
                "datasets": ["breastmnist"],
                "methods": ["mean_pixel", {"name": "mean_pixel", "options": {"scale": 1.5}}],
                "reference": "mean_pixel",
                "presets": {"smoke": {"published": False, "budget": {"epochs": 1}}},
            }
        )
    )
    outcomes = run_suite(
        str(suite), data_dir=str(data_dir), results_dir=tmp_path / "r", work_dir=tmp_path / "w",
        progress=False, cpu=True,
    )  # fmt: skip
    assert [o.status for o in outcomes] == ["ok", "ok"], outcomes
    rmse = sorted(o.test["rmse"] for o in outcomes)
    assert rmse[0] == pytest.approx(0, abs=1e-9) and rmse[1] > 0.05
    md = write_leaderboard(str(suite), results_dir=tmp_path / "r", out_dir=tmp_path / "lb")[0]
    text = md.read_text()
    assert "| method | seeds | rmse |" in text and "**0.000**" in text


def test_a_new_tasks_output_check_names_the_method(brightness_task):
    task = TASKS.get("brightness")
    split = type("S", (), {"__len__": lambda self: 3})()
    with pytest.raises(TrainingError, match="m.brightness returned"):
        task.check_outputs(np.zeros(2), split, None, "m")
