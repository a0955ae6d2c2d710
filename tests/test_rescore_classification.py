"""`bench rescore --suite classification`: committed records calibrated from their .npz
(a temperature fitted on validation NLL), the metrics as trained untouched, the rescoring
recorded, skipped when done, refused for what it cannot serve."""

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import REPO

from bench.cli import main
from bench.engine.records import load_records
from bench.metrics.calibration import fit_temperature, logits_of

SRC = REPO / "results" / "classification" / "breastmnist" / "diffmic_v2" / "538fb77514"


@pytest.fixture
def results(tmp_path):
    dest = tmp_path / "results" / "classification" / "breastmnist" / "diffmic_v2" / SRC.name
    dest.mkdir(parents=True)
    for seed in (0, 1):  # as before calibration (the committed ones may be calibrated)
        shutil.copy(SRC / f"seed{seed}.npz", dest / f"seed{seed}.npz")
        record = strip(json.loads((SRC / f"seed{seed}.json").read_text()))
        (dest / f"seed{seed}.json").write_text(json.dumps(record))
    return tmp_path / "results", dest


def strip(record):
    """A record without what calibration adds (as it was before being rescored)."""
    out = {
        k: v for k, v in record.items() if k not in ("calibration", "prior_calibration", "rescored")
    }
    out["metrics"] = {
        s: {k: v for k, v in m.items() if k != "ece_scaled"} for s, m in record["metrics"].items()
    }
    out["priors"] = {
        n: {s: {k: v for k, v in m.items() if k != "ece_scaled"} for s, m in p.items()}
        for n, p in record["priors"].items()
    }
    return out


def test_records_are_calibrated_from_their_predictions(results, capsys):
    root, dest = results
    before = strip(json.loads((dest / "seed0.json").read_text()))
    assert main(["rescore", "--suite", "classification", "--results-dir", str(root)]) == 0
    after = json.loads((dest / "seed0.json").read_text())
    assert strip(after) == before  # the metrics as trained are untouched
    cal = after["calibration"]
    with np.load(dest / "seed0.npz") as npz:
        want, _ = fit_temperature(
            logits_of(npz["val_probs"], "binary"), npz["val_labels"], "binary"
        )
    assert cal["temperature"] == pytest.approx(want) and cal["fitted_on"] == "val"
    # DiffMIC-v2's fixed readout temperature 0.1 is over-confident: scaling repairs its ECE
    assert cal["ece"]["test"][0] > 0.15 and after["metrics"]["test"]["ece_scaled"] < 0.12
    assert cal["test_scaled"]["auroc"] == pytest.approx(after["metrics"]["test"]["auroc"], abs=1e-4)
    assert set(after["prior_calibration"]) == {"DCG global", "DCG local", "DCG fused"}
    assert all("ece_scaled" in p["test"] for p in after["priors"].values())
    (entry,) = after["rescored"]
    assert (
        entry["added"].startswith("calibration")
        and entry["by_git_commit"]
        and entry["command"] == " ".join(sys.argv)  # how the rescoring was asked for
    )
    # done once: a second run skips both; --force does them again
    assert main(["rescore", "--suite", "classification", "--results-dir", str(root)]) == 0
    assert "0 of 2 records rescored" in capsys.readouterr().out
    assert (
        main(["rescore", "--suite", "classification", "--results-dir", str(root), "--force"]) == 0
    )
    assert len(json.loads((dest / "seed0.json").read_text())["rescored"]) == 2


def test_a_record_whose_predictions_are_gone_is_skipped_and_named(results, capsys):
    root, dest = results
    (dest / "seed1.npz").unlink()
    assert main(["rescore", "--suite", "classification", "--results-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "seed1.json: skipped: its predictions do not serve" in out and "1 of 2" in out
    assert "calibration" not in json.loads((dest / "seed1.json").read_text())
    assert len(load_records(root, "classification")) == 2


def test_nothing_to_rescore_and_a_generation_suite_without_preset_are_clear_errors(
    tmp_path, capsys
):
    assert main(["rescore", "--suite", "classification", "--results-dir", str(tmp_path)]) == 2
    assert "no ok records of suite 'classification'" in capsys.readouterr().err
    assert main(["rescore", "--suite", "generation", "--results-dir", str(tmp_path)]) == 2
    assert "needs --preset" in capsys.readouterr().err
