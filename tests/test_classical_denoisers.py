"""The classical restoration floors (baselines/classical_denoisers.py) on real data, and
restoration leaderboards that list floors as rows, never rank them, and flag a learned
method's cell that does not beat the best floor."""

import json

import numpy as np
import pytest
from conftest import FAKE_DATA, FAKE_PROVENANCE

from bench.api.registry import METHODS
from bench.data.load import load_bundle
from bench.engine.records import unit_stem, write_record
from bench.metrics.image_quality import per_image_quality
from bench.tasks.restoration.scoring import FLOOR_METHODS

pytestmark = pytest.mark.usefixtures("one_thread")

BREAST_G10 = {
    "name": "breast_g10",
    "loader": "paired",
    "images": ["medmnist:breastmnist"],
    "degradation": {"kind": "gaussian", "sigma": 0.1},
    "patch": 16,
    "train_stride": 12,
    "max_patches_per_image": 4,
}


def _psnr(outputs, targets) -> float:
    return float(per_image_quality(outputs, targets)["psnr"].mean())


def _restore(name, bundle, inputs):
    out = METHODS.get(name).cls(METHODS.get(name).make_config(), bundle.spec).restore(inputs, None)
    assert out.shape == inputs.shape and out.dtype == np.float32 and np.isfinite(out).all()
    if (
        name != "identity"
    ):  # the identity floor is the raw input (its noise is not clipped); the others end in [0, 1]
        assert out.min() >= 0.0 and out.max() <= 1.0
    return out


def test_every_floor_is_a_registered_training_free_restoration_method_that_says_it_is_a_floor():
    for name in FLOOR_METHODS:
        spec = METHODS.get(name)
        assert spec.cls.task == "restoration" and "floor" in spec.description.lower(), name
        assert spec.cls(spec.make_config(), None).fit(None, None, None)["selection_metric"] is None


def test_nlm_beats_the_noisy_input_and_clipping_never_hurts_on_real_ultrasound(data_dir):
    """BreastMNIST test patches (16 px, one per image) with Gaussian noise sigma 0.1."""
    bundle = load_bundle(BREAST_G10, data_dir=str(data_dir))
    test = bundle.splits["test"]
    assert test.inputs.shape[1:] == (16, 16, 1) and len(test) >= 50
    noisy = _psnr(test.inputs, test.targets)
    identity = _psnr(_restore("identity", bundle, test.inputs), test.targets)
    clipped = _psnr(_restore("clip_input", bundle, test.inputs), test.targets)
    nlm = _psnr(_restore("nlm", bundle, test.inputs), test.targets)
    print(
        f"breastmnist sigma 0.1, {len(test)} test patches: noisy {noisy:.2f} / identity {identity:.2f} / "
        f"clip {clipped:.2f} / NLM {nlm:.2f} dB"
    )
    assert noisy == pytest.approx(20.0, abs=0.3) and identity == pytest.approx(noisy)
    assert (
        clipped >= identity and clipped > noisy
    )  # unclipped Gaussian noise: clipping removes some error
    assert nlm > noisy + 3.0, (noisy, nlm)
    # NLM's sizes follow the patch side: small patches, small windows; a configured size wins
    nlm_method = METHODS.get("nlm").cls(METHODS.get("nlm").make_config(), bundle.spec)
    assert nlm_method.sizes(16) == (5, 6) and nlm_method.sizes(32) == (7, 11)
    assert METHODS.get("nlm").cls(
        METHODS.get("nlm").make_config({"patch_size": 3}), bundle.spec
    ).sizes(16) == (3, 6)


def test_floors_take_colour_patches_and_return_a_flat_patch_unchanged():
    bundle = load_bundle(
        {
            "name": "pkg_rgb",
            "loader": "paired",
            "images": ["skimage"],
            "degradation": {"kind": "gaussian", "sigma": 0.1},
            "patch": 32,
            "channels": 3,
            "max_patches_per_image": 2,
        }
    )
    test = bundle.splits["test"]
    assert test.inputs.shape[-1] == 3
    assert (
        _psnr(_restore("nlm", bundle, test.inputs), test.targets)
        > _psnr(test.inputs, test.targets) + 3.0
    )
    flat = np.full(
        (1, 16, 16, 1), 0.4, dtype=np.float32
    )  # no noise to estimate: sigma 0, nothing to remove
    assert np.array_equal(_restore("nlm", bundle, flat), flat)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        _restore("nlm", bundle, flat[0])


# ----------------------------------------------------------------------- leaderboards

#: method -> (psnr, ssim, rmse, nmae) means; three seeds jitter around them
SCORES = {
    "identity": (20.00, 0.450, 0.1000, 0.0800),
    "clip_input": (20.20, 0.460, 0.0980, 0.0780),
    "nlm": (25.40, 0.820, 0.0540, 0.0400),
    "diffusion_restorer": (27.00, 0.860, 0.0450, 0.0340),  # the reference: beats every floor
    "dncnn": (26.00, 0.800, 0.0500, 0.0380),  # SSIM below NLM's, all else above: flagged there only
    "pix2pix": (23.00, 0.700, 0.0700, 0.0500),  # below the best floor everywhere
}


def _write_restoration_records(results, methods=tuple(SCORES)):
    for method in methods:
        psnr, ssim, rmse, nmae = SCORES[method]
        for seed in range(3):
            j = 0 if method in FLOOR_METHODS else (seed - 1) * 0.01  # the floors are deterministic
            record = {
                "status": "ok",
                "suite": "rest",
                "preset": "smoke",
                "dataset": "breast_g10",
                "method": method,
                "seed": seed,
                "config_hash": "abc",
                "task": "restoration",
                "metrics": {
                    "test": {
                        "psnr": psnr + 10 * j,
                        "ssim": ssim + j / 10,
                        "rmse": rmse - j / 100,
                        "nmae": nmae - j / 100,
                    }
                },
                "evaluation": {
                    "data_range": 1.0,
                    "degradation": {"kind": "gaussian", "sigma": 0.1},
                },
                "data": dict(FAKE_DATA),
                "provenance": dict(FAKE_PROVENANCE),
            }
            write_record(unit_stem(results, "rest", "breast_g10", method, "abc", seed), record)


def _rows(block: str) -> dict[str, list[str]]:
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in block.splitlines()
        if line.startswith("| ") and "---" not in line
    }


def _restoration_suite(tmp_path):
    suite = tmp_path / "rest.yaml"
    suite.write_text(
        json.dumps(
            {
                "description": "restoration floors",
                "task": "restoration",
                "seeds": [0, 1, 2],
                "reference": "diffusion_restorer",
                "datasets": [BREAST_G10],
                "methods": list(SCORES),
                "presets": {
                    "smoke": {
                        "budget": {
                            "epochs": 1,
                            "batch_size": 32,
                            "eval_batch_size": 256,
                            "max_steps": 5,
                        }
                    }
                },
            }
        )
    )
    return suite


def test_restoration_leaderboard_lists_floors_as_rows_and_flags_what_does_not_beat_the_best(
    tmp_path,
):
    from bench.tools.leaderboard import write_leaderboard

    suite = _restoration_suite(tmp_path)
    _write_restoration_records(tmp_path / "results")
    md = write_leaderboard(str(suite), results_dir=tmp_path / "results", out_dir=tmp_path / "lb")[
        0
    ].read_text()
    main, survey = md.split("## Survey Table 12 layout", 1)
    rows = _rows(main)
    header = rows.pop("method")
    psnr, ssim, rmse, nmae = (header.index(k) for k in ("psnr", "ssim", "rmse", "nmae"))
    # the floors: rows of their own at the table's end, weakest first, never emphasised
    assert [k for k in rows if "(floor)" in k] == [f"_{f} (floor)_" for f in FLOOR_METHODS]
    assert list(rows)[-len(FLOOR_METHODS) :] == [
        f"_{f} (floor)_" for f in FLOOR_METHODS
    ] and not any(k in rows for k in FLOOR_METHODS)
    assert (
        rows["_nlm (floor)_"][psnr] == "_25.400_"
        and rows["_clip_input (floor)_"][ssim] == "_0.460_"
    )
    assert not any("**" in c or "<u>" in c for k, r in rows.items() if "(floor)" in k for c in r)
    # the reference beats every floor: bold; DnCNN is second on PSNR but not better than NLM's SSIM
    assert rows["diffusion_restorer (ref)"][psnr].startswith("**27.000 ± 0.100**")
    assert rows["dncnn"][psnr].startswith("<u>26.000 ± 0.100</u>")
    assert rows["dncnn"][ssim].startswith("0.800 ± 0.001 ⚠")
    assert "⚠" not in rows["dncnn"][rmse] and "⚠" not in rows["dncnn"][nmae]
    # pix2pix does not beat the best floor anywhere (though it beats identity): every cell flagged, none emphasised
    assert all(
        "⚠" in rows["pix2pix"][k] and not rows["pix2pix"][k].startswith(("**", "<u>"))
        for k in (psnr, ssim, rmse, nmae)
    )
    # with DnCNN and pix2pix flagged on SSIM, the reference stands alone there: nothing to rank it against
    assert not rows["diffusion_restorer (ref)"][ssim].startswith("**")
    assert "⚠ marks 5 cell(s) of other methods that do not beat the best floor's" in md
    assert "`identity`, `clip_input`, `nlm`" in md
    # the survey layouts: the same floors and flags; the NMAE layout names no survey table it is not
    t12, nmae_layout = survey.split("## NMAE, PSNR, SSIM", 1)
    r12 = _rows(t12)
    cols = r12.pop("method")
    p = cols.index("breast_g10 (smoke) PSNR")
    assert r12["diffusion_restorer (ref)"][p] == "**27.00**" and r12["dncnn"][p] == "26.00"
    assert r12["pix2pix"][p] == "23.00 ⚠" and r12["_nlm (floor)_"][p] == "_25.40_"
    assert list(r12)[-len(FLOOR_METHODS) :] == [f"_{f} (floor)_" for f in FLOOR_METHODS]
    rn = _rows(nmae_layout)
    n = rn.pop("method").index("breast_g10 (smoke) NMAE")
    assert (
        rn["pix2pix"][n] == "0.050 ⚠"
        and rn["diffusion_restorer (ref)"][n] == "**0.034**"
        and rn["_nlm (floor)_"][n] == "_0.040_"
    )
    assert "Table 9 layout" not in md and "not for denoising (Table 12" in md


def test_a_dataset_with_only_its_floors_run_gets_a_table_of_floors(tmp_path):
    """The floors take seconds, the learned methods half an hour: a leaderboard made in
    between shows the floors and nothing ranked (it used to fail on the empty ranking)."""
    from bench.tools.leaderboard import write_leaderboard

    _write_restoration_records(tmp_path / "results", FLOOR_METHODS)
    md = write_leaderboard(
        str(_restoration_suite(tmp_path)), results_dir=tmp_path / "results", out_dir=tmp_path / "lb"
    )[0].read_text()
    rows = _rows(md.split("## Survey Table 12 layout", 1)[0])
    psnr = rows.pop("method").index("psnr")
    assert list(rows) == [f"_{f} (floor)_" for f in FLOOR_METHODS]
    assert rows["_nlm (floor)_"][psnr] == "_25.400_" and "⚠ marks 0 cell(s)" in md
