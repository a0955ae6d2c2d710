"""bench plots: ROC, confusion matrices, training curves and the reverse-process t-SNE,
drawn from records and their .npz alone."""

import json

import numpy as np
import pytest
from conftest import TINY_SUITE

from bench.api.errors import BenchError
from bench.tools.plots import write_plots


def fixture_record(root, method, seed, probs, labels, history=None, trajectory=None):
    stem = root / "tiny" / "breastmnist" / method / "h" / f"seed{seed}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"test_probs": probs, "test_labels": labels}
    if trajectory is not None:
        arrays["test_trajectory"] = trajectory
    np.savez(stem.with_suffix(".npz"), **arrays)
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "schema_version": "1.0",
                "status": "ok",
                "suite": "tiny",
                "preset": "smoke",
                "dataset": "breastmnist",
                "method": method,
                "seed": seed,
                "config_hash": "h",
                "class_names": ["malignant", "benign"],
                "predictions": stem.with_suffix(".npz").name,
                "metrics": {"test": {"auroc": 0.8}},
                "selection": {"selection_metric": "auroc", "history": history or []},
            }
        )
    )


def test_plots_are_drawn_from_records_and_the_tsne_only_where_a_trajectory_was_kept(tmp_path):
    g = np.random.default_rng(0)
    labels = g.integers(0, 2, 60)
    good = np.clip(np.eye(2)[labels] * 0.7 + g.random((60, 2)) * 0.3, 0, 1)
    good /= good.sum(1, keepdims=True)
    traj = (labels[:, None, None] * 2.0 + g.normal(0, 0.3, (60, 10, 18))).astype(np.float16)
    fixture_record(
        tmp_path,
        "diffmic_v2",
        0,
        good,
        labels,
        [{"epoch": 1, "val_auroc": 0.6}, {"epoch": 2, "val_auroc": 0.7}],
        traj,
    )
    fixture_record(
        tmp_path, "diffmic_v2", 1, good, labels
    )  # seed 1 is not drawn: seed 0 is the lowest
    fixture_record(tmp_path, "resnet18", 0, np.full((60, 2), 0.5), labels)
    paths = {
        p.name for p in write_plots(TINY_SUITE, results_dir=tmp_path, out_dir=tmp_path / "plots")
    }
    assert paths == {
        "smoke-breastmnist-roc.png",
        "smoke-breastmnist-confusion.png",
        "smoke-breastmnist-curves.png",
        "smoke-breastmnist-diffmic_v2-tsne.png",
    }
    assert all((tmp_path / "plots" / "tiny" / p).stat().st_size > 5000 for p in paths)
    with pytest.raises(BenchError, match="generation suite"):
        write_plots("generation", results_dir=tmp_path)
