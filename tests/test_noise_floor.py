"""The floor of a diffusion model's own training (issue 34): the per-pixel linear
denoiser's validation noise loss, and the leaderboard's flag for a stage that does not
beat it."""

import numpy as np
import pytest
import torch

from bench.api.record import Record, Selection
from bench.nn.diffusion import ddpm_scheduler
from bench.nn.noise_floor import linear_denoiser_mse, pixel_moments
from bench.report.notes import untrained_note, untrained_seeds
from bench.train.batches import to_device_batch

ALPHAS = ddpm_scheduler(1000, 1e-4, 0.02).alphas_cumprod


def probe(n, seed=0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1000, (n,), generator=g), torch.randn((n, *shape), generator=g)


def test_identical_images_are_denoised_exactly():
    images = np.full((20, 8, 8, 1), 77, np.uint8)
    t, noise = probe(10)
    assert linear_denoiser_mse(images, images[:10], t, noise, ALPHAS, None) == pytest.approx(
        0, abs=1e-20
    )


def test_the_shrinkage_is_the_best_per_pixel_affine_estimate():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 8, 8, 1)).astype(np.uint8)  # uniform pixels: var ~ 1/3
    t, noise = probe(400, seed=1)
    floor = linear_denoiser_mse(images, images, t, noise, ALPHAS, None)
    # the same estimate scaled up or down, or no estimate at all, does worse
    mean, var = pixel_moments(images, None)
    x0 = to_device_batch(images, "cpu").double()
    ab = ALPHAS.double()[t].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise.double()
    best = (1 - ab).sqrt() * (x_t - ab.sqrt() * mean) / (ab * var + 1 - ab)
    for scale in (0.9, 1.1):
        assert ((scale * best - noise.double()) ** 2).mean().item() > floor
    assert floor < (noise.double() ** 2).mean().item()
    assert floor == pytest.approx(((best - noise.double()) ** 2).mean().item())
    # in expectation: sum over t of ab s2 / (ab s2 + 1 - ab), here with s2 = var of uniform
    s2 = var.mean().item()
    expected = (ALPHAS.double()[t] * s2 / (ALPHAS.double()[t] * s2 + 1 - ALPHAS.double()[t])).mean()
    assert floor == pytest.approx(expected.item(), rel=0.05)


def record(method, seed, beaten=None):
    """A record of `method`, its stage-1 noise floor `beaten` or not (None: it has none)."""
    floor = {"linear_denoiser": 66.7, "best_val": 40.0 if beaten else 700.0, "beaten": beaten}
    selection = Selection(other={"stage1": {"noise_floor": floor}} if beaten is not None else {})
    return Record(
        suite="s", preset="p", dataset="d", method=method, seed=seed, config_hash="h",
        status="ok", selection=selection,
    )  # fmt: skip


def test_a_stage_that_does_not_beat_the_floor_is_flagged_in_the_tables():
    note = untrained_note(
        [record("dcube", 0, False), record("dcube", 1, True), record("resnet18", 0)]
    )
    assert (
        len(note) == 2 and "Untrained diffusion stage" in note[1] and "dcube 1/2 seeds" in note[1]
    )
    assert untrained_note([record("dcube", 0, True)]) == []


def test_two_configs_of_a_method_are_flagged_row_by_row():
    # a method rerun under a new config sits in its table as two rows, 'dcube [hash]':
    # each row's mark and note count its own seeds (they were pooled under 'dcube')
    old, new = record("dcube", 0, False), record("dcube", 1, True)
    new.config_hash = "h2"
    assert untrained_seeds([old, new, record("dcube", 2, True)]) == {"dcube [h]": (1, 2)}
    note = untrained_note([old, new])[1]
    assert "dcube [h] 1/1 seeds" in note and "h2" not in note


def test_the_row_of_a_method_whose_stage_did_not_beat_its_floor_carries_the_mark(tmp_path):
    from conftest import TINY_SUITE, write_binary_record

    from bench.tools.leaderboard import write_leaderboard

    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 110)
    for method, beaten in (("resnet18", None), ("vit_tiny_patch16_224", False)):
        pred = np.where(rng.random(150) < 0.85, labels, 1 - labels)
        selection = record(method, 0, beaten).selection.to_dict()
        write_binary_record(tmp_path, method, pred, labels, selection)
    md = write_leaderboard(TINY_SUITE, tmp_path, tmp_path / "lb")[0].read_text()
    rows = {x.split(" |")[0]: x for x in md.splitlines() if x.startswith("| ")}
    assert "| vit_tiny_patch16_224 ⚠ untrained diffusion stage (1/1 seeds)" in rows
    assert not any("untrained" in name for name in rows if name.startswith("| resnet18"))
    assert "vit_tiny_patch16_224 1/1 seeds." in md
