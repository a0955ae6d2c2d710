"""`bench status`: each planned unit complete, running (a live process holds its lock),
failed (its record says why) or pending, read without taking any lock."""

import json

from bench.cli import main
from bench.engine.records import unit_lock
from bench.tools.status import suite_status


def test_status_tells_complete_running_failed_and_pending_units(tmp_path, data_dir, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "task: classification\ndatasets: [breastmnist]\n"
        "methods: [{name: resnet18, options: {input_size: 32}}]\nseeds: [0, 1, 2, 3]\n"
        "presets: {p: {budget: {epochs: 1, batch_size: 32, max_steps: 2}}}\n"
    )
    common = ["--suite", str(suite), "--preset", "p", "--results-dir", str(tmp_path / "r")]
    assert (
        main(["run", *common, "--seeds", "0", "--no-progress", "--work-dir", str(tmp_path / "w")])
        == 0
    )
    rows = {r["seed"]: r for r in suite_status(str(suite), "p", results_dir=tmp_path / "r")}
    stem = lambda seed: tmp_path / "r" / rows[seed]["record"].split("/r/")[1].removesuffix(".json")  # noqa: E731
    failed = stem(1).with_suffix(".json")
    record = json.loads(stem(0).with_suffix(".json").read_text())
    failed.write_text(
        json.dumps(
            {
                **record,
                "seed": 1,
                "status": "failed",
                "error": {"type": "TrainingError", "message": "loss became nan", "traceback": ""},
            }
        )
    )
    capsys.readouterr()
    with unit_lock(stem(2)) as locked:
        assert locked
        assert main(["status", *common]) == 0
        out = capsys.readouterr().out
    assert "4 units: 1 complete, 1 running, 1 failed, 1 pending" in out
    assert "running  breastmnist/resnet18/seed2 (lock seed2.lock held)" in out
    assert "failed   breastmnist/resnet18/seed1 (TrainingError: loss became nan)" in out
    assert "pending  breastmnist/resnet18/seed3" in out and "seed0" not in out
    # the check took no lock: the unit's lock is released and removed as usual
    assert not stem(2).with_suffix(".lock").exists()
    assert {r["state"] for r in suite_status(str(suite), "p", results_dir=tmp_path / "r")} == {
        "complete", "failed", "pending"
    }  # fmt: skip
