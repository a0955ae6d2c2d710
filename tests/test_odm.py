"""ODM and the conditional DM: the ordinal loss, its t/T weight, classifier-free
guidance, ordered triples, and a short real training + sampling run."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.api.errors import BenchError
from bench.api.registry import METHODS
from methods.odm import (
    ODMConfig,
    guided_eps,
    odm_loss,
    ordered_triples,
    ordinal_loss,
    training_noise,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class StubUNet(torch.nn.Module):
    """eps = x * (1 + c) + c^2: the class moves the prediction along a curve (not a line)."""

    def forward(self, x, t, class_labels):
        c = class_labels.float()[:, None, None, None]
        return SimpleNamespace(sample=x * (1 + c) + c**2)


def test_ordinal_loss_is_zero_for_collinear_ordered_noises_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    p, r = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    alpha = torch.rand(6, generator=g)[:, None, None, None]
    between = alpha * p + (1 - alpha) * r
    assert ordinal_loss(p, between, r).max() < 1e-6
    beyond = 1.5 * r - 0.5 * p  # on the line, but q outside the segment: order broken
    off = between + torch.randn(6, 3, 8, 8, generator=g)
    assert (ordinal_loss(p, beyond, r) > 1).all() and (ordinal_loss(p, off, r) > 1).all()
    # eq. (6) read literally (squared distances): zero at a right angle at q, not on the line
    q = torch.zeros(1, 2)
    assert ordinal_loss(
        torch.tensor([[1.0, 0]]), q, torch.tensor([[0, 1.0]]), "squared"
    ).item() == pytest.approx(0)
    assert ordinal_loss(
        torch.tensor([[-1.0, 0]]), q, torch.tensor([[1.0, 0]]), "squared"
    ).item() == pytest.approx(4)


def test_ordinal_term_is_weighted_by_t_over_T():
    cfg = ODMConfig(ordinal_weight=1.0, timesteps=1000)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    triples = torch.tensor(
        [[0, 2, 3]] * 3
    )  # eps_2 is off the segment from eps_0 to eps_3: loss > 0
    t = torch.tensor([0, 500, 1000])
    out = odm_loss(
        StubUNet(), x, t, torch.zeros(3, dtype=torch.long), torch.zeros_like(x), triples, cfg
    )
    raw = ordinal_loss(*(StubUNet()(x, t, torch.full((3,), c)).sample for c in (0, 2, 3)))
    torch.testing.assert_close(out["ordinal"], raw * torch.tensor([0.0, 0.5, 1.0]))
    assert out["ordinal"][0] == 0 and out["ordinal"][2] > 0
    torch.testing.assert_close(out["loss"], out["dm"] + out["ordinal"].mean())
    dm = odm_loss(
        StubUNet(),
        x,
        t,
        torch.zeros(3, dtype=torch.long),
        torch.zeros_like(x),
        triples,
        ODMConfig(ordinal_weight=0.0),
    )
    torch.testing.assert_close(dm["loss"], out["dm"])


def tiny_unet(dropout=0.3):
    from methods.odm import build_unet

    cfg = ODMConfig(
        image_size=8,
        block_out_channels=(8, 8),
        layers_per_block=1,
        attention_resolution=0,
        norm_num_groups=4,
        dropout=dropout,
    )
    torch.manual_seed(0)
    return build_unet(cfg, 1, 5), cfg


def test_the_ordinal_predictions_are_float32_without_dropout_under_autocast_and_keep_gradients():
    from methods.odm import ordinal_predictions

    unet, _ = tiny_unet()
    unet.train()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([999, 800, 10, 500])
    triples = torch.tensor([[0, 2, 4]] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eps = ordinal_predictions(unet, x, t, triples)
        again = ordinal_predictions(unet, x, t, triples)
        stacked = unet(x, t, class_labels=torch.zeros(4, dtype=torch.long)).sample
    assert unet.training  # its mode is given back
    assert stacked.dtype == torch.bfloat16 and all(e.dtype == torch.float32 for e in eps)
    unet.eval()
    with torch.no_grad():
        plain = unet(x.repeat(3, 1, 1, 1), t.repeat(3), class_labels=triples.T.reshape(-1)).sample
    torch.testing.assert_close(torch.cat(eps).detach(), plain, rtol=0, atol=0)  # fp32, no dropout
    torch.testing.assert_close(torch.cat(again), torch.cat(eps), rtol=0, atol=0)
    assert eps[0].requires_grad


def test_with_identical_class_embeddings_the_ordinal_loss_is_exactly_zero_in_training_mode():
    unet, cfg = tiny_unet()
    with torch.no_grad():
        unet.class_embedding.weight[:] = unet.class_embedding.weight[0]
    unet.train()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([999, 800, 400])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = odm_loss(
            unet,
            x,
            t,
            torch.tensor([1, 2, 3]),
            torch.randn_like(x),
            torch.tensor([[0, 2, 4]] * 3),
            cfg,
        )
    assert (out["ordinal"] == 0).all() and out["loss"] == out["dm"]
    # the earlier stacked pass (independent dropout masks, bf16) measured noise there
    stacked = dataclasses.replace(cfg, ordinal_pass="stacked")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        old = odm_loss(
            unet,
            x,
            t,
            torch.tensor([1, 2, 3]),
            torch.randn_like(x),
            torch.tensor([[0, 2, 4]] * 3),
            stacked,
        )
    assert (old["ordinal"][:2] > 0).all()


def test_the_dm_hash_does_not_depend_on_how_an_ordinal_term_it_lacks_is_computed():
    from bench.api.method import config_identity

    dm = METHODS.get("dm")
    assert config_identity(dm.make_config({"ordinal_pass": "stacked"})) == config_identity(
        dm.make_config({})
    )
    odm = METHODS.get("odm")
    assert config_identity(odm.make_config({"ordinal_pass": "stacked"})) != config_identity(
        odm.make_config({})
    )


def test_guidance_scale_zero_and_one_give_the_unconditional_and_conditional_predictions():
    unet, x, t = StubUNet(), torch.randn(2, 1, 4, 4), torch.tensor([5, 7])
    y, null = torch.tensor([1, 2]), 5
    cond = unet(x, t, y).sample
    uncond = unet(x, t, torch.full_like(y, null)).sample
    torch.testing.assert_close(guided_eps(unet, x, t, y, null, 1.0), cond)
    torch.testing.assert_close(guided_eps(unet, x, t, y, null, 0.0), uncond)
    torch.testing.assert_close(guided_eps(unet, x, t, y, null, 2.0), uncond + 2 * (cond - uncond))


def test_ordered_triples_are_increasing_and_cover_all_classes():
    tr = ordered_triples(2000, 5, torch.Generator().manual_seed(0))
    assert ((tr[:, 0] < tr[:, 1]) & (tr[:, 1] < tr[:, 2])).all() and tr.min() == 0 and tr.max() == 4
    assert len({tuple(row) for row in tr.tolist()}) == 10  # all C(5, 3) triples occur
    with pytest.raises(BenchError, match="at least 3 ordered classes"):
        ordered_triples(4, 2, torch.Generator())


def test_offset_noise_moves_each_images_mean_and_offset_zero_draws_the_old_noise():
    shape = (4000, 3, 16, 16)
    plain = training_noise(shape, 0.0, torch.Generator().manual_seed(5))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(5)))
    offset = training_noise(shape, 0.2, torch.Generator().manual_seed(5))
    shift = offset - plain
    assert torch.allclose(shift, shift[..., :1, :1].expand(shape), atol=1e-6)  # a constant
    # the spread of an image-channel's mean: 1/16 for Gaussian noise, sqrt(1/16^2 + 0.2^2)
    assert plain.mean(dim=(2, 3)).std().item() == pytest.approx(1 / 16, rel=0.05)
    assert offset.mean(dim=(2, 3)).std().item() == pytest.approx((1 / 256 + 0.04) ** 0.5, rel=0.05)


def test_a_config_field_added_later_is_left_out_of_the_hash_at_its_default(tmp_path):
    from bench.api.method import config_hash
    from bench.engine.config import load_suite
    from bench.engine.planning import make_unit

    preset = load_suite("generation").preset("standard")
    options = {**preset.method_options["dm"], "offset_noise": 0.0}

    def unit(**change):
        spec = METHODS.get("dm")
        return make_unit(
            spec,
            "dm",
            {**options, **change},
            "retinamnist",
            0,
            preset,
            "bf16",
            tmp_path,
            "generation",
        )

    plain = unit()
    assert plain.config["offset_noise"] == 0.0  # recorded, but not part of the identity:
    # (ordinal_pass, inert in the DM, is left out as well)
    before = {k: v for k, v in plain.config.items() if k not in ("offset_noise", "ordinal_pass")}
    assert plain.config_hash == config_hash("dm", before, preset.budget, "bf16")
    assert unit(offset_noise=0.1).config_hash != plain.config_hash


def test_odm_trains_and_samples_on_real_retinamnist(data_dir, tmp_path):
    from bench.api.dataset import SplitData
    from bench.api.method import Budget, RunContext
    from bench.data.load import dataset_source
    from bench.train.device import make_accelerator

    bundle = dataset_source("retinamnist").load(data_dir=str(data_dir))
    tr, va = bundle.splits["train"], bundle.splits["val"]
    train = SplitData(tr.images[:128], tr.labels[:128], tr.ids[:128])
    val = SplitData(va.images[:32], va.labels[:32], va.ids[:32])
    spec = METHODS.get("odm")
    cfg = spec.make_config(
        {
            "image_size": 16,
            "block_out_channels": [16, 32],
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_resolution": 8,
            "sampling_steps": 5,
            "lr": 1e-3,
        }
    )
    m = spec.cls(cfg, bundle.spec)
    ctx = RunContext(
        make_accelerator("fp32", cpu=True)[0],
        0,
        Budget(epochs=6, batch_size=32, eval_batch_size=64),
        tmp_path,
        progress=False,
    )
    torch.manual_seed(0)  # the U-Net's initial weights, as the runner seeds every unit
    summary = m.fit(train, val, ctx)
    losses = [h["val_noise_mse"] for h in summary["history"]]
    assert losses[-1] < 0.8 * losses[0]
    images = m.sample(np.array([0, 1, 2, 3, 4, 4]), ctx)
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28, 3)
    again = m.sample(np.array([0, 1, 2, 3, 4, 4]), ctx)
    assert np.array_equal(images, again)  # seeded
    assert summary["ordinal_loss"] == "on"
    floor = summary["noise_floor"]  # the per-pixel linear denoiser on the same probe
    assert 0 < floor["linear_denoiser"] < 1 and floor["unit"] == "per pixel"
    assert floor["beaten"] == (summary["best_val_value"] < floor["linear_denoiser"])
    assert METHODS.get("dm").make_config().ordinal_weight == 0

    # ema_decay: the same optimisation (identical training losses), but validation and
    # sampling use the weight average, so its scores and samples differ
    averaged = spec.cls(spec.make_config({**vars(cfg), "ema_decay": 0.9}), bundle.spec)
    ema_ctx = dataclasses.replace(ctx, checkpoint_dir=tmp_path / "ema")
    torch.manual_seed(0)
    ema_summary = averaged.fit(train, val, ema_ctx)
    assert [h["loss"] for h in ema_summary["history"]] == [h["loss"] for h in summary["history"]]
    assert [h["val_noise_mse"] for h in ema_summary["history"]] != losses
    assert not np.array_equal(averaged.sample(np.array([0, 1, 2, 3, 4, 4]), ema_ctx), images)

    # guidance is a sampling choice: a unit that differs only in it reuses the trained
    # weights (a guidance sweep trains once), and samples differently
    assert summary["cache"] == "miss"
    guided = spec.cls(spec.make_config({**vars(cfg), "guidance_scale": 1.0}), bundle.spec)
    torch.manual_seed(1)  # another start, which the cached weights override
    hit = guided.fit(train, val, ctx)
    assert hit["cache"] == "hit" and hit["history"] == summary["history"]
    assert all(torch.equal(a, b) for a, b in zip(guided.unet.parameters(), m.unet.parameters()))
    assert not np.array_equal(guided.sample(np.array([0, 1, 2, 3, 4, 4]), ctx), images)
